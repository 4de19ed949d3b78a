"""Liveness, readiness and metrics: the endpoints orchestrators and scrapers call."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import select

from agent_manager.api.deps import ManagerDep, SettingsDep
from agent_manager.db.tables import TaskGraphORM
from agent_manager.errors import Unauthorized
from agent_manager.metrics import Metrics, wait_uncancelled

router = APIRouter(tags=["health"])

#: How long each readiness check may take before it counts as failed.
READY_TIMEOUT = 5.0


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={
        200: {"description": "ready", "content": {"application/json": {}}},
        503: {"description": "not ready; the body names what failed", "content": {}},
    },
)
async def readyz(request: Request, manager: ManagerDep) -> JSONResponse:
    """The process can serve: the database answers (503 if not). Redis, when one is
    configured, is checked and reported; without it the replica is 'degraded', not down."""

    async def database() -> str:
        # A table of ours, not just "SELECT 1": a SQLite file that went away, or a
        # database without the schema, must not pass.
        async with manager.db.sessions() as session:
            await session.execute(select(TaskGraphORM.id).limit(1))
        return manager.db.dialect

    checks: dict[str, Callable[[], Coroutine[Any, Any, str]]] = {"database": database}
    bus = getattr(request.app.state, "bus", None)
    if bus is not None:

        async def redis() -> str:
            await bus.ping()
            return "ok"

        checks["redis"] = redis
    outcomes = await asyncio.gather(*(_check(check) for check in checks.values()))
    body: dict[str, Any] = dict(zip(checks, (answer for _, answer in outcomes), strict=True))
    failing = [name for name, (ok, _) in zip(checks, outcomes, strict=True) if not ok]
    # Redis only makes replicas hear each other sooner: without it this replica is
    # slower to hand over work, not wrong, so it stays in the load balancer's rotation.
    degraded = [name for name in failing if name == "redis"]
    failed = [name for name in failing if name != "redis"]
    if manager.closing:  # let load balancers drain this replica while it stops
        failed.append("server")
        body["server"] = "shutting down"
    if failed:
        return JSONResponse({"status": "unavailable", "failed": failed, **body}, status_code=503)
    if degraded:
        return JSONResponse({"status": "degraded", "degraded": degraded, **body})
    return JSONResponse({"status": "ok", **body})


async def _check(check: Callable[[], Coroutine[Any, Any, str]]) -> tuple[bool, str]:
    try:
        return True, await wait_uncancelled(check(), READY_TIMEOUT)
    except TimeoutError as exc:
        return False, str(exc)
    except Exception as exc:  # any failure means "not ready", with the reason
        return False, f"{type(exc).__name__}: {exc}"[:300]


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"description": "Prometheus text format", "content": {"text/plain": {}}}},
)
async def metrics(request: Request, manager: ManagerDep, settings: SettingsDep) -> Response:
    """Prometheus metrics; open unless AM_METRICS_TOKEN is set."""
    if settings.metrics_token is not None:
        expected = f"Bearer {settings.metrics_token.get_secret_value()}"
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise Unauthorized("/metrics needs 'Authorization: Bearer <AM_METRICS_TOKEN>'")
    registry: Metrics = request.app.state.metrics
    await registry.collect_database(manager.db)
    payload, content_type = registry.render(request.headers.get("accept"))
    return Response(payload, headers={"Content-Type": content_type})
