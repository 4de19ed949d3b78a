"""Read models: the task view, task lists, events, and what a claimer is handed."""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any

from sqlalchemy import case, func, literal, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession

from agent_manager.db import locks
from agent_manager.db.queries import ClaimedRow
from agent_manager.db.tables import (
    AgentORM,
    EventORM,
    ResultORM,
    TaskGraphORM,
    TaskStepORM,
    UTCDateTime,
    utcnow,
)
from agent_manager.errors import InvalidRequest, NotFound
from agent_manager.models import AuditReport, StepStatus, TaskStatus, Usage
from agent_manager.schemas import (
    AgentPublic,
    AgentStep,
    AuditPublic,
    ClaimContext,
    EventPublic,
    LockPublic,
    ResultPublic,
    StepPublic,
    TaskOptions,
    TaskPage,
    TaskPublic,
    TaskSummary,
)


async def latest_outputs(
    session: AsyncSession, *, task_id: str, step_ids: list[str] | None = None
) -> dict[str, Any]:
    """The output of each step's latest successful result."""
    stmt = (
        select(ResultORM.step_id, ResultORM.output)
        .where(ResultORM.task_id == task_id, ResultORM.status == "success")
        .order_by(ResultORM.id)
    )
    if step_ids is not None:
        if not step_ids:
            return {}
        stmt = stmt.where(ResultORM.step_id.in_(step_ids))
    # Ordered by id, so later results overwrite earlier ones.
    return {step_id: output for step_id, output in await session.execute(stmt)}


async def claim_context(session: AsyncSession, *, claimed: ClaimedRow) -> ClaimContext:
    """What a claimer needs besides the step: dependency outputs, rework notes, and for
    the server's own roles the plan, every output and the audits so far."""
    if not claimed.id.startswith("_"):
        outputs = await latest_outputs(
            session, task_id=claimed.task_id, step_ids=list(claimed.depends_on)
        )
        return ClaimContext(dependencies=outputs, rework_notes=list(claimed.rework_notes))
    task = await get_task_row(session, task_id=claimed.task_id)
    extra: dict[str, Any] = {"options": task.options, "rework_round": task.rework_round}
    outputs = {}
    if claimed.role != "planner":
        plan = (
            await session.scalars(
                select(TaskStepORM)
                .where(
                    TaskStepORM.task_id == task.id, ~TaskStepORM.id.startswith("_", autoescape=True)
                )
                .order_by(TaskStepORM.position)
            )
        ).all()
        extra["plan"] = [
            {
                "id": s.id,
                "role": s.role,
                "instruction": s.instruction,
                "depends_on": s.depends_on,
                "rework_notes": s.rework_notes,
            }
            for s in plan
        ]
        extra["audits"] = [a.model_dump() for a in await _audits(session, task.id)]
        extra["unresolved"] = (task.final_result or {}).get("unresolved", [])
        outputs = await latest_outputs(session, task_id=task.id, step_ids=[s.id for s in plan])
    return ClaimContext(dependencies=outputs, rework_notes=list(claimed.rework_notes), extra=extra)


async def _audits(session: AsyncSession, task_id: str) -> list[AuditPublic]:
    rows = await session.scalars(
        select(ResultORM)
        .where(
            ResultORM.task_id == task_id,
            ResultORM.step_id.startswith("_audit-", autoescape=True),
            ResultORM.status == "success",
        )
        .order_by(ResultORM.id)
    )
    audits = []
    for row in rows:
        try:
            report = AuditReport.model_validate(row.output)
        except ValueError:
            continue
        audits.append(AuditPublic(round=row.rework_round, report=report))
    return audits


def lock_public(row: Any) -> LockPublic:
    return LockPublic(
        id=row["id"],
        path=row["path"],
        mode=row["mode"],
        task_id=row["task_id"],
        step_id=row["step_id"],
        agent_id=row["agent_id"],
        expires_at=row["expires_at"],
    )


def result_public(row: ResultORM) -> ResultPublic:
    return ResultPublic(
        id=row.id,
        step_id=row.step_id,
        attempt=row.attempt,
        rework_round=row.rework_round,
        agent_id=row.agent_id,
        status=row.status,  # type: ignore[arg-type]
        output=row.output,
        ra_history=row.ra_history,  # type: ignore[arg-type]
        usage=Usage(
            prompt_tokens=row.prompt_tokens,
            completion_tokens=row.completion_tokens,
            total_tokens=row.total_tokens,
        ),
        error=row.error,
        retryable=row.retryable,
        outcome=row.outcome,
        created_at=row.created_at,
    )


async def get_task_row(session: AsyncSession, *, task_id: str) -> TaskGraphORM:
    task = await session.get(TaskGraphORM, task_id)
    if task is None:
        raise NotFound(f"no task '{task_id}'")
    return task


