"""The application factory: ``create_app(settings)``.

The engine, the AgentManager and the lease reaper are built in the lifespan, so a
test can make as many apps as it likes, each on its own database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy.exc import IntegrityError

from agent_manager import __version__
from agent_manager.api import errors
from agent_manager.api.limits import BodySizeLimit
from agent_manager.api.routes import health, tasks, web, work
from agent_manager.config import Settings
from agent_manager.core import auth
from agent_manager.core.bus import RedisBus
from agent_manager.core.manager import AgentManager
from agent_manager.db import migrate
from agent_manager.db.engine import Database
from agent_manager.embedded import EmbeddedRunner
from agent_manager.errors import AgentManagerError
from agent_manager.llm import build_llm_client
from agent_manager.metrics import InstrumentedLLM, Metrics, MetricsMiddleware
from agent_manager.retry import RetryPolicy

log = logging.getLogger("agent_manager")


async def prepare_database(db: Database, settings: Settings) -> None:
    """Migrate SQLite (or any database when AM_AUTO_MIGRATE is on); else check the revision."""
    if settings.auto_migrate if settings.auto_migrate is not None else db.dialect == "sqlite":
        await migrate.upgrade(db.engine)
        return
    current = await migrate.current_revision(db.engine)
    if current != migrate.head_revision():
        raise AgentManagerError(
            f"the database schema is at {current or 'nothing'}, this server needs "
            f"{migrate.head_revision()}: run 'am db upgrade' (or set AM_AUTO_MIGRATE=true)"
        )


async def bootstrap_admin_token(db: Database, settings: Settings) -> None:
    """Make sure someone can log in: take AM_ADMIN_TOKEN, or print a new one once."""
    try:
        await _bootstrap_admin_token(db, settings)
    except IntegrityError:
        # Another replica starting at the same moment registered the same token first.
        await _bootstrap_admin_token(db, settings)


async def _bootstrap_admin_token(db: Database, settings: Settings) -> None:
    async with db.transaction() as session:
        if settings.admin_token is not None:
            secret = settings.admin_token.get_secret_value()
            tokens = auth.TokenVerifier(ttl=0)
            try:
                await tokens.verify(db.sessions, secret)
            except AgentManagerError:
                await auth.create_token(
                    session, name="admin (AM_ADMIN_TOKEN)", scopes=["admin"], secret=secret
                )
            return
        if await auth.count_active_admin_tokens(session) == 0:
            _, secret = await auth.create_token(session, name="admin (bootstrap)", scopes=["admin"])
            print(
                "\nAgentManager: no admin token existed, so one was created.\n"
                f"  {secret}\n"
                "It is shown only this once. Create narrower tokens with "
                "'am token create --scope …'.\n",
                file=sys.stderr,
                flush=True,
            )


async def _reap_forever(manager: AgentManager, interval: float, metrics: Metrics) -> None:
    while not manager.closing:
        try:
            while (expired := await manager.reap_expired_leases()) > 0:
                metrics.lease_expiries.inc(expired)
            await manager.finish_stalled_phases()
        except Exception:  # the database may be down; try again next tick
            log.warning("lease reaper failed; retrying", exc_info=True)
        await asyncio.sleep(interval)


async def stop_gently(task: asyncio.Task[None], timeout: float) -> None:
    """Wait for a background loop that was asked to stop; cancel it if it will not."""
    done, _ = await asyncio.wait({task}, timeout=timeout)
    if not done:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def build_runner(
    manager: AgentManager, settings: Settings, metrics: Metrics | None = None
) -> EmbeddedRunner | None:
    """The server's own agents, as the settings ask (None when they are all off)."""
    work_roles = settings.roles_list(settings.embedded_work_roles)
    if not settings.embedded_agents and not work_roles:
        return None
    provider = settings.resolved_llm_provider()
    llm = build_llm_client(
        provider=provider,
        base_url=settings.llm_base_url,
        model=settings.llm_model or ("gpt-4o-mini" if provider == "openai" else None),
        api_key=settings.llm_api_key.get_secret_value() if settings.llm_api_key else None,
        timeout=settings.llm_timeout,
        structured_mode=settings.llm_structured_mode,
        scenario_path=str(settings.llm_scenario) if settings.llm_scenario else None,
        scripted_latency=settings.llm_scripted_latency,
    )
    if provider == "scripted":
        log.warning(
            "embedded agents use the scripted model: NOT an LLM, a deterministic demo and "
            "test backend. Set AM_LLM_MODEL (and AM_LLM_BASE_URL / AM_LLM_API_KEY) for a "
            "real one."
        )
    return EmbeddedRunner(
        manager,
        InstrumentedLLM(llm, metrics) if metrics is not None else llm,
        metrics=metrics,
        work_roles=work_roles,
        planner_roles=settings.roles_list(settings.planner_roles),
        serve_system_roles=settings.embedded_agents,
        concurrency=settings.embedded_concurrency,
        workspace=settings.workspace,
        max_iterations=settings.agent_max_iterations,
        lock_wait=settings.agent_lock_wait,
    )


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = Database.from_url(settings.database_url, pool_size=settings.db_pool_size)
        await prepare_database(db, settings)
        await bootstrap_admin_token(db, settings)
        bus = (
            RedisBus(
                settings.redis_url,
                channel=settings.redis_channel,
                recheck=settings.recheck_seconds,
            )
            if settings.redis_url
            else None
        )
        manager = AgentManager(
            db,
            bus=bus,
            recheck_interval=settings.recheck_seconds,
            lease_seconds=settings.lease_seconds,
            retry_policy=RetryPolicy(
                base=settings.retry_base_seconds, maximum=settings.retry_max_seconds
            ),
            workspace=settings.workspace,
        )
        app.state.manager = manager
        app.state.bus = bus
        if bus is not None:
            bus.start(manager.on_remote_notice)
        app.state.tokens = auth.TokenVerifier()
        reaper = asyncio.create_task(
            _reap_forever(manager, settings.reaper_interval, app.state.metrics)
        )
        runner = build_runner(manager, settings, app.state.metrics)
        if runner is not None:
            runner.start()
        app.state.runner = runner
        try:
            yield
        finally:
            # Loops end by themselves first; cancelling one in the middle of a database
            # call would leave the call running past the engine's disposal.
            manager.begin_shutdown()
            if runner is not None:
                await runner.stop()
                await runner.llm.aclose()
            await stop_gently(reaper, settings.reaper_interval + 5)
            if bus is not None:
                await bus.stop()
            await db.dispose()

    app = FastAPI(
        title="AgentManager",
        version=__version__,
        description="Coordination server for multi-agent LLM work.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = Metrics()  # a registry per app: tests make many apps in one process
    errors.install(app)
    app.include_router(health.router)
    app.include_router(work.router)  # before tasks: /v1/tasks/ready is not a task id
    app.include_router(tasks.router)
    app.include_router(web.router)  # the dashboard at /
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_request_bytes)
    # Added last, so outermost: it times every response, a 413 from the limit included.
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    return app
