"""Replicas starting together on an empty database all come up with AM_ADMIN_TOKEN."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from agent_manager.api.app import bootstrap_admin_token
from agent_manager.config import Settings
from agent_manager.db.engine import Database
from agent_manager.db.tables import ApiTokenORM

pytestmark = pytest.mark.postgres


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_replicas_registering_the_same_admin_token_at_once(db: Database) -> None:
    settings = Settings(_env_file=None, admin_token="am_shared_admin_token_0123456789")  # type: ignore[call-arg]
    replicas = [Database.from_url(db.engine.url.render_as_string(False)) for _ in range(4)]
    try:
        await asyncio.gather(*(bootstrap_admin_token(r, settings) for r in replicas))
    finally:
        for replica in replicas:
            await replica.dispose()
    async with db.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(ApiTokenORM)) == 1