async def get_task(session: AsyncSession, *, task_id: str, history: bool = False) -> TaskPublic:
    """The whole task: steps with their latest (or every) result, audits, usage."""
    task = await get_task_row(session, task_id=task_id)
    steps = (
        await session.scalars(
            select(TaskStepORM)
            .where(TaskStepORM.task_id == task_id)
            .order_by(TaskStepORM.position, TaskStepORM.id)
        )
    ).all()
    results = (
        await session.scalars(
            select(ResultORM).where(ResultORM.task_id == task_id).order_by(ResultORM.id)
        )
    ).all()
    held: dict[str, list[LockPublic]] = {}
    for row in await locks.held_by_task(session, task_id=task_id, now=utcnow()):
        held.setdefault(row["step_id"], []).append(lock_public(row))
    by_step: dict[str, list[ResultPublic]] = {}
    usage = Usage()
    for row in results:
        public = result_public(row)
        by_step.setdefault(row.step_id, []).append(public)
        usage = usage + public.usage
    return TaskPublic(
        id=task.id,
        goal=task.goal,
        status=TaskStatus(task.status),
        rework_round=task.rework_round,
        options=TaskOptions.model_validate(task.options),
        steps=[
            StepPublic(
                id=s.id,
                role=s.role,
                instruction=s.instruction,
                status=StepStatus(s.status),
                attempt=s.attempt,
                max_attempts=s.max_attempts,
                priority=s.priority,
                depends_on=s.depends_on,
                files=s.files,
                agent_id=s.agent_id,
                claimed_at=s.claimed_at,
                lease_expires_at=s.lease_expires_at,
                rework_notes=s.rework_notes,
                last_error=s.last_error,
                locks=held.get(s.id, []),
                result=by_step[s.id][-1] if s.id in by_step else None,
                attempts=by_step.get(s.id, []) if history else [],
            )
            for s in steps
        ],
        audits=await _audits(session, task_id),
        final_result=task.final_result,
        error=task.error,
        usage=usage,
        metadata=task.metadata_,
        created_at=task.created_at,
        updated_at=task.updated_at,
        finished_at=task.finished_at,
    )


def _encode_cursor(created_at: datetime, task_id: str) -> str:
    raw = json.dumps([created_at.isoformat(), task_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, task_id = json.loads(raw)
        when = datetime.fromisoformat(created)
        if when.tzinfo is None:
            raise ValueError("cursor time has no time zone")
        return when, str(task_id)
    except (ValueError, TypeError) as exc:
        raise InvalidRequest("cursor is not one this server handed out") from exc


async def list_tasks(
    session: AsyncSession,
    *,
    status: list[TaskStatus] | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> TaskPage:
    """Tasks, newest first, a page at a time (keyset pagination)."""
    stmt = select(TaskGraphORM).order_by(TaskGraphORM.created_at.desc(), TaskGraphORM.id.desc())
    if status:
        stmt = stmt.where(TaskGraphORM.status.in_([s.value for s in status]))
    if cursor:
        created, task_id = _decode_cursor(cursor)
        stmt = stmt.where(
            tuple_(TaskGraphORM.created_at, TaskGraphORM.id)
            < tuple_(literal(created, UTCDateTime()), literal(task_id))
        )
    tasks = (await session.scalars(stmt.limit(limit + 1))).all()
    more = len(tasks) > limit
    tasks = tasks[:limit]
    counts: dict[str, tuple[int, int]] = {}
    if tasks:
        rows = await session.execute(
            select(
                TaskStepORM.task_id,
                func.count(),
                func.sum(case((TaskStepORM.status == StepStatus.DONE, 1), else_=0)),
            )
            .where(
                TaskStepORM.task_id.in_([t.id for t in tasks]),
                ~TaskStepORM.id.startswith("_", autoescape=True),
            )
            .group_by(TaskStepORM.task_id)
        )
        counts = {tid: (int(total), int(done or 0)) for tid, total, done in rows}
    items = [
        TaskSummary(
            id=t.id,
            goal=t.goal,
            status=TaskStatus(t.status),
            rework_round=t.rework_round,
            steps_total=counts.get(t.id, (0, 0))[0],
            steps_done=counts.get(t.id, (0, 0))[1],
            created_at=t.created_at,
            finished_at=t.finished_at,
        )
        for t in tasks
    ]
    next_cursor = _encode_cursor(tasks[-1].created_at, tasks[-1].id) if more else None
    return TaskPage(items=items, next_cursor=next_cursor)


async def list_events(
    session: AsyncSession, *, task_id: str, after: int = 0, limit: int = 1000
) -> list[EventPublic]:
    """A task's events after event id ``after``, in order."""
    rows = await session.scalars(
        select(EventORM)
        .where(EventORM.task_id == task_id, EventORM.id > after)
        .order_by(EventORM.id)
        .limit(limit)
    )
    return [
        EventPublic(
            id=r.id,
            task_id=r.task_id,
            step_id=r.step_id,
            type=r.type,
            data=r.data,
            created_at=r.created_at,
        )
        for r in rows
    ]


async def list_agents(session: AsyncSession) -> list[AgentPublic]:
    """Every worker seen, most recently seen first, with the steps it holds now."""
    agents = (await session.scalars(select(AgentORM).order_by(AgentORM.last_seen_at.desc()))).all()
    held = await session.execute(
        select(
            TaskStepORM.agent_id,
            TaskStepORM.task_id,
            TaskStepORM.id,
            TaskStepORM.role,
            TaskStepORM.claimed_at,
            TaskStepORM.lease_expires_at,
        )
        .where(TaskStepORM.status == StepStatus.CLAIMED)
        .order_by(TaskStepORM.claimed_at)
    )
    by_agent: dict[str | None, list[AgentStep]] = {}
    for agent_id, task_id, step_id, role, claimed_at, expires in held:
        by_agent.setdefault(agent_id, []).append(
            AgentStep(
                task_id=task_id,
                step_id=step_id,
                role=role,
                claimed_at=claimed_at,
                lease_expires_at=expires,
            )
        )
    return [
        AgentPublic(
            id=a.id,
            roles=list(a.roles),
            first_seen_at=a.first_seen_at,
            last_seen_at=a.last_seen_at,
            current_steps=by_agent.get(a.id, []),
        )
        for a in agents
    ]
