"""Submitting, reading, listing and cancelling tasks."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy.exc import SQLAlchemyError

from agent_manager.api import sse
from agent_manager.api.deps import ManagerDep, Reader, SessionDep, Submitter
from agent_manager.core import event_stream, views
from agent_manager.errors import AgentManagerError, Forbidden, Unauthorized
from agent_manager.models import TaskStatus
from agent_manager.schemas import (
    AgentPublic,
    EventPublic,
    TaskCreate,
    TaskCreated,
    TaskPage,
    TaskPublic,
)

router = APIRouter(prefix="/v1", tags=["tasks"])


@router.post("/tasks", response_model=TaskCreated, status_code=201)
@router.post("/submit_task", response_model=TaskCreated, status_code=201, tags=["seed aliases"])
async def submit_task(
    body: TaskCreate,
    manager: ManagerDep,
    principal: Submitter,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
) -> TaskCreated:
    """Submit a goal, with or without an explicit plan; returns at once."""
    created = await manager.plan_and_save_task(
        request=body, created_by=principal.token_id, idempotency_key=idempotency_key
    )
    if not created.created:
        response.status_code = 200
    response.headers["Location"] = f"/v1/tasks/{created.id}"
    return created


@router.get("/tasks", response_model=TaskPage)
async def list_tasks(
    session: SessionDep,
    _: Reader,
    status: Annotated[list[TaskStatus] | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> TaskPage:
    """List tasks, newest first; filter by status, page with ``cursor``."""
    return await views.list_tasks(session, status=status, limit=limit, cursor=cursor)


@router.get("/tasks/{task_id}", response_model=TaskPublic)
async def get_task(
    task_id: str, session: SessionDep, _: Reader, history: bool = False
) -> TaskPublic:
    """The task with its steps, latest results (every attempt with ?history=true), audits."""
    return await views.get_task(session, task_id=task_id, history=history)


@router.post("/tasks/{task_id}/cancel", response_model=TaskPublic)
async def cancel_task(
    task_id: str, manager: ManagerDep, session: SessionDep, _: Submitter
) -> TaskPublic:
    """Cancel a task; its workers learn it on their next heartbeat."""
    await manager.cancel_task(task_id=task_id)
    return await views.get_task(session, task_id=task_id)


@router.get("/agents", response_model=list[AgentPublic], tags=["agents"])
async def list_agents(session: SessionDep, _: Reader) -> list[AgentPublic]:
    """Known workers: their roles, when they last spoke, the steps they hold now."""
    return await views.list_agents(session)


@router.get(
    "/tasks/{task_id}/events",
    response_model=list[EventPublic],
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def list_events(
    task_id: str,
    request: Request,
    session: SessionDep,
    manager: ManagerDep,
    _: Reader,
    after: Annotated[int, Query(ge=0, le=sse.MAX_EVENT_ID)] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    accept: Annotated[str, Header()] = "",
    last_event_id: Annotated[str | None, Header()] = None,
) -> list[EventPublic] | StreamingResponse:
    """A task's events after event id ``after``, oldest first; with ``Accept:
    text/event-stream`` a live stream of them, resumable with ``Last-Event-ID``."""
    await views.get_task_row(session, task_id=task_id)
    await session.close()  # a stream may last hours: give the connection back now
    if "text/event-stream" not in accept:
        return await event_stream.settled_list(manager, task_id=task_id, after=after, limit=limit)
    if last_event_id is not None:
        after = sse.parse_last_event_id(last_event_id)
    secret = request.headers.get("authorization", "").removeprefix("Bearer ").strip()

    async def still_allowed() -> bool:
        """A stream may outlive its token: a revoked one ends it within seconds."""
        try:
            principal = await request.app.state.tokens.verify(manager.db.sessions, secret)
            principal.require("read")
        except (Unauthorized, Forbidden):
            return False
        except (AgentManagerError, SQLAlchemyError, OSError):
            return True  # the database is away: the stream's own reads deal with that
        return True

    return sse.response(
        event_stream.follow(manager, task_id=task_id, after=after, still_allowed=still_allowed)
    )
