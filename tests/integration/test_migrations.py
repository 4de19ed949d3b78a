"""Alembic: an empty database upgrades to head, and the migrations match the models."""

from __future__ import annotations

import asyncio
import warnings

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import Connection

from agent_manager.db import migrate
from agent_manager.db.engine import Database
from agent_manager.db.tables import Base


async def test_empty_database_upgrades_to_head_and_matches_the_models(db_url: str) -> None:
    db = Database.from_url(db_url)
    try:
        assert await migrate.current_revision(db.engine) is None
        await migrate.upgrade(db.engine)
        assert await migrate.current_revision(db.engine) == migrate.head_revision()
        await migrate.upgrade(db.engine)  # a second run is a no-op

        def diff(connection: Connection) -> list[object]:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            with warnings.catch_warnings():
                # Alembic cannot compare expression-based index options on SQLite;
                # it says so with a warning, and the index itself is still compared.
                warnings.simplefilter("ignore")
                changes = list(compare_metadata(context, Base.metadata))
            if connection.dialect.name == "sqlite":
                # SQLite reflects the claim index's "priority DESC" expression without
                # its direction, so Alembic sees a difference that is not there; its
                # presence is checked by name below.
                changes = [
                    c
                    for c in changes
                    if not (isinstance(c, tuple) and c[1].name == "ix_steps_claimable")
                ]
            return changes

        def tables(connection: Connection) -> set[str]:
            return set(inspect(connection).get_table_names())

        def step_indexes(connection: Connection) -> set[str]:
            return {ix["name"] for ix in inspect(connection).get_indexes("steps")}

        async with db.engine.connect() as connection:
            assert await connection.run_sync(diff) == []
            assert {
                "tasks",
                "steps",
                "results",
                "file_access",
                "agents",
                "api_tokens",
                "events",
            } <= await connection.run_sync(tables)
    finally:
        await db.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_replicas_migrating_at_once_take_turns(db_url: str) -> None:
    """Several servers with AM_AUTO_MIGRATE start together on an empty database."""
    replicas = [Database.from_url(db_url) for _ in range(3)]
    try:
        await asyncio.gather(*(migrate.upgrade(r.engine) for r in replicas))
        assert await migrate.current_revision(replicas[0].engine) == migrate.head_revision()
    finally:
        for replica in replicas:
            await replica.dispose()
