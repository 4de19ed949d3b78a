"""A real uvicorn server on 127.0.0.1 inside the test's event loop, spoken to over TCP."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from agent_manager.api.app import create_app
from agent_manager.config import Settings

ADMIN_TOKEN = "am_test_admin_token_0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LiveServer:
    base_url: str
    app: Any
    settings: Settings

    @property
    def manager(self) -> Any:
        return self.app.state.manager

    def client(self, token: str | None = ADMIN_TOKEN, **kwargs: Any) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        kwargs.setdefault("timeout", 30)
        return httpx.AsyncClient(base_url=self.base_url, headers=headers, **kwargs)

    async def token(self, *scopes: str, roles: list[str] | None = None) -> str:
        """A new token with ``scopes`` (and ``roles``), made through the core."""
        from agent_manager.core import auth

        async with self.manager.db.transaction() as session:
            _, secret = await auth.create_token(
                session, name="-".join(scopes), scopes=list(scopes), roles=roles
            )
        return secret


@asynccontextmanager
async def running_server(
    db_url: str, tmp_path: Path, **overrides: Any
) -> AsyncIterator[LiveServer]:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        database_url=db_url,
        admin_token=ADMIN_TOKEN,
        workspace=tmp_path / "workspace",
        auto_migrate=True,
        retry_base_seconds=0.0,
        reaper_interval=0.2,
        **overrides,
    )
    app = create_app(settings)
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("server stopped during start-up")
        await asyncio.sleep(0.01)
    try:
        yield LiveServer(base_url=f"http://127.0.0.1:{port}", app=app, settings=settings)
    finally:
        server.should_exit = True
        await task
