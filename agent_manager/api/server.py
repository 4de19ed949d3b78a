"""Running the app under uvicorn, with a graceful stop that also ends long-polls.

On SIGTERM (or Ctrl-C) the server stops accepting connections, ends every long-poll at
once (they answer ``204``), lets other requests in flight finish for up to
``AM_SHUTDOWN_GRACE`` seconds, runs the app's shutdown (the embedded agents hand their
steps back) and exits with status 0. A second Ctrl-C skips the wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import signal
import socket
import threading
from collections.abc import Iterator
from typing import Any

import uvicorn

from agent_manager.api.app import bootstrap_admin_token, create_app, prepare_database
from agent_manager.config import Settings
from agent_manager.db.engine import Database
from agent_manager.errors import AgentManagerError

log = logging.getLogger("agent_manager.server")

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class _Server(uvicorn.Server):
    """Uvicorn waits for open requests before it shuts down; a claim long-polling for
    a minute would hold that up, so on the signal we wake every waiter first (they
    answer 204) and the process stops promptly."""

    def __init__(self, config: uvicorn.Config, app: Any) -> None:
        super().__init__(config)
        self.app = app

    def handle_exit(self, sig: int, frame: Any) -> None:
        first = not self.should_exit
        super().handle_exit(sig, frame)
        if first:
            # Signal handlers run between bytecodes, inside whatever task was running
            # (and its log context): hand the work to the loop, in a context of its own.
            asyncio.get_running_loop().call_soon_threadsafe(
                self._begin_shutdown, sig, context=contextvars.Context()
            )

    def _begin_shutdown(self, sig: int) -> None:
        log.info(
            "%s: stopping; long-polls end now, requests in flight get up to %gs",
            signal.Signals(sig).name,
            self.config.timeout_graceful_shutdown or 0,
        )
        manager = getattr(self.app.state, "manager", None)
        if manager is not None:
            manager.begin_shutdown()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """Like uvicorn's, but a stop we asked for by signal is a clean exit (status 0):
        uvicorn re-raises the signal once it has shut down, which makes it -15."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        original = {sig: signal.signal(sig, self.handle_exit) for sig in _STOP_SIGNALS}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


def _check_port(host: str, port: int) -> None:
    """Fail now, with one line, if the address is taken (uvicorn would fail only after
    the app has started, the embedded agents included)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise AgentManagerError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc}; "
                "choose another with --port / AM_PORT (or --host / AM_HOST)"
            ) from None


async def _preflight(settings: Settings) -> None:
    """Check the address and the database before uvicorn starts, so a problem is one
    clear line."""
    _check_port(settings.host, settings.port)
    db = Database.from_url(settings.database_url)
    try:
        await prepare_database(db, settings)
        await bootstrap_admin_token(db, settings)
    finally:
        await db.dispose()


def uvicorn_config(app: Any, settings: Settings) -> uvicorn.Config:
    """Uvicorn settings for ``app``: logging left to :func:`agent_manager.logs.configure_logging`
    (its access and server lines go through the same handler and format)."""
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        log_level=settings.log_level,
        # Annotated int, but only ever handed to asyncio.wait_for: a fraction works.
        timeout_graceful_shutdown=settings.shutdown_grace,  # type: ignore[arg-type]
    )


def run(settings: Settings) -> None:
    asyncio.run(_preflight(settings))
    app = create_app(settings)
    _Server(uvicorn_config(app, settings), app).run()
