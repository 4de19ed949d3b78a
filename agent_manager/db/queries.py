"""The coordination queries, named and kept in one place.

Claiming, lease renewal, reaping and promotion are the statements whose atomicity the
whole system rests on. Each is written once per backend where the backends differ:

* PostgreSQL claims in one statement, ``UPDATE … WHERE (task_id, id) = (SELECT …
  FOR UPDATE SKIP LOCKED LIMIT 1) RETURNING …``, so concurrent claimers skip each
  other's candidate rows instead of queueing on them.
* SQLite has one writer at a time (every transaction starts ``BEGIN IMMEDIATE``, see
  :mod:`agent_manager.db.engine`), so select-then-update inside the transaction is
  just as atomic, across processes too.

Promotion decrements a per-step counter of unfinished dependencies with a single
``UPDATE … RETURNING``: row locks serialise two dependencies finishing at the same
time, so exactly one of them sees the counter reach zero. It touches only the
finished step's dependents, so its cost does not grow with the graph.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, and_, case, delete, func, literal, or_, select, true, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from agent_manager.db.tables import (
    AgentORM,
    FileAccessORM,
    TaskGraphORM,
    TaskStepORM,
    UTCDateTime,
)
from agent_manager.models import StepStatus

S = TaskStepORM


steps = cast(Table, TaskStepORM.__table__)
tasks = cast(Table, TaskGraphORM.__table__)


def claimable(
    roles: Sequence[str], now: datetime, limit: int = 1, *, with_files: bool | None = None
) -> Any:
    """Ready steps of ``roles`` in claim order; ``with_files``: only steps that declare
    files (True), only steps that do not (False), or both (None)."""
    stmt = (
        select(steps.c.task_id, steps.c.id)
        .where(
            steps.c.status == StepStatus.READY.value,
            steps.c.role.in_(roles),
            steps.c.ready_at <= now,
        )
        .order_by(
            steps.c.priority.desc(),
            steps.c.ready_at,
            steps.c.task_id,
            steps.c.position,
            steps.c.id,
        )
        .limit(limit)
    )
    if with_files is not None:
        stmt = stmt.where(steps.c.has_files.is_(with_files))
    return stmt


@dataclass(frozen=True, slots=True)
class ClaimedRow:
    """A step as it was claimed, with its task's goal and its new claim token."""

    task_id: str
    id: str
    role: str
    instruction: str
    depends_on: list[str]
    files: list[dict[str, Any]]
    attempt: int
    max_attempts: int
    lease_seconds: float
    lease_expires_at: datetime
    rework_notes: list[str]
    rework_round: int
    goal: str
    claim_token: str
    # Filled in by the PostgreSQL claim statement; None: look them up.
    dependency_outputs: dict[str, Any] | None = None


CLAIMED_COLUMNS = (
    steps.c.task_id,
    steps.c.id,
    steps.c.role,
    steps.c.instruction,
    steps.c.depends_on,
    steps.c.files,
    steps.c.attempt,
    steps.c.max_attempts,
    steps.c.lease_seconds,
    steps.c.lease_expires_at,
    steps.c.rework_notes,
    steps.c.rework_round,
)


def new_claim_token() -> str:
    return secrets.token_urlsafe(24)


async def claim_steps(
    session: AsyncSession,
    *,
    roles: Sequence[str],
    agent_id: str,
    now: datetime,
    limit: int = 1,
    with_files: bool | None = None,
) -> tuple[list[ClaimedRow], int]:
    """Claim the steps without files among the best ``limit`` ready steps of ``roles``
    (SQLite). Returns them and how many of those best steps declare files: those are
    claimed only with their locks (:func:`agent_manager.db.locks.claim_with_locks`).

    This transaction holds the database's write lock (``BEGIN IMMEDIATE``), so
    pick-then-update cannot race with another claimer in any process. PostgreSQL
    uses the single statement in :mod:`agent_manager.db.pg_hot` instead.
    """
    picked = (
        await session.execute(
            claimable(roles, now, limit, with_files=with_files)
            .add_columns(steps.c.has_files, steps.c.lease_seconds, tasks.c.goal)
            .join_from(steps, tasks, tasks.c.id == steps.c.task_id)
        )
    ).all()
    claimed = [
        await mark_claimed(
            session,
            task_id=task_id,
            step_id=step_id,
            goal=goal,
            agent_id=agent_id,
            lease_seconds=lease_seconds,
            now=now,
        )
        for task_id, step_id, has_files, lease_seconds, goal in picked
        if not has_files
    ]
    return claimed, sum(1 for p in picked if p.has_files)


async def mark_claimed(
    session: AsyncSession,
    *,
    task_id: str,
    step_id: str,
    goal: str,
    agent_id: str,
    lease_seconds: float,
    now: datetime,
) -> ClaimedRow:
    """Claim one step this transaction already picked (and holds): a new token and lease."""
    token = new_claim_token()
    row = (
        await session.execute(
            update(steps)
            .where(steps.c.task_id == task_id, steps.c.id == step_id)
            .values(
                status=StepStatus.CLAIMED.value,
                claim_token=token,
                agent_id=agent_id,
                claimed_at=now,
                updated_at=now,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
            )
            .returning(*CLAIMED_COLUMNS)
        )
    ).one()
    return ClaimedRow(**row._mapping, goal=goal, claim_token=token)


@dataclass(frozen=True, slots=True)
class FinishedRow:
    """What a successful report needs to know of the step it finished."""

    role: str
    attempt: int
    agent_id: str | None
    dependents: list[str]
    holds_locks: bool
    rework_round: int


