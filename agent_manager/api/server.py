"""Running the app under uvicorn, with a shutdown that also ends long-polls."""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn

from agent_manager.api.app import bootstrap_admin_token, create_app, prepare_database
from agent_manager.config import Settings
from agent_manager.db.engine import Database


class _Server(uvicorn.Server):
    """Uvicorn waits for open requests before it shuts down; a claim long-polling for
    a minute would hold that up, so on the signal we wake every waiter first (they
    answer 204) and the process stops promptly."""

    def __init__(self, config: uvicorn.Config, app: Any) -> None:
        super().__init__(config)
        self.app = app

    def handle_exit(self, sig: int, frame: Any) -> None:
        manager = getattr(self.app.state, "manager", None)
        if manager is not None:
            # Signal handlers run between bytecodes; hand the work to the loop.
            asyncio.get_running_loop().call_soon_threadsafe(manager.begin_shutdown)
        super().handle_exit(sig, frame)


async def _preflight(settings: Settings) -> None:
    """Check the database before uvicorn starts, so a problem is one clear line."""
    db = Database.from_url(settings.database_url)
    try:
        await prepare_database(db, settings)
        await bootstrap_admin_token(db, settings)
    finally:
        await db.dispose()


def run(settings: Settings) -> None:
    asyncio.run(_preflight(settings))
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=30,
    )
    _Server(config, app).run()
