"""One registry from AgentManager's exceptions (and foreign ones) to HTTP answers.

Every error body is ``{"code": …, "message": …, "details": {…}}``.
"""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from agent_manager import errors
from agent_manager.core.transient import is_transient, is_unavailable

log = logging.getLogger(__name__)

STATUS: dict[type[errors.AgentManagerError], int] = {
    errors.NotFound: 404,
    errors.InvalidRequest: 422,
    errors.Conflict: 409,
    errors.Unauthorized: 401,
    errors.Forbidden: 403,
    errors.Unavailable: 503,
}

HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


def error_response(
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(
        {"code": code, "message": message, "details": details or {}},
        status_code=status,
        headers=headers,
    )


def _status_of(exc: errors.AgentManagerError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]  # type: ignore[index]
    return 500


async def _on_core_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.AgentManagerError)
    status = _status_of(exc)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return error_response(status, exc.code, exc.message, exc.details, headers)


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


async def _on_validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = []
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            ctx = err.get("ctx", {})
            return error_response(
                400,
                "malformed_json",
                f"the request body is not valid JSON: {ctx.get('error', 'parse error')} "
                f"at position {err['loc'][-1] if err.get('loc') else '?'}",
            )
        problems.append({"field": _field(tuple(err["loc"])), "problem": err["msg"]})
    message = "; ".join(f"{p['field']}: {p['problem']}" for p in problems)
    return error_response(422, "validation_error", message, {"errors": problems})


async def _on_http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = HTTP_CODES.get(exc.status_code, "http_error")
    headers = dict(exc.headers) if exc.headers else None
    return error_response(exc.status_code, code, str(exc.detail), headers=headers)


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, kind):
            return True
        seen = getattr(seen, "orig", None) or seen.__cause__
    return False


async def _on_database_down(_: Request, exc: Exception) -> JSONResponse:
    if is_transient(exc):  # a deadlock victim, already retried: the client may retry
        return error_response(
            503,
            "unavailable",
            "the database aborted this request in a conflict with another; retry it",
            headers={"Retry-After": "1"},
        )
    # Only connection-level failures are "unavailable"; other database errors are bugs.
    if is_unavailable(exc) or _caused_by(exc, asyncpg.InternalClientError):
        pass  # e.g. PostgreSQL shutting down, or a connection broken mid-operation
    elif isinstance(exc, asyncpg.PostgresError) or (
        isinstance(exc, DBAPIError)
        and not exc.connection_invalidated
        and not isinstance(exc, (OperationalError, InterfaceError))
    ):
        log.exception("database error")
        return error_response(500, "internal_error", "internal error; see the server log")
    log.warning("database unavailable: %s", exc)
    return error_response(
        503,
        "unavailable",
        "the database is unavailable; retry shortly",
        headers={"Retry-After": "1"},
    )


async def _on_os_error(request: Request, exc: Exception) -> JSONResponse:
    return await _on_database_down(request, exc)


def install(app: FastAPI) -> None:
    app.add_exception_handler(errors.AgentManagerError, _on_core_error)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(DBAPIError, _on_database_down)
    app.add_exception_handler(ConnectionError, _on_os_error)
    app.add_exception_handler(asyncpg.PostgresError, _on_database_down)
