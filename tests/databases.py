"""Throw-away databases for tests: a SQLite file, or a fresh PostgreSQL database.

PostgreSQL is found through AM_TEST_POSTGRES_URL (default: the local server, user
root or postgres). Without a reachable server the PostgreSQL variants skip with the
reason, unless AM_TEST_REQUIRE_POSTGRES=1 (set by CI), where they fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import pytest

ADMIN_DSNS = [
    os.environ.get("AM_TEST_POSTGRES_URL", ""),
    "postgresql://root@127.0.0.1:5432/test",
    "postgresql://postgres@127.0.0.1:5432/postgres",
]

_reachable: str | bool | None = False  # False: not probed yet


async def _probe() -> str | None:
    global _reachable
    if _reachable is not False:
        return _reachable  # type: ignore[return-value]
    _reachable = None
    for dsn in filter(None, ADMIN_DSNS):
        try:
            conn = await asyncpg.connect(dsn, timeout=3)
        except (TimeoutError, OSError, asyncpg.PostgresError):
            continue
        await conn.close()
        _reachable = dsn
        break
    return _reachable  # type: ignore[return-value]


def postgres_required() -> bool:
    return os.environ.get("AM_TEST_REQUIRE_POSTGRES") == "1"


async def admin_dsn() -> str:
    dsn = await _probe()
    if dsn is None:
        message = "no PostgreSQL reachable (set AM_TEST_POSTGRES_URL)"
        if postgres_required():
            pytest.fail(message + " and AM_TEST_REQUIRE_POSTGRES=1")
        pytest.skip(message)
    return dsn


@asynccontextmanager
async def postgres_database() -> AsyncIterator[str]:
    """A new, empty PostgreSQL database; yields its SQLAlchemy URL, drops it after."""
    dsn = await admin_dsn()
    name = f"am_test_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    base = dsn.rsplit("/", 1)[0]
    try:
        yield f"{base.replace('postgresql://', 'postgresql+asyncpg://')}/{name}"
    finally:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


@asynccontextmanager
async def database_url(kind: str, tmp_path: Path) -> AsyncIterator[str]:
    if kind == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'am.db'}"
    else:
        async with postgres_database() as url:
            yield url
