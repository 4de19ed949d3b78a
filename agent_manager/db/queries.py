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

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, delete, func, literal, select, tuple_, update
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


def _claimable(roles: Sequence[str], now: datetime) -> Any:
    return (
        select(S.task_id, S.id)
        .where(S.status == StepStatus.READY, S.role.in_(roles), S.ready_at <= now)
        .order_by(S.priority.desc(), S.ready_at, S.task_id, S.id)
        .limit(1)
    )


async def claim_next_step(
    session: AsyncSession,
    *,
    roles: Sequence[str],
    agent_id: str,
    claim_token: str,
    now: datetime,
) -> TaskStepORM | None:
    """Claim the best ready step of ``roles``: highest priority, then longest ready."""
    claim_values = {
        "status": StepStatus.CLAIMED,
        "claim_token": claim_token,
        "agent_id": agent_id,
        "claimed_at": now,
        "updated_at": now,
    }
    if session.bind.dialect.name == "postgresql":
        expires = literal(now, UTCDateTime()) + func.make_interval(
            0, 0, 0, 0, 0, 0, S.lease_seconds
        )
        candidate = _claimable(roles, now).with_for_update(skip_locked=True)
        result = await session.execute(
            update(S)
            .where(tuple_(S.task_id, S.id).in_(candidate))
            .values(**claim_values, lease_expires_at=expires)
            .returning(S)
            .execution_options(synchronize_session=False)
        )
        return result.scalars().one_or_none()

    row = (await session.execute(_claimable(roles, now))).first()
    if row is None:
        return None
    task_id, step_id = row
    result = await session.execute(
        update(S)
        .where(S.task_id == task_id, S.id == step_id, S.status == StepStatus.READY)
        .values(**claim_values, lease_expires_at=None)
        .returning(S)
        .execution_options(synchronize_session=False)
    )
    step = result.scalars().one_or_none()
    if step is not None:
        step.lease_expires_at = now + timedelta(seconds=step.lease_seconds)
    return step


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


async def renew_lease(
    session: AsyncSession, *, task_id: str, step_id: str, claim_token: str, expires_at: datetime
) -> bool:
    """Extend a live claim. False when the claim is not (or no longer) current."""
    result = await session.execute(
        update(S)
        .where(
            S.task_id == task_id,
            S.id == step_id,
            S.claim_token == claim_token,
            S.status == StepStatus.CLAIMED,
        )
        .values(lease_expires_at=expires_at)
        .returning(S.id)
        .execution_options(synchronize_session=False)
    )
    return result.first() is not None


async def promote_dependents(
    session: AsyncSession, *, task_id: str, dependents: Sequence[str], now: datetime
) -> list[tuple[str, str]]:
    """One dependency of each of ``dependents`` is done: count it, and make ready
    those with none left. Returns the ``(step_id, role)`` pairs that became ready."""
    if not dependents:
        return []
    last = S.remaining_deps <= 1
    result = await session.execute(
        update(S)
        .where(S.task_id == task_id, S.id.in_(dependents), S.status == StepStatus.PENDING)
        .values(
            remaining_deps=S.remaining_deps - 1,
            status=case((last, StepStatus.READY.value), else_=S.status),
            ready_at=case((last, now), else_=S.ready_at),
            updated_at=now,
        )
        .returning(S.id, S.role, S.status)
        .execution_options(synchronize_session=False)
    )
    return [(sid, role) for sid, role, status in result if status == StepStatus.READY]


async def count_step_done(session: AsyncSession, *, task_id: str) -> int:
    """Decrement the task's count of unfinished work steps; return what is left."""
    result = await session.execute(
        update(TaskGraphORM)
        .where(TaskGraphORM.id == task_id)
        .values(steps_remaining=TaskGraphORM.steps_remaining - 1)
        .returning(TaskGraphORM.steps_remaining)
        .execution_options(synchronize_session=False)
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
    if session.bind.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as upsert
    else:
        from sqlalchemy.dialects.sqlite import insert as upsert
    stmt = upsert(AgentORM).values(
        id=agent_id, roles=list(roles), token_id=token_id, first_seen_at=now, last_seen_at=now
    )
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[AgentORM.id],
            set_={"roles": stmt.excluded.roles, "last_seen_at": now, "token_id": token_id},
        )
    )