async def finish_claim(
    session: AsyncSession,
    *,
    task_id: str,
    step_id: str,
    claim_token: str,
    agent_id: str | None,
    now: datetime,
) -> FinishedRow | None:
    """Mark a claimed step done if ``claim_token`` is its current claim (the fence).

    None when the token is stale, foreign, or the step is no longer claimed: the
    caller then works out which, on the slow path.
    """
    row = (
        await session.execute(
            update(steps)
            .where(
                steps.c.task_id == task_id,
                steps.c.id == step_id,
                steps.c.claim_token == claim_token,
                steps.c.status == StepStatus.CLAIMED.value,
                # A report that names its agent must name the claimer.
                true()
                if agent_id is None
                else or_(steps.c.agent_id.is_(None), steps.c.agent_id == agent_id),
            )
            .values(
                status=StepStatus.DONE.value,
                lease_expires_at=None,
                last_error=None,
                updated_at=now,
            )
            .returning(
                steps.c.role,
                steps.c.attempt,
                steps.c.agent_id,
                steps.c.dependents,
                steps.c.holds_locks,
                steps.c.rework_round,
            )
        )
    ).first()
    return FinishedRow(*row) if row is not None else None


async def next_ready_time(
    session: AsyncSession, *, roles: Sequence[str], now: datetime
) -> datetime | None:
    """When the next ready-but-backing-off step of ``roles`` becomes claimable."""
    return await session.scalar(
        select(func.min(S.ready_at)).where(
            S.status == StepStatus.READY, S.role.in_(roles), S.ready_at > now
        )
    )


async def lock_step(session: AsyncSession, *, task_id: str, step_id: str) -> TaskStepORM | None:
    """Load one step for update (a row lock on PostgreSQL; SQLite holds the write lock)."""
    return await session.scalar(
        select(S)
        .where(S.task_id == task_id, S.id == step_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )


async def lock_task(session: AsyncSession, *, task_id: str) -> TaskGraphORM | None:
    return await session.scalar(
        select(TaskGraphORM)
        .where(TaskGraphORM.id == task_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )


async def promote_dependents(
    session: AsyncSession, *, task_id: str, dependents: Sequence[str], now: datetime
) -> list[tuple[str, str]]:
    """One dependency of each of ``dependents`` is done: count it, and make ready
    those with none left. Returns the ``(step_id, role)`` pairs that became ready."""
    if not dependents:
        return []
    last = steps.c.remaining_deps <= 1
    result = await session.execute(
        update(steps)
        .where(
            steps.c.task_id == task_id,
            steps.c.id.in_(dependents),
            steps.c.status == StepStatus.PENDING.value,
        )
        .values(
            remaining_deps=steps.c.remaining_deps - 1,
            status=case((last, StepStatus.READY.value), else_=steps.c.status),
            ready_at=case((last, literal(now, UTCDateTime())), else_=steps.c.ready_at),
            updated_at=now,
        )
        .returning(steps.c.id, steps.c.role, steps.c.status)
    )
    return [(sid, role) for sid, role, status in result if status == StepStatus.READY]


async def count_step_done(session: AsyncSession, *, task_id: str) -> int:
    """Decrement the task's count of unfinished work steps; return what is left."""
    result = await session.execute(
        update(tasks)
        .where(tasks.c.id == task_id)
        .values(steps_remaining=tasks.c.steps_remaining - 1)
        .returning(tasks.c.steps_remaining)
    )
    return int(result.scalar_one())


async def expired_claims(
    session: AsyncSession, *, now: datetime, limit: int = 100
) -> list[TaskStepORM]:
    """Claimed steps whose lease ran out, locked for this transaction."""
    stmt = (
        select(S)
        .where(S.status == StepStatus.CLAIMED, S.lease_expires_at < now)
        .order_by(S.lease_expires_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .execution_options(populate_existing=True)
    )
    return list((await session.scalars(stmt)).all())


async def release_locks(session: AsyncSession, *, claim_tokens: Sequence[str]) -> int:
    """Drop every file lock held under ``claim_tokens``."""
    if not claim_tokens:
        return 0
    result = await session.execute(
        delete(FileAccessORM).where(FileAccessORM.claim_token.in_(claim_tokens))
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def open_steps_filter(task_id: str) -> Any:
    return and_(
        S.task_id == task_id,
        S.status.in_([StepStatus.PENDING, StepStatus.READY, StepStatus.CLAIMED]),
    )


async def touch_agent(
    session: AsyncSession,
    *,
    agent_id: str,
    roles: Sequence[str],
    token_id: str | None,
    now: datetime,
) -> None:
    """Record that a worker was seen, with the roles it asked for (an upsert)."""
    upsert: Any = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    stmt = upsert(AgentORM).values(
        id=agent_id, roles=list(roles), token_id=token_id, first_seen_at=now, last_seen_at=now
    )
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[AgentORM.id],
            set_={"roles": stmt.excluded.roles, "last_seen_at": now, "token_id": token_id},
        )
    )


async def stalled_tasks(session: AsyncSession, *, limit: int = 100) -> list[str]:
    """Running tasks with no work step left: their phase change is still due."""
    rows = await session.scalars(
        select(tasks.c.id)
        .where(tasks.c.status == "running", tasks.c.steps_remaining == 0)
        .limit(limit)
    )
    return list(rows)


async def agent_seen(session: AsyncSession, *, agent_id: str, now: datetime) -> None:
    """A known worker spoke (a heartbeat): note the time, keep its roles."""
    await session.execute(update(AgentORM).where(AgentORM.id == agent_id).values(last_seen_at=now))
