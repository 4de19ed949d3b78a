"""The AgentManager: submitting, claiming, heartbeats, results, retries, cancellation.

Each state change is one transaction (on PostgreSQL, the claim and the successful
report are single statements, see :mod:`agent_manager.db.pg_hot`). Roles whose steps
became ready are collected on the way and their waiting claimers woken only after the
commit, so a woken claimer always finds the step. File-lock operations are in
:mod:`agent_manager.core.file_locks`, the task's phases in :mod:`.cycle`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from agent_manager.core import cycle
from agent_manager.core.events import EventBuffer
from agent_manager.core.file_locks import FileLocking
from agent_manager.core.notify import Notifier, TaskSignals
from agent_manager.core.records import (
    ack_of,
    claim_public,
    missing_step,
    outcome_of,
    result_row,
    stale_reason,
)
from agent_manager.core.transient import retry_transient
from agent_manager.core.views import claim_context
from agent_manager.db import locks, pg_hot, queries
from agent_manager.db.engine import Database
from agent_manager.db.queries import ClaimedRow
from agent_manager.db.tables import ResultORM, TaskGraphORM, TaskStepORM, utcnow
from agent_manager.errors import (
    AgentManagerError,
    Conflict,
    NotFound,
    StaleClaim,
)
from agent_manager.models import StepStatus, TaskStatus
from agent_manager.plan import validate_plan
from agent_manager.retry import RetryPolicy
from agent_manager.schemas import (
    ClaimContext,
    ClaimPublic,
    HeartbeatOut,
    ResultAck,
    ResultCreate,
    TaskCreate,
    TaskCreated,
)

if TYPE_CHECKING:
    from agent_manager.core.bus import RedisBus

log = logging.getLogger(__name__)

PLAN_STEP_ID = "_plan"
LOCK_RECHECK_SECONDS = 0.1


class AgentManager(FileLocking):
    """The core of the server, independent of HTTP."""

    def __init__(
        self,
        db: Database,
        *,
        notifier: Notifier | None = None,
        bus: RedisBus | None = None,
        recheck_interval: float = 0.5,
        lease_seconds: float = 60.0,
        retry_policy: RetryPolicy | None = None,
        workspace: Path | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.db = db
        self.notifier = notifier or Notifier()
        self.task_signals = TaskSignals()
        self.bus = bus
        self._recheck_interval = recheck_interval
        db.on_events_committed = self.events_committed
        self.lease_seconds = lease_seconds
        self.retry_policy = retry_policy or RetryPolicy(base=1.0, maximum=60.0)
        self.workspace = workspace
        self.clock = clock
        self._agents_seen: dict[str, tuple[float, tuple[str, ...] | None]] = {}
        self.closing = False

    # -- submitting -------------------------------------------------------------

    @retry_transient
    async def plan_and_save_task(
        self,
        *,
        request: TaskCreate,
        created_by: str | None = None,
        idempotency_key: str | None = None,
    ) -> TaskCreated:
        """Validate and persist a task; mark its first steps ready.

        With explicit ``steps`` the plan is checked here (a bad plan raises
        :class:`InvalidPlan` and nothing is written). Without, a ``planner`` step is
        queued and the task starts in ``planning``.
        """
        checked = validate_plan(request.steps, workspace=self.workspace) if request.steps else None
        if idempotency_key:
            existing = await self._find_idempotent(created_by, idempotency_key)
            if existing:
                return existing

        now = self.clock()
        options = request.options.model_dump()
        planned = checked is None
        options["audit"] = planned if options["audit"] is None else options["audit"]
        options["synthesize"] = planned if options["synthesize"] is None else options["synthesize"]
        options["lease_seconds"] = options["lease_seconds"] or self.lease_seconds
        task = TaskGraphORM(
            id=str(uuid.uuid4()),
            goal=request.goal,
            status=TaskStatus.PLANNING if planned else TaskStatus.RUNNING,
            rework_round=0,
            options=options,
            steps_remaining=0,
            metadata_=request.metadata,
            created_by=created_by,
            idempotency_key=idempotency_key,
            created_at=now,
            updated_at=now,
        )
        events = EventBuffer(now)
        events.add(task.id, "task.created", status=task.status, goal=task.goal)
        woken: list[str] = []
        try:
            async with self.db.transaction() as session:
                session.add(task)
                await session.flush()
                if checked is None:
                    await cycle.add_system_step(
                        session,
                        task=task,
                        step_id=PLAN_STEP_ID,
                        role="planner",
                        instruction="Plan the goal into steps.",
                        now=now,
                        events=events,
                    )
                    woken.append("planner")
                else:
                    woken += await cycle.insert_plan(
                        session, task=task, plan=checked, now=now, events=events
                    )
                await events.flush(session)
        except IntegrityError:
            # A concurrent request with the same Idempotency-Key won the insert.
            if idempotency_key:
                existing = await self._find_idempotent(created_by, idempotency_key)
                if existing:
                    return existing
            raise
        self.wake(woken)
        return TaskCreated(id=task.id, status=TaskStatus(task.status), created=True)

    async def _find_idempotent(self, created_by: str | None, key: str) -> TaskCreated | None:
        async with self.db.sessions() as session:
            row = await session.scalar(
                select(TaskGraphORM).where(
                    TaskGraphORM.idempotency_key == key, TaskGraphORM.created_by == created_by
                )
            )
        if row is None:
            return None
        return TaskCreated(id=row.id, status=TaskStatus(row.status), created=False)

    # -- claiming ---------------------------------------------------------------

    async def claim(
        self, *, agent_id: str, roles: tuple[str, ...], token_id: str | None = None
    ) -> ClaimPublic | None:
        """Atomically claim the best ready step of ``roles``, or None."""
        claims = await self.claim_many(agent_id=agent_id, roles=roles, token_id=token_id)
        return claims[0] if claims else None

    async def claim_many(
        self,
        *,
        agent_id: str,
        roles: tuple[str, ...],
        limit: int = 1,
        token_id: str | None = None,
    ) -> list[ClaimPublic]:
        """Atomically claim up to ``limit`` ready steps of ``roles``, best first."""
        claims, _ = await self._claim_many(agent_id, roles, limit, token_id)
        return claims

    @retry_transient
    async def _claim_many(
        self, agent_id: str, roles: tuple[str, ...], limit: int, token_id: str | None
    ) -> tuple[list[ClaimPublic], bool]:
        """The claims, and whether a ready step was held back because of its locks."""
        now = self.clock()
        if self._agent_due(agent_id, now, tuple(sorted(roles))):
            async with self.db.transaction() as session:
                await queries.touch_agent(
                    session, agent_id=agent_id, roles=sorted(roles), token_id=token_id, now=now
                )
        claimed, file_candidates = await self._claim_plain(agent_id, roles, now, limit)
        blocked = False
        if file_candidates and len(claimed) < limit:
            # Some of the best steps declare files: they go out only with their locks,
            # and when those cannot be granted, the steps behind them go instead.
            granted = await self._claim_with_locks(agent_id, roles, now, limit - len(claimed))
            claimed += granted
            blocked = len(granted) < file_candidates
            if len(claimed) < limit:
                more, _ = await self._claim_plain(
                    agent_id, roles, now, limit - len(claimed), skip_files=True
                )
                claimed += more
        if not claimed:
            return [], blocked
        # Most claims need no second query: no dependencies, or their outputs already
        # came with the claim; only the server's own steps need the whole task.
        needs_context = [
            c
            for c in claimed
            if c.id.startswith("_") or (c.depends_on and c.dependency_outputs is None)
        ]
        contexts: dict[tuple[str, str], ClaimContext] = {}
        if needs_context:
            async with self.db.sessions() as session:
                for c in needs_context:
                    contexts[(c.task_id, c.id)] = await claim_context(session, claimed=c)
        claims = [
            claim_public(
                c,
                contexts.get((c.task_id, c.id))
                or ClaimContext(
                    dependencies=c.dependency_outputs or {}, rework_notes=list(c.rework_notes)
                ),
            )
            for c in claimed
        ]
        return claims, blocked

    async def _claim_plain(
        self,
        agent_id: str,
        roles: tuple[str, ...],
        now: datetime,
        limit: int,
        *,
        skip_files: bool = False,
    ) -> tuple[list[ClaimedRow], int]:
        if self.db.is_postgres:
            async with pg_hot.raw_connection(self.db.engine) as conn:
                claimed, file_candidates = await pg_hot.claim(
                    conn,
                    roles=roles,
                    agent_id=agent_id,
                    now=now,
                    limit=limit,
                    skip_files=skip_files,
                )
            self.events_committed(c.task_id for c in claimed)
            return claimed, file_candidates
        async with self.db.transaction() as session:
            claimed, file_candidates = await queries.claim_steps(
                session,
                roles=roles,
                agent_id=agent_id,
                now=now,
                limit=limit,
                with_files=False if skip_files else None,
            )
            await self._log_claims(session, claimed, agent_id, now)
        return claimed, file_candidates

    async def _claim_with_locks(
        self, agent_id: str, roles: tuple[str, ...], now: datetime, limit: int
    ) -> list[ClaimedRow]:
        async with self.db.transaction() as session:
            claimed = await locks.claim_with_locks(
                session, roles=roles, agent_id=agent_id, now=now, limit=limit
            )
            await self._log_claims(session, claimed, agent_id, now, with_locks=True)
        return claimed

    @staticmethod
    async def _log_claims(
        session: AsyncSession,
        claimed: list[ClaimedRow],
        agent_id: str,
        now: datetime,
        *,
        with_locks: bool = False,
    ) -> None:
        events = EventBuffer(now)
        for c in claimed:
            extra = {"locks": c.files} if with_locks else {}
            events.add(
                c.task_id,
                "step.claimed",
                c.id,
                agent_id=agent_id,
                attempt=c.attempt,
                role=c.role,
                **extra,
            )
        await events.flush(session)

    async def claim_waiting(
        self,
        *,
        agent_id: str,
        roles: tuple[str, ...],
        wait: float,
        limit: int = 1,
        token_id: str | None = None,
    ) -> list[ClaimPublic]:
        """Claim, long-polling up to ``wait`` seconds for a step of ``roles``.

        The waiter subscribes before each attempt, so no wake-up can fall between an
        empty claim and the wait. Steps backing off before a retry have no one to
        announce them, so the wait is also cut short when the next one falls due.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        waiter = self.notifier.subscribe(roles)
        claims: list[ClaimPublic] = []
        try:
            while not self.closing:
                waiter.consume()  # this attempt uses any wake received so far
                claims, blocked = await self._claim_many(agent_id, roles, limit, token_id)
                remaining = deadline - loop.time()
                if claims or remaining <= 0 or self.closing:
                    return claims
                async with self.db.sessions() as session:
                    due = await queries.next_ready_time(session, roles=roles, now=self.clock())
                if due is not None:
                    remaining = min(remaining, (due - self.clock()).total_seconds() + 0.005)
                if blocked:
                    # A step waits for file locks, which free up in whatever process
                    # finishes their holder: look again shortly.
                    remaining = min(remaining, LOCK_RECHECK_SECONDS)
                # Another replica may make work ready without a word reaching this one.
                remaining = min(remaining, self.recheck_interval)
                await waiter.wait(remaining)
            return claims
        finally:
            waiter.close()

    def _agent_due(
        self, agent_id: str, now: datetime, roles: tuple[str, ...] | None = None
    ) -> bool:
        """One agent-table write per worker every few seconds, not one per claim — but
        at once when a claim asks for other roles than the last one written."""
        seen_at, seen_roles = self._agents_seen.get(agent_id, (0.0, None))
        changed = roles is not None and seen_roles is not None and roles != seen_roles
        if now.timestamp() - seen_at < 5.0 and not changed:
            return False
        if len(self._agents_seen) > 10_000:  # many short-lived worker ids: start over
            self._agents_seen.clear()
        self._agents_seen[agent_id] = (now.timestamp(), roles or seen_roles)
        return True

    # -- heartbeats and results -------------------------------------------------

    @retry_transient
    async def heartbeat(
        self, *, task_id: str, step_id: str, claim_token: str, agent_id: str | None = None
    ) -> HeartbeatOut:
        """Extend a claim's lease; tell the worker when its task was cancelled."""
        now = self.clock()
        async with self.db.transaction() as session:
            step = await queries.lock_step(session, task_id=task_id, step_id=step_id)
            if step is None:
                raise await missing_step(session, task_id, step_id)
            if step.claim_token != claim_token:
                raise StaleClaim(stale_reason(step))
            if step.status == StepStatus.CANCELLED:
                return HeartbeatOut(lease_expires_at=None, cancelled=True)
            if step.status != StepStatus.CLAIMED:
                raise StaleClaim(stale_reason(step))
            step.lease_expires_at = now + timedelta(seconds=step.lease_seconds)
            if step.holds_locks:
                await locks.extend(
                    session, claim_token=claim_token, expires_at=step.lease_expires_at
                )
            if agent_id and self._agent_due(agent_id, now):
                await queries.agent_seen(session, agent_id=agent_id, now=now)
            return HeartbeatOut(lease_expires_at=step.lease_expires_at, cancelled=False)

    @retry_transient
    async def report_result(self, report: ResultCreate) -> ResultAck:
        """Record one attempt's result and move the task on.

        Fenced by the claim token: only the current claim may report, once. The same
        report sent again gets the stored answer; any other stale report a 409.
        """
        if report.status == "success":
            if self.db.is_postgres and not cycle.is_system_step(report.step_id):
                ack = await self._report_success_postgres(report)
            else:
                ack = await self._report_success(report)
            if ack is not None:
                return ack
        now = self.clock()
        events = EventBuffer(now)
        async with self.db.transaction() as session:
            step = await queries.lock_step(session, task_id=report.task_id, step_id=report.step_id)
            if step is None:
                raise await missing_step(session, report.task_id, report.step_id)
            if step.claim_token != report.claim_token or step.status != StepStatus.CLAIMED:
                earlier = await session.scalar(
                    select(ResultORM).where(ResultORM.claim_token == report.claim_token)
                )
                if earlier is not None and earlier.step_id == step.id:
                    if earlier.status != report.status or earlier.output != report.output:
                        raise Conflict(
                            f"a different result was already reported for this claim of "
                            f"step '{step.id}' (result {earlier.id}); a claim reports once"
                        )
                    return ack_of(earlier)
                if step.claim_token == report.claim_token and step.status == StepStatus.CANCELLED:
                    raise Conflict(f"task '{step.task_id}' was cancelled; the result is not needed")
                raise StaleClaim(stale_reason(step))
            if report.agent_id and step.agent_id and report.agent_id != step.agent_id:
                raise StaleClaim(
                    f"step '{step.id}' is claimed by agent '{step.agent_id}', "
                    f"not '{report.agent_id}'"
                )
            task = await queries.lock_task(session, task_id=step.task_id)
            assert task is not None
            outcome = outcome_of(step, report)
            result = result_row(
                report, step.attempt, step.rework_round, step.agent_id, outcome, now
            )
            # The result goes in first: finishing the task may read this very output.
            session.add(result)
            await session.flush()
            woken = await self._apply_failure(session, task, step, report, now, events)
            await events.flush(session)
            ack = ack_of(result)
        self.wake(woken)
        return ack

    @retry_transient
    async def report_many(self, reports: list[ResultCreate]) -> list[ResultAck | AgentManagerError]:
        """Report several results; each answered as by :meth:`report_result`.

        On PostgreSQL the successes of current claims of work steps are finished
        together in one statement; everything else goes through the one-by-one path.
        """
        answers: dict[int, ResultAck | AgentManagerError] = {}
        if self.db.is_postgres:
            # A claim token repeated in one batch goes once through the statement;
            # its copies then get the stored answer on the one-by-one path.
            seen: set[str] = set()
            fast = []
            for n, r in enumerate(reports):
                if r.status == "success" and not cycle.is_system_step(r.step_id):
                    if r.claim_token not in seen:
                        fast.append((n, r))
                    seen.add(r.claim_token)
            if fast:
                acks = await self._report_successes_postgres([r for _, r in fast])
                for n, r in fast:
                    if r.claim_token in acks:
                        answers[n] = acks[r.claim_token]
        for n, report in enumerate(reports):
            if n not in answers:
                try:
                    answers[n] = await self.report_result(report)
                except AgentManagerError as exc:
                    answers[n] = exc
        return [answers[n] for n in range(len(reports))]

    async def _report_success_postgres(self, report: ResultCreate) -> ResultAck | None:
        """The same one-statement path as a batch, with a batch of one."""
        acks = await self._report_successes_postgres([report])
        return acks.get(report.claim_token)

    async def _report_successes_postgres(self, reports: list[ResultCreate]) -> dict[str, ResultAck]:
        """Finish the current claims among ``reports`` (successes of work steps, claim
        tokens unique) in one statement; acks by claim token, the rest absent."""
        async with pg_hot.raw_connection(self.db.engine) as conn:
            done = await pg_hot.report_successes(conn, reports=reports, now=self.clock())
        by_token = {r.claim_token: r for r in reports}
        self.events_committed(by_token[token].task_id for token in done.acks)
        self.wake(done.ready_roles)  # committed already, whatever the phase change does
        woken: list[str] = []
        for task_id in done.finished_tasks:
            woken += await self.finish_phase(task_id=task_id)
        self.wake(woken)
        return {
            token: ResultAck(
                result_id=result_id,
                task_id=by_token[token].task_id,
                step_id=by_token[token].step_id,
                attempt=attempt,
                outcome="done",
            )
            for token, (result_id, attempt) in done.acks.items()
        }

    @retry_transient
    async def finish_phase(self, *, task_id: str) -> list[str]:
        """Move a running task whose work steps are all done to its next phase.

        Idempotent: a task already moved on is left alone. Called after the report
        that finished the last step, and by the sweep for a crash in between.
        """
        now = self.clock()
        events = EventBuffer(now)
        async with self.db.transaction() as session:
            task = await queries.lock_task(session, task_id=task_id)
            if task is None or task.status != TaskStatus.RUNNING or task.steps_remaining != 0:
                return []
            woken = await cycle.after_work(session, task=task, now=now, events=events)
            await events.flush(session)
        return woken

    async def finish_stalled_phases(self) -> int:
        """The sweep: tasks whose last step finished but whose phase did not change."""
        async with self.db.sessions() as session:
            stalled = await queries.stalled_tasks(session)
        woken: list[str] = []
        for task_id in stalled:
            woken += await self.finish_phase(task_id=task_id)
        self.wake(woken)
        return len(stalled)

    async def _report_success(self, report: ResultCreate) -> ResultAck | None:
        """The hot path: a success from the current claim, in as few statements as
        possible. None when the claim is not current (the caller sorts out why)."""
        now = self.clock()
        events = EventBuffer(now)
        async with self.db.transaction() as session:
            finished = await queries.finish_claim(
                session,
                task_id=report.task_id,
                step_id=report.step_id,
                claim_token=report.claim_token,
                agent_id=report.agent_id,
                now=now,
            )
            if finished is None:
                return None  # the slow path works out why
            result = result_row(
                report, finished.attempt, finished.rework_round, finished.agent_id, "done", now
            )
            session.add(result)
            await session.flush()
            if finished.holds_locks:
                await queries.release_locks(session, claim_tokens=[report.claim_token])
            events.add(
                report.task_id,
                "step.done",
                report.step_id,
                attempt=finished.attempt,
                agent_id=finished.agent_id,
            )
            woken = await cycle.on_step_finished(
                session,
                task_id=report.task_id,
                step_id=report.step_id,
                role=finished.role,
                dependents=finished.dependents,
                output=report.output,
                now=now,
                events=events,
            )
            await events.flush(session)
            ack = ack_of(result)
        self.wake(woken)
        return ack

    async def _apply_failure(
        self,
        session: AsyncSession,
        task: TaskGraphORM,
        step: TaskStepORM,
        report: ResultCreate,
        now: datetime,
        events: EventBuffer,
    ) -> list[str]:
        # Successes of the current claim all take the fast path; only failures get here.
        assert report.status == "failure"
        if step.holds_locks:
            await queries.release_locks(session, claim_tokens=[report.claim_token])
            step.holds_locks = False
        step.lease_expires_at = None
        step.updated_at = now
        step.last_error = report.error or "the worker reported a failure without an error"
        _, woken = await self._retry_or_fail(
            session,
            task,
            step,
            reason=step.last_error,
            retryable=report.retryable,
            now=now,
            events=events,
        )
        return woken

    async def _retry_or_fail(
        self,
        session: AsyncSession,
        task: TaskGraphORM,
        step: TaskStepORM,
        *,
        reason: str,
        retryable: bool,
        now: datetime,
        events: EventBuffer,
        backoff: bool = True,
    ) -> tuple[str, list[str]]:
        if retryable and step.attempt < step.max_attempts:
            delay = self.retry_policy.delay(step.attempt) if backoff else 0.0
            step.attempt += 1
            step.status = StepStatus.READY
            step.ready_at = now + timedelta(seconds=delay)
            step.claim_token = None
            step.agent_id = None
            events.add(
                task.id,
                "step.retry_scheduled",
                step.id,
                attempt=step.attempt,
                delay_seconds=round(delay, 3),
                reason=reason,
            )
            return "retry_scheduled", [step.role]
        step.status = StepStatus.FAILED
        events.add(task.id, "step.failed", step.id, attempt=step.attempt, reason=reason)
        await cycle.fail_task(
            session,
            task=task,
            reason=f"step '{step.id}' failed: {reason}",
            now=now,
            events=events,
            failed_step=step.id,
        )
        return "failed", []

    # -- leases -------------------------------------------------------------------

    @retry_transient
    async def reap_expired_leases(self, *, limit: int = 100) -> int:
        """Return lapsed claims to ready (attempt + 1), or fail them when spent."""
        now = self.clock()
        events = EventBuffer(now)
        woken: list[str] = []
        async with self.db.transaction() as session:
            expired = await queries.expired_claims(session, now=now, limit=limit)
            for step in expired:
                task = await queries.lock_task(session, task_id=step.task_id)
                assert task is not None
                # An earlier step of this batch may have failed the task, and with it
                # cancelled this one.
                if step.status != StepStatus.CLAIMED or TaskStatus(task.status).is_final:
                    continue
                await queries.release_locks(session, claim_tokens=[step.claim_token or ""])
                events.add(
                    task.id,
                    "step.lease_expired",
                    step.id,
                    attempt=step.attempt,
                    agent_id=step.agent_id,
                )
                step.lease_expires_at = None
                _, roles = await self._retry_or_fail(
                    session,
                    task,
                    step,
                    reason=f"lease expired (agent {step.agent_id})",
                    retryable=True,
                    now=now,
                    events=events,
                    backoff=False,
                )
                woken += roles
            await events.flush(session)
        self.wake(woken)
        return len(expired)

    # -- cancelling ---------------------------------------------------------------

    @retry_transient
    async def cancel_task(self, *, task_id: str, reason: str = "cancelled by request") -> str:
        """Cancel a task and every open step. Cancelling a finished task is a no-op."""
        now = self.clock()
        events = EventBuffer(now)
        async with self.db.transaction() as session:
            task = await queries.lock_task(session, task_id=task_id)
            if task is None:
                raise NotFound(f"no task '{task_id}'")
            if TaskStatus(task.status).is_final:
                return task.status
            await cycle.close_open_steps(session, task=task, now=now, events=events, reason=reason)
            task.status = TaskStatus.CANCELLED
            task.error = reason
            task.finished_at = task.updated_at = now
            events.add(task.id, "task.cancelled", reason=reason)
            await events.flush(session)
            return task.status

    # -- helpers ------------------------------------------------------------------

    def begin_shutdown(self) -> None:
        """End every long-poll and event stream now; the process is stopping."""
        self.closing = True
        self.notifier.wake_all()
        self.task_signals.fire_all()

    @property
    def recheck_interval(self) -> float:
        """How long a waiter goes without looking at the database itself."""
        return self.bus.recheck_interval if self.bus is not None else self._recheck_interval

    def wake(self, roles: Iterable[str]) -> None:
        """Steps of ``roles`` became ready: wake as many claimers, here and on other replicas."""
        counts = Counter(roles)
        for role, n in counts.items():
            self.notifier.notify([role], n)
        if counts and self.bus is not None:
            self.bus.publish(roles=counts)

    def events_committed(self, task_ids: Iterable[str]) -> None:
        """New events of ``task_ids`` are in the database: wake their event streams."""
        tasks = set(task_ids)
        if not tasks:
            return
        self.task_signals.fire(tasks)
        if self.bus is not None:
            self.bus.publish(tasks=tasks)

    def on_remote_notice(self, roles: Mapping[str, int], task_ids: Iterable[str]) -> None:
        """Another replica made steps ready or wrote events (see core/bus.py)."""
        for role, n in roles.items():
            self.notifier.notify([role], n)
        self.task_signals.fire(task_ids)


__all__ = ["PLAN_STEP_ID", "AgentManager"]
