"""The AgentManager's file-lock operations: ad-hoc locks and handing a claim back.

A mixin of :class:`~agent_manager.core.manager.AgentManager`, kept in its own module
to keep that one readable; the coordination SQL is in :mod:`agent_manager.db.locks`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from agent_manager.core.events import EventBuffer
from agent_manager.core.records import missing_step, stale_reason
from agent_manager.core.transient import retry_transient
from agent_manager.core.views import lock_public
from agent_manager.db import locks, queries
from agent_manager.db.engine import Database
from agent_manager.errors import InvalidRequest, LockConflict, NotFound, StaleClaim
from agent_manager.models import StepStatus
from agent_manager.plan import check_path, normalize_path
from agent_manager.schemas import LockPublic

#: A lock of a stronger mode covers every weaker use of the same path.
MODE_STRENGTH = {"read": 0, "write": 1, "exclusive": 2}


class FileLocking:
    """Ad-hoc locks for paths a running step discovers, and releasing a claim."""

    db: Database
    workspace: Path | None
    clock: Callable[[], datetime]

    def wake(self, roles: Iterable[str]) -> None:  # provided by AgentManager
        raise NotImplementedError

    @retry_transient
    async def release_claim(
        self, *, task_id: str, step_id: str, claim_token: str, reason: str = "released"
    ) -> bool:
        """Hand a claimed step back untouched: ready again, same attempt, locks freed.

        For a claim whose worker will not run it (a long-poll whose client hung up, a
        worker shutting down). False when the claim was no longer current.
        """
        now = self.clock()
        async with self.db.transaction() as session:
            step = await queries.lock_step(session, task_id=task_id, step_id=step_id)
            if step is None or step.claim_token != claim_token:
                return False
            if step.status != StepStatus.CLAIMED:
                return False
            if step.holds_locks:
                await queries.release_locks(session, claim_tokens=[claim_token])
                step.holds_locks = False
            step.status = StepStatus.READY
            step.claim_token = step.agent_id = step.lease_expires_at = step.claimed_at = None
            step.ready_at = step.updated_at = now
            events = EventBuffer(now)
            events.add(task_id, "step.released", step_id, reason=reason, attempt=step.attempt)
            await events.flush(session)
            role = step.role
        self.wake([role])
        return True

    # -- ad-hoc file locks -------------------------------------------------------------

    async def acquire_lock(
        self,
        *,
        task_id: str,
        step_id: str,
        claim_token: str,
        path: str,
        mode: str,
        wait: float = 0.0,
    ) -> LockPublic:
        """Lock a path a running step discovered it needs, waiting up to ``wait`` s.

        The lock belongs to the step's claim and ends with it. Raises
        :class:`LockConflict` naming the holder when the wait ends without it.
        """
        reason = check_path(path, self.workspace)
        if reason:
            raise InvalidRequest(f"path: '{path}' {reason}")
        path = normalize_path(path)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        pause = 0.02
        while True:
            held = await self._try_lock(task_id, step_id, claim_token, path, mode)
            if isinstance(held, LockPublic):
                return held
            if loop.time() >= deadline:
                raise LockConflict(
                    f"'{path}' is locked ({held['mode']}) by step '{held['step_id']}' of task "
                    f"'{held['task_id']}'; {mode} is not compatible",
                    holder={
                        "task_id": held["task_id"],
                        "step_id": held["step_id"],
                        "mode": held["mode"],
                    },
                )
            # Locks free up in whichever process finishes their holder: look again.
            await asyncio.sleep(min(pause, max(0.0, deadline - loop.time())))
            pause = min(pause * 2, 0.5)

    @retry_transient
    async def _try_lock(
        self, task_id: str, step_id: str, claim_token: str, path: str, mode: str
    ) -> LockPublic | dict[str, Any]:
        now = self.clock()
        async with self.db.transaction() as session:
            step = await queries.lock_step(session, task_id=task_id, step_id=step_id)
            if step is None:
                raise await missing_step(session, task_id, step_id)
            if step.claim_token != claim_token or step.status != StepStatus.CLAIMED:
                raise StaleClaim(stale_reason(step))
            assert step.lease_expires_at is not None
            own = [
                r
                for r in await locks.held_by_task(session, task_id=task_id, now=now)
                if r["claim_token"] == claim_token and r["path"] == path
            ]
            if own:
                strongest = max(own, key=lambda r: MODE_STRENGTH[r["mode"]])
                if MODE_STRENGTH[strongest["mode"]] >= MODE_STRENGTH[mode]:
                    return lock_public(strongest)
                # An upgrade (a declared read, then a write): granted beside the weaker
                # lock when no other claim is in the way; releasing it keeps the first.
            if not await locks.guard_paths(session, [path]):
                return {"task_id": "?", "step_id": "(being granted)", "mode": "?"}
            blocking = await locks.conflicts(
                session, wanted={path: mode}, now=now, exclude_token=claim_token
            )
            if blocking:
                return blocking[0]
            (lock_id,) = await locks.grant(
                session,
                wanted={path: mode},
                task_id=task_id,
                step_id=step_id,
                claim_token=claim_token,
                agent_id=step.agent_id,
                expires_at=step.lease_expires_at,
                now=now,
            )
            events = EventBuffer(now)
            events.add(task_id, "lock.granted", step_id, path=path, mode=mode, lock_id=lock_id)
            await events.flush(session)
            return LockPublic(
                id=lock_id,
                path=path,
                mode=mode,
                task_id=task_id,
                step_id=step_id,  # type: ignore[arg-type]
                agent_id=step.agent_id,
                expires_at=step.lease_expires_at,
            )

    @retry_transient
    async def release_lock(self, *, lock_id: int, claim_token: str) -> None:
        """Release an ad-hoc lock held by ``claim_token``."""
        async with self.db.transaction() as session:
            if not await locks.release_one(session, lock_id=lock_id, claim_token=claim_token):
                raise NotFound(f"no lock {lock_id} held by this claim")
