"""File locks: granting a step's declared locks atomically with its claim, ad-hoc locks.

Compatibility (SPEC §5; ✓ may be held together)::

    held \\ wanted   read  write  exclusive
    read              ✓     ✓      ✗
    write             ✓     ✗      ✗
    exclusive         ✗     ✗      ✗

Race-freedom: the check of the lock table and the insert of the new rows must not
interleave with another transaction doing the same for the same path. On SQLite every
transaction holds the database's write lock, which settles it. On PostgreSQL the
granting transaction first takes a transaction-scoped advisory lock per path
(``pg_try_advisory_xact_lock``, in sorted order): a second transaction granting on
the same path cannot get it until the first commits, and treats the path as busy
instead of waiting (no deadlocks, the step just stays ready for the next claim).
A lock lives as long as its claim's lease: rows past ``expires_at`` do not count.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from agent_manager.db.queries import ClaimedRow, claimable, mark_claimed, steps, tasks
from agent_manager.db.tables import FileAccessORM

locks_table = cast(Table, FileAccessORM.__table__)

_COMPATIBLE = {("read", "read"), ("read", "write"), ("write", "read")}


def compatible(held: str, wanted: str) -> bool:
    """May a lock of mode ``wanted`` be granted beside one of mode ``held``?"""
    return (held, wanted) in _COMPATIBLE


async def guard_paths(session: AsyncSession, paths: Iterable[str]) -> bool:
    """Take the per-path advisory locks (PostgreSQL); False if another holds one."""
    if session.get_bind().dialect.name != "postgresql":
        return True
    for path in sorted(set(paths)):
        got = await session.scalar(
            select(func.pg_try_advisory_xact_lock(func.hashtextextended(path, 0)))
        )
        if not got:
            return False
    return True


async def conflicts(
    session: AsyncSession,
    *,
    wanted: dict[str, str],
    now: datetime,
    exclude_token: str | None = None,
) -> list[dict[str, Any]]:
    """Live locks on ``wanted``'s paths that the wanted modes may not sit beside."""
    if not wanted:
        return []
    stmt = select(locks_table).where(
        locks_table.c.path.in_(list(wanted)), locks_table.c.expires_at > now
    )
    if exclude_token is not None:
        stmt = stmt.where(locks_table.c.claim_token != exclude_token)
    rows = (await session.execute(stmt)).mappings().all()
    return [dict(r) for r in rows if not compatible(r["mode"], wanted[r["path"]])]


async def grant(
    session: AsyncSession,
    *,
    wanted: dict[str, str],
    task_id: str,
    step_id: str,
    claim_token: str,
    agent_id: str | None,
    expires_at: datetime,
    now: datetime,
) -> list[int]:
    """Insert the lock rows (the caller checked them) and mark the step as holding."""
    ids = []
    for path, mode in sorted(wanted.items()):
        ids.append(
            await session.scalar(
                insert(locks_table)
                .values(
                    path=path,
                    mode=mode,
                    task_id=task_id,
                    step_id=step_id,
                    claim_token=claim_token,
                    agent_id=agent_id,
                    expires_at=expires_at,
                    created_at=now,
                )
                .returning(locks_table.c.id)
            )
        )
    await session.execute(
        update(steps)
        .where(steps.c.task_id == task_id, steps.c.id == step_id)
        .values(holds_locks=True)
    )
    return ids


async def claim_with_locks(
    session: AsyncSession,
    *,
    roles: Sequence[str],
    agent_id: str,
    now: datetime,
    limit: int,
    scan: int = 20,
) -> list[ClaimedRow]:
    """Claim up to ``limit`` ready steps of ``roles`` that declare files, best first,
    each only together with all its locks. A step whose locks cannot be granted now
    stays ready and the next one is tried."""
    candidates = (
        await session.execute(
            claimable(roles, now, scan, with_files=True)
            .add_columns(steps.c.files, steps.c.lease_seconds, tasks.c.goal)
            .join_from(steps, tasks, tasks.c.id == steps.c.task_id)
            .with_for_update(of=steps, skip_locked=True)
        )
    ).all()
    claimed: list[ClaimedRow] = []
    for task_id, step_id, files, lease_seconds, goal in candidates:
        wanted = {f["path"]: f["mode"] for f in files}
        if not await guard_paths(session, wanted):
            continue
        if await conflicts(session, wanted=wanted, now=now):
            continue
        claim = await mark_claimed(
            session,
            task_id=task_id,
            step_id=step_id,
            goal=goal,
            agent_id=agent_id,
            lease_seconds=lease_seconds,
            now=now,
        )
        await grant(
            session,
            wanted=wanted,
            task_id=task_id,
            step_id=step_id,
            claim_token=claim.claim_token,
            agent_id=agent_id,
            expires_at=claim.lease_expires_at,
            now=now,
        )
        claimed.append(claim)
        if len(claimed) >= limit:
            break
    return claimed


async def extend(session: AsyncSession, *, claim_token: str, expires_at: datetime) -> None:
    """A heartbeat extends the claim's locks with its lease."""
    await session.execute(
        update(locks_table)
        .where(locks_table.c.claim_token == claim_token)
        .values(expires_at=expires_at)
    )


async def release_one(session: AsyncSession, *, lock_id: int, claim_token: str) -> bool:
    result = await session.execute(
        delete(locks_table).where(
            locks_table.c.id == lock_id, locks_table.c.claim_token == claim_token
        )
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def held_by_task(session: AsyncSession, *, task_id: str, now: datetime) -> list[Any]:
    rows = await session.execute(
        select(locks_table)
        .where(locks_table.c.task_id == task_id, locks_table.c.expires_at > now)
        .order_by(locks_table.c.id)
    )
    return list(rows.mappings().all())
