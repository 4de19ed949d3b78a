"""The server's own agents: planner, auditor and synthesizer (and optionally workers).

:class:`EmbeddedRunner` claims steps of its roles through the same atomic claim path
as any external worker, so several server processes never run the same step, and a
step whose server dies is handed on when its lease lapses. It heartbeats while an
agent runs, stops the agent when the task is cancelled, and reports the outcome as
an ordinary result. With ``AM_EMBEDDED_AGENTS=false`` nothing here runs and external
workers can serve the reserved roles instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent_manager.agents import (
    AuditorAgent,
    Planner,
    StepOutcome,
    Synthesizer,
    WorkerAgent,
)
from agent_manager.client.locking import StepLocks
from agent_manager.core.manager import AgentManager
from agent_manager.errors import AgentManagerError
from agent_manager.llm import LLMClient
from agent_manager.logs import bind_context
from agent_manager.models import AuditReport, Usage
from agent_manager.retry import exponential_backoff
from agent_manager.schemas import ClaimPublic, ResultCreate

if TYPE_CHECKING:
    from agent_manager.metrics import Metrics

log = logging.getLogger(__name__)

SYSTEM_ROLES = ("planner", "auditor", "synthesizer")

Handler = Callable[[ClaimPublic], Awaitable[StepOutcome]]


class EmbeddedRunner:
    """Serves ``roles`` inside the server process with the built-in agents."""

    def __init__(
        self,
        manager: AgentManager,
        llm: LLMClient,
        *,
        work_roles: list[str] | None = None,
        planner_roles: list[str] | None = None,
        serve_system_roles: bool = True,
        concurrency: int = 4,
        workspace: Path = Path("./workspace"),
        lock_wait: float = 10.0,
        max_iterations: int = 8,
        poll_seconds: float = 30.0,
        metrics: Metrics | None = None,
    ) -> None:
        self.manager = manager
        self.llm = llm
        self.metrics = metrics
        self.workspace = workspace
        self.lock_wait = lock_wait
        self.planner_roles = planner_roles or ["analyst", "researcher", "writer"]
        self.work_roles = list(work_roles or [])
        self.roles = tuple([*(SYSTEM_ROLES if serve_system_roles else ()), *self.work_roles])
        self.concurrency = concurrency
        self.poll_seconds = poll_seconds
        self.agent_id = f"embedded-{socket.gethostname()}-{os.getpid()}"
        self.worker = WorkerAgent(llm, max_iterations=max_iterations)
        self.planner = Planner(llm)
        self.auditor = AuditorAgent(llm)
        self.synthesizer = Synthesizer(llm)
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()

    # -- life cycle -------------------------------------------------------------

    def start(self) -> None:
        if not self.roles:
            return
        self.workspace.mkdir(parents=True, exist_ok=True)
        self._tasks = [
            asyncio.create_task(self._loop(n), name=f"embedded-{n}")
            for n in range(self.concurrency)
        ]
        log.info(
            "embedded agents serving %s with %s (%s)",
            ", ".join(self.roles),
            self.llm.name,
            self.llm.model,
        )

    async def stop(self, grace: float = 2.0) -> None:
        """Stop claiming; a step still running after ``grace`` seconds is cancelled and
        handed back (ready again). Call ``manager.begin_shutdown()`` first, so idle
        slots leave their long-polls at once instead of being cancelled mid-query."""
        self._stopping.set()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=grace)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    async def _loop(self, slot: int) -> None:
        failures = 0
        # The server stopping (manager.closing) ends the loop before stop() is called.
        while not self._stopping.is_set() and not self.manager.closing:
            try:
                started = time.monotonic()
                claims = await self.manager.claim_waiting(
                    agent_id=self.agent_id, roles=self.roles, wait=self.poll_seconds
                )
                failures = 0
                if self.metrics is not None:
                    roles = [c.step.role for c in claims]
                    self.metrics.observe_claim(self.roles, roles, time.monotonic() - started)
            except Exception:  # the database may be away; back off and try again
                failures += 1
                log.warning("embedded runner %s could not claim", slot, exc_info=True)
                await asyncio.sleep(exponential_backoff(failures, base=0.5, maximum=15))
                continue
            for claim in claims:
                if self._stopping.is_set() or self.manager.closing:
                    await self._hand_back(claim)  # claimed just as the server stops
                else:
                    await self.run_step(claim)

    # -- one step -----------------------------------------------------------------

    async def run_step(self, claim: ClaimPublic) -> None:
        """Run one claimed step with heartbeats, then report its outcome."""
        # Everything logged for the step (the agent, its heartbeats) names it.
        with bind_context(task_id=claim.task_id, step_id=claim.step.id, agent_id=self.agent_id):
            await self._run_step(claim)

    async def _run_step(self, claim: ClaimPublic) -> None:
        work = asyncio.create_task(self._handle(claim))
        lost = asyncio.Event()  # set when the task was cancelled or the claim lost
        beat = asyncio.create_task(self._heartbeat(claim, work, lost))
        try:
            outcome = await work
        except asyncio.CancelledError:
            if lost.is_set() and not self._stopping.is_set():
                return  # nothing to report: the server no longer wants this result
            if self._stopping.is_set():
                beat.cancel()
                await self._hand_back(claim)
            raise
        except Exception as exc:  # a bug in an agent must not take the slot down
            log.exception("step %s/%s crashed", claim.task_id, claim.step.id)
            outcome = StepOutcome(
                status="failure", error=f"{type(exc).__name__}: {exc}", retryable=True
            )
        finally:
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
        await self._report(claim, outcome)

    async def _handle(self, claim: ClaimPublic) -> StepOutcome:
        handler = {
            "planner": self._plan,
            "auditor": self._audit,
            "synthesizer": self._synthesize,
        }.get(claim.step.role)
        if handler is None or not claim.step.id.startswith("_"):
            return await self.worker.run(claim, workspace=self.workspace, lock=self._locks(claim))
        try:
            return await handler(claim)
        except AgentManagerError as exc:
            return StepOutcome(
                status="failure",
                error=f"{claim.step.role}: {exc.message}",
                retryable=bool(getattr(exc, "retryable", False)),
            )

    async def _plan(self, claim: ClaimPublic) -> StepOutcome:
        graph, usage = await self.planner.plan(
            goal=claim.goal, roles=self._plannable_roles(claim), task_id=claim.task_id
        )
        return StepOutcome(status="success", output=graph.model_dump(mode="json"), usage=usage)

    def _plannable_roles(self, claim: ClaimPublic) -> list[str]:
        roles = claim.context.extra.get("options", {}).get("roles")
        return list(roles) if roles else self.planner_roles

    async def _audit(self, claim: ClaimPublic) -> StepOutcome:
        extra = claim.context.extra
        report, usage = await self.auditor.review(
            goal=claim.goal,
            plan=extra.get("plan", []),
            outputs=claim.context.dependencies,
            rework_round=int(extra.get("rework_round", 0)),
            task_id=claim.task_id,
        )
        return StepOutcome(status="success", output=report.model_dump(mode="json"), usage=usage)

    async def _synthesize(self, claim: ClaimPublic) -> StepOutcome:
        extra = claim.context.extra
        audits = [AuditReport.model_validate(a["report"]) for a in extra.get("audits", [])]
        synthesis, usage = await self.synthesizer.synthesize(
            goal=claim.goal,
            plan=extra.get("plan", []),
            outputs=claim.context.dependencies,
            audits=audits,
            unresolved=extra.get("unresolved", []),
            task_id=claim.task_id,
        )
        return StepOutcome(status="success", output=synthesis.model_dump(mode="json"), usage=usage)

    async def _heartbeat(
        self, claim: ClaimPublic, work: asyncio.Task[Any], lost: asyncio.Event
    ) -> None:
        interval = max(0.2, claim.lease_seconds / 3)
        while True:
            await asyncio.sleep(interval)
            try:
                beat = await self.manager.heartbeat(
                    task_id=claim.task_id,
                    step_id=claim.step.id,
                    claim_token=claim.claim_token,
                    agent_id=self.agent_id,
                )
            except AgentManagerError as exc:  # lost the claim: stop working on it
                log.warning("step %s/%s: %s", claim.task_id, claim.step.id, exc.message)
                lost.set()
                work.cancel()
                return
            except Exception:  # database hiccup: the lease may still hold; keep going
                log.warning("heartbeat failed", exc_info=True)
                continue
            if beat.cancelled:
                lost.set()
                work.cancel()
                return

    def _locks(self, claim: ClaimPublic) -> StepLocks:
        """The same locks an external worker's tools take: OS locks on the real files,
        and for an undeclared path an ad-hoc lock from the manager first."""

        return StepLocks.for_claim(
            claim, self.workspace, self.manager.acquire_lock, wait=self.lock_wait
        )

    async def _hand_back(self, claim: ClaimPublic) -> None:
        """The server is stopping: make the step ready again now, not when its lease
        lapses, so another replica (or this one, restarted) picks it up at once."""
        try:
            async with asyncio.timeout(5):
                await self.manager.release_claim(
                    task_id=claim.task_id,
                    step_id=claim.step.id,
                    claim_token=claim.claim_token,
                    reason="the server is shutting down",
                )
            log.info("step handed back: the server is shutting down")
        except Exception:  # its lease will hand it on instead
            log.warning("could not hand the step back; its lease will", exc_info=True)

    async def _report(self, claim: ClaimPublic, outcome: StepOutcome) -> None:
        report = ResultCreate(
            task_id=claim.task_id,
            step_id=claim.step.id,
            claim_token=claim.claim_token,
            agent_id=self.agent_id,
            status=outcome.status,
            output=outcome.output,
            ra_history=outcome.ra_history,
            usage=outcome.usage or Usage(),
            error=outcome.error,
            retryable=outcome.retryable,
        )
        for attempt in range(1, 6):
            try:
                ack = await self.manager.report_result(report)
            except AgentManagerError as exc:  # stale or cancelled: nothing to retry
                log.warning("step %s/%s: %s", claim.task_id, claim.step.id, exc.message)
                if self.metrics is not None:
                    self.metrics.observe_result(report.status, "rejected")
                return
            except Exception:
                log.warning("report failed (attempt %s)", attempt, exc_info=True)
                await asyncio.sleep(exponential_backoff(attempt, base=0.5, maximum=10))
            else:
                if self.metrics is not None:
                    self.metrics.observe_result(report.status, ack.outcome)
                return
