"""Dependencies shared by the routes, as ``Annotated`` aliases."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from agent_manager.config import Settings
from agent_manager.core.auth import Principal, Scope
from agent_manager.core.manager import AgentManager
from agent_manager.errors import Unauthorized

_bearer = HTTPBearer(auto_error=False, description="an AgentManager API token")


# Dependencies are ``async def`` even when they do not await: FastAPI runs plain
# ``def`` dependencies in a thread pool, a thread hop on every request.


async def get_manager(request: Request) -> AgentManager:
    return request.app.state.manager  # type: ignore[no-any-return]


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


async def get_session(request: Request) -> Any:
    async with request.app.state.manager.db.sessions() as session:
        yield session


async def get_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None:
        if request.headers.get("authorization"):
            raise Unauthorized("the Authorization header must be 'Bearer <token>'")
        raise Unauthorized()
    manager: AgentManager = request.app.state.manager
    return await request.app.state.tokens.verify(manager.db.sessions, credentials.credentials)


def require(scope: Scope) -> Callable[..., Coroutine[Any, Any, Principal]]:
    async def dependency(principal: Annotated[Principal, Depends(get_principal)]) -> Principal:
        principal.require(scope)
        return principal

    return dependency


ManagerDep = Annotated[AgentManager, Depends(get_manager)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]
Submitter = Annotated[Principal, Depends(require("submit"))]
Worker = Annotated[Principal, Depends(require("work"))]
Reader = Annotated[Principal, Depends(require("read"))]
Admin = Annotated[Principal, Depends(require("admin"))]
