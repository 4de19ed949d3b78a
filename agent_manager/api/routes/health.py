"""Liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from agent_manager.api.deps import ManagerDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(manager: ManagerDep) -> JSONResponse:
    """The process can serve: the database answers."""
    try:
        async with manager.db.sessions() as session:
            await session.execute(text("SELECT 1"))
    except Exception as exc:  # any failure means "not ready", with the reason
        return JSONResponse(
            {"status": "unavailable", "database": f"{type(exc).__name__}: {exc}"[:300]},
            status_code=503,
        )
    return JSONResponse({"status": "ok", "database": manager.db.dialect})
