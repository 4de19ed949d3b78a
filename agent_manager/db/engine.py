"""Engines and sessions for SQLite (aiosqlite, WAL) and PostgreSQL (asyncpg)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)


def make_engine(url: str, *, pool_size: int = 10, echo: bool = False) -> AsyncEngine:
    """An async engine tuned for its backend.

    SQLite allows one writer at a time, across every process that opens the file. Each
    transaction therefore starts with ``BEGIN IMMEDIATE``: it takes the write lock up
    front, so two transactions can never both read a row as free and then both write
    it (a claim is atomic across processes), and no transaction ever fails half-way on
    a lock upgrade. Inside one process a single pooled connection queues the
    transactions in asyncio instead of in SQLite's sleeping busy handler.
    """
    if url.startswith("sqlite"):
        engine = create_async_engine(
            url,
            echo=echo,
            pool_size=1,
            max_overflow=0,
            pool_timeout=120,
            connect_args={"timeout": 30},
        )
        _tune_sqlite(engine)
        return engine
    # No pool_pre_ping: it costs a round trip per transaction. After a database
    # restart a stale pooled connection fails once (the request gets a 503) and is
    # replaced.
    return create_async_engine(
        url,
        echo=echo,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_recycle=1800,
    )


def _tune_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        for pragma in (
            "journal_mode=WAL",
            "synchronous=NORMAL",
            "foreign_keys=ON",
            "busy_timeout=30000",
        ):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


class Database:
    """The engine and the session factory of one app instance."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.sessions = async_sessionmaker(engine, expire_on_commit=False)
        #: Called after a commit with the tasks it wrote events for (see core/events.py).
        self.on_events_committed: Callable[[Iterable[str]], None] | None = None

    @classmethod
    def from_url(cls, url: str, *, pool_size: int = 10) -> Database:
        return cls(make_engine(url, pool_size=pool_size))

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session inside one transaction: committed on success, rolled back on error."""
        async with self.sessions() as session:
            async with session.begin():
                yield session
            tasks = session.info.get("event_tasks")
            if tasks and self.on_events_committed is not None:
                self.on_events_committed(tasks)

    async def dispose(self) -> None:
        await self.engine.dispose()
