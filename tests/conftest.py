"""Shared fixtures: databases on both backends, a migrated AgentManager, a live server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from agent_manager.core.manager import AgentManager
from agent_manager.db import migrate
from agent_manager.db.engine import Database
from agent_manager.retry import RetryPolicy
from tests.databases import database_url
from tests.server import LiveServer, running_server

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def db_url(backend: str, tmp_path: Path) -> AsyncIterator[str]:
    async with database_url(backend, tmp_path) as url:
        yield url


@pytest.fixture
async def db(db_url: str) -> AsyncIterator[Database]:
    database = Database.from_url(db_url)
    await migrate.upgrade(database.engine)
    yield database
    await database.dispose()


@pytest.fixture
def manager(db: Database) -> AgentManager:
    return AgentManager(db, lease_seconds=30, retry_policy=RetryPolicy(base=0.0, jitter=0.0))


@pytest.fixture
async def server(db_url: str, tmp_path: Path) -> AsyncIterator[LiveServer]:
    async with running_server(db_url, tmp_path) as live:
        yield live
