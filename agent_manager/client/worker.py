"""The worker loop: claim steps over HTTP, run their role's handler, report the outcome.

    worker = Worker(client, "w1", concurrency=4)

    @worker.role("analyst")
    async def analyse(claim: ClaimPublic) -> str:
        return f"analysed: {claim.step.instruction}"

    await worker.run()          # until worker.stop(), SIGTERM/SIGINT, or (burst) no work

One :meth:`Worker.run`, one :meth:`Worker.stop` (it only sets an event). Inside:

* the claim loop takes as many free slots of a semaphore as it can and long-polls
  ``POST /v1/claims`` for that many steps; an unreachable server is retried with
  exponential backoff and jitter, so the worker rides out a server restart;
* each step runs its handler beside a heartbeat task (every ``lease/3``); when the
  heartbeat learns that the task was cancelled or the claim is lost, the handler is
  cancelled and nothing is reported;
* the outcome is reported with retries until the server acknowledges it; a ``409``
  means the server no longer wants it, and the worker lets it go;
* stopping is staged: claiming ends at once, running steps get ``grace_seconds`` to
  finish, then their handlers are cancelled and their steps handed back to the server
  (ready again at once, the attempt not spent; if that fails, reported as retryable
  failures, "worker shutting down"), and reports still unsent after ``report_seconds``
  more are abandoned to their leases. A second signal skips the rest of the grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic_core import PydanticSerializationError, to_jsonable_python

from agent_manager.agents import StepOutcome, WorkerAgent
from agent_manager.client.errors import (
    AuthError,
    ClientError,
    Conflict,
    InvalidRequest,
    NonRetryable,
    NotFound,
    ServerUnavailable,
)
from agent_manager.client.http import AgentManagerClient
from agent_manager.client.locking import StepLocks
from agent_manager.logs import bind_context
from agent_manager.retry import RetryPolicy
from agent_manager.schemas import ClaimPublic, ResultAck, ResultCreate

log = logging.getLogger(__name__)

#: A role handler: the claimed step in; a :class:`StepOutcome`, or any JSON-able value
#: (the successful output), out. An exception fails the attempt (retryably, unless it
#: is :class:`NonRetryable`). Plain functions run in a thread.
Handler = Callable[[ClaimPublic], Awaitable[Any]] | Callable[[ClaimPublic], Any]
H = TypeVar("H", bound=Handler)

SHUTTING_DOWN = "worker shutting down"
#: Waits between tries while the server is unreachable (claims and reports).
DEFAULT_BACKOFF = RetryPolicy(base=0.5, factor=2.0, maximum=5.0, jitter=0.5)


@dataclass
class WorkerStats:
    """What this worker has done so far."""

    claimed: int = 0
    succeeded: int = 0
    failed: int = 0
    dropped: int = 0  # cancelled task or lost claim: nothing reported
    released: int = 0  # handed back unfinished when the worker stopped
    unreported: int = 0  # the server refused the report, or stopping cut it short


class _Running:
    """One claimed step in this worker: its handler task and why it must end early."""

    def __init__(self, claim: ClaimPublic) -> None:
        self.claim = claim
        self.key = f"{claim.task_id}/{claim.step.id}"
        self.handler: asyncio.Task[StepOutcome] | None = None
        self.aborted = False

    def abort(self) -> None:
        """The grace period is over: cancel the handler (its outcome becomes a retry)."""
        self.aborted = True
        if self.handler is not None:
            self.handler.cancel()


class Worker:
    """Claims and runs steps of ``roles`` (default: the roles with a handler).

    ``default_handler`` serves roles without their own handler, e.g. the built-in
    :class:`~agent_manager.agents.WorkerAgent` (pass the agent, or any handler).
    ``burst=True`` makes :meth:`run` return once a claim comes back empty while nothing
    runs. ``install_signal_handlers=False`` leaves SIGTERM/SIGINT alone (tests, or an
    application that calls :meth:`stop` itself).
    """

    def __init__(
        self,
        client: AgentManagerClient,
        agent_id: str,
        roles: Sequence[str] | None = None,
        *,
        concurrency: int = 1,
        workspace: Path = Path("workspace"),
        poll_wait: float = 20.0,
        burst: bool = False,
        grace_seconds: float = 30.0,
        install_signal_handlers: bool = True,
        default_handler: Handler | WorkerAgent | None = None,
        backoff: RetryPolicy = DEFAULT_BACKOFF,
        report_seconds: float = 10.0,
    ) -> None:
        if not 1 <= concurrency <= 100:
            raise ValueError("concurrency must be between 1 and 100")
        self.client = client
        self.agent_id = agent_id
        self.roles = list(roles) if roles else None
        self.concurrency = concurrency
        self.workspace = workspace
        self.poll_wait = poll_wait
        self.burst = burst
        self.grace_seconds = grace_seconds
        self.install_signal_handlers = install_signal_handlers
        if isinstance(default_handler, WorkerAgent):
            default_handler = agent_handler(default_handler, workspace=workspace, client=client)
        self.default_handler = default_handler
        self.backoff = backoff
        self.report_seconds = report_seconds
        self.stats = WorkerStats()
        self._handlers: dict[str, Handler] = {}
        self._steps: dict[asyncio.Task[None], _Running] = {}
        self._slots = asyncio.Semaphore(concurrency)
        self._stop = asyncio.Event()
        self._hurry = asyncio.Event()  # a second signal: no more grace

    # -- the public surface ------------------------------------------------------------

    def role(self, name: str) -> Callable[[H], H]:
        """Register the decorated function as the handler of role ``name``."""

        def register(fn: H) -> H:
            self._handlers[name] = fn
            return fn

        return register

    def stop(self) -> None:
        """Ask :meth:`run` to stop: no more claims, running steps get the grace period."""
        self._stop.set()

    async def run(self) -> None:
        """Claim and run steps until stopped (or, in burst mode, until no work is left)."""
        roles = self._roles_to_claim()
        self.workspace.mkdir(parents=True, exist_ok=True)
        restore_signals = self._install_signals() if self.install_signal_handlers else None
        log.info(
            "worker %s: serving %s on %s (concurrency %d%s)",
            self.agent_id,
            ", ".join(roles) if roles else "the token's roles",
            self.client.base_url,
            self.concurrency,
            ", burst" if self.burst else "",
        )
        claimer = asyncio.create_task(self._claim_loop(roles), name=f"{self.agent_id}-claims")
        stopping = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait({claimer, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            claimer.cancel()  # stop claiming at once, even in the middle of a long-poll
            await asyncio.wait({claimer})
            try:
                await self._shutdown()
            finally:
                if restore_signals is not None:
                    restore_signals()
        fatal = None if claimer.cancelled() else claimer.exception()
        if fatal is not None:
            raise fatal  # the token or the roles are wrong, …
        log.info("worker %s: stopped (%s)", self.agent_id, self.stats)

    # -- claiming --------------------------------------------------------------------

    def _roles_to_claim(self) -> list[str] | None:
        roles = self.roles or list(self._handlers) or None
        if self.default_handler is None:
            if roles is None:
                raise ValueError(
                    "no roles to serve: register a handler with @worker.role('analyst') "
                    "or give a default handler (the built-in agent)"
                )
            missing = [r for r in roles if r not in self._handlers]
            if missing:
                raise ValueError(
                    f"role '{missing[0]}' has no handler: register one with "
                    f"@worker.role('{missing[0]}') or give a default handler"
                )
        return roles

    async def _claim_loop(self, roles: list[str] | None) -> None:
        failures = 0
        while True:
            await self._slots.acquire()
            wanted = 1
            while wanted < self.concurrency and not self._slots.locked():
                await self._slots.acquire()  # free, so this does not wait
                wanted += 1
            try:
                claims = await self.client.claim(
                    self.agent_id, roles, max=wanted, wait=self.poll_wait
                )
            except (AuthError, InvalidRequest, NotFound):
                self._release(wanted)
                raise  # the token or the roles are wrong: retrying cannot help
            except ClientError as exc:
                self._release(wanted)
                failures += 1
                delay = self.backoff.delay(failures)
                log.warning("claim failed (%s); retrying in %.1fs", exc.message, delay)
                await asyncio.sleep(delay)
                continue
            except BaseException:
                self._release(wanted)
                raise
            if failures:
                log.info("server %s reachable again", self.client.base_url)
                failures = 0
            self._release(wanted - len(claims))
            for claim in claims:
                self._start(claim)
            if not claims and self.burst and not self._steps:
                log.info("worker %s: no work left (burst mode)", self.agent_id)
                return

    def _release(self, n: int) -> None:
        for _ in range(n):
            self._slots.release()

    def _start(self, claim: ClaimPublic) -> None:
        running = _Running(claim)
        # The step's task (its handler, heartbeats, report) logs with the step's ids.
        with bind_context(task_id=claim.task_id, step_id=claim.step.id, agent_id=self.agent_id):
            task = asyncio.create_task(self._process(running), name=running.key)
        self._steps[task] = running
        self.stats.claimed += 1
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[None]) -> None:
        running = self._steps.pop(task)
        self._slots.release()
        if not task.cancelled() and task.exception() is not None:
            log.error("step %s crashed", running.key, exc_info=task.exception())

    # -- one step ----------------------------------------------------------------------

    async def _process(self, running: _Running) -> None:
        claim = running.claim
        started = time.monotonic()
        log.info(
            "step %s started (role %s, attempt %d)",
            running.key,
            claim.step.role,
            claim.step.attempt,
        )
        handler = running.handler = asyncio.create_task(self._invoke(claim))
        if running.aborted:
            handler.cancel()
        beat = asyncio.create_task(self._heartbeat(claim))
        try:
            await asyncio.wait({handler, beat}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            beat.cancel()
            if not handler.done() and not beat.done():
                handler.cancel()  # we are being cancelled ourselves
        await asyncio.wait({beat})  # no heartbeat may overlap the report
        if not handler.done():  # the heartbeat ended first: the server wants no result
            reason = "heartbeat crashed" if beat.exception() is not None else beat.result()
            if beat.exception() is not None:
                log.error("heartbeat of %s crashed", running.key, exc_info=beat.exception())
            handler.cancel()
            await asyncio.wait({handler})
            self.stats.dropped += 1
            log.info("step %s dropped after %.2fs: %s", running.key, _since(started), reason)
            return
        if handler.cancelled() and running.aborted and await self._hand_back(running):
            log.info(
                "step %s handed back after %.2fs: worker stopping", running.key, _since(started)
            )
            return
        if handler.cancelled():  # by abort(), or by the handler's own doing
            error = SHUTTING_DOWN if running.aborted else "the handler was cancelled"
            outcome = StepOutcome(status="failure", error=error, retryable=True)
        else:
            outcome = handler.result()
        ack = await self._report(running, outcome)
        if ack is None:
            self.stats.unreported += 1
            return
        if outcome.status == "success":
            self.stats.succeeded += 1
            log.info("step %s finished in %.2fs: success", running.key, _since(started))
        else:
            self.stats.failed += 1
            log.info(
                "step %s finished in %.2fs: failure (%s; %s): %s",
                running.key,
                _since(started),
                "retryable" if outcome.retryable else "final",
                ack.outcome,
                outcome.error,
            )

    async def _hand_back(self, running: _Running) -> bool:
        """Release a step this stopping worker will not finish, so another worker gets
        it at once without spending an attempt. False when that did not work."""
        claim = running.claim
        try:
            released = await self.client.release(
                task_id=claim.task_id,
                step_id=claim.step.id,
                claim_token=claim.claim_token,
                agent_id=self.agent_id,
            )
        except ClientError as exc:
            log.warning("could not hand back %s (%s); reporting it instead", running.key, exc)
            return False
        if released:
            self.stats.released += 1
        return released

    async def _invoke(self, claim: ClaimPublic) -> StepOutcome:
        """Run the role's handler; whatever it does, an outcome comes back."""
        handler = self._handlers.get(claim.step.role, self.default_handler)
        if handler is None:  # the token let us claim a role we have no handler for
            return StepOutcome(
                status="failure",
                error=f"worker '{self.agent_id}' has no handler for role '{claim.step.role}'",
                retryable=True,
            )
        try:
            if inspect.iscoroutinefunction(handler):
                value = await handler(claim)
            else:
                value = await asyncio.to_thread(handler, claim)
                if inspect.isawaitable(value):
                    value = await value
        except NonRetryable as exc:
            return StepOutcome(status="failure", error=_describe(exc), retryable=False)
        except Exception as exc:
            log.warning("step %s/%s raised", claim.task_id, claim.step.id, exc_info=True)
            return StepOutcome(status="failure", error=_describe(exc), retryable=True)
        outcome = (
            value if isinstance(value, StepOutcome) else StepOutcome(status="success", output=value)
        )
        try:
            to_jsonable_python(outcome.output)
        except (PydanticSerializationError, TypeError, ValueError) as exc:
            return StepOutcome(
                status="failure",
                error=f"the handler's output cannot be sent as JSON: {exc}",
                retryable=False,
            )
        return outcome

    async def _heartbeat(self, claim: ClaimPublic) -> str:
        """Keep the lease alive; return why the step must stop (cancelled, claim lost)."""
        interval = max(0.2, claim.lease_seconds / 3)
        while True:
            await asyncio.sleep(interval)
            try:
                beat = await self.client.heartbeat(
                    task_id=claim.task_id,
                    step_id=claim.step.id,
                    claim_token=claim.claim_token,
                    agent_id=self.agent_id,
                    timeout=max(2.0, claim.lease_seconds / 2),
                )
            except (Conflict, NotFound) as exc:
                return f"claim lost ({exc.message})"
            except ClientError as exc:  # the lease may still hold: keep trying
                log.warning("heartbeat of %s/%s failed: %s", claim.task_id, claim.step.id, exc)
                continue
            if beat.cancelled:
                return "task cancelled"

    async def _report(self, running: _Running, outcome: StepOutcome) -> ResultAck | None:
        """Report until acknowledged; ``None`` when the server does not want it."""
        claim = running.claim
        report = ResultCreate(
            task_id=claim.task_id,
            step_id=claim.step.id,
            claim_token=claim.claim_token,
            agent_id=self.agent_id,
            status=outcome.status,
            output=outcome.output,
            ra_history=outcome.ra_history,
            usage=outcome.usage,
            error=outcome.error,
            retryable=outcome.retryable,
        )
        failures = 0
        while True:
            try:
                return await self.client.report(report)
            except (Conflict, NotFound) as exc:
                log.warning("step %s: result not accepted: %s", running.key, exc.message)
                return None
            except InvalidRequest as exc:
                if report.status == "failure":
                    log.error("step %s: report refused: %s", running.key, exc.message)
                    return None
                # e.g. an output over the server's size limit: fail this attempt instead
                report = report.model_copy(
                    update={
                        "status": "failure",
                        "output": None,
                        "error": f"the server refused the result: {exc.message}",
                        "retryable": True,
                    }
                )
            except (ServerUnavailable, ClientError) as exc:
                failures += 1
                # Never wait longer than a heartbeat would: once the server is back, the
                # report should reach it before the lease lapses there.
                delay = min(self.backoff.delay(failures), max(0.2, claim.lease_seconds / 3))
                log.warning(
                    "step %s: report failed (%s); retrying in %.1fs", running.key, exc, delay
                )
                await asyncio.sleep(delay)

    # -- stopping --------------------------------------------------------------------

    async def _shutdown(self) -> None:
        if not self._steps:
            return
        log.info(
            "worker %s: stopping; %d step(s) running, waiting up to %gs",
            self.agent_id,
            len(self._steps),
            self.grace_seconds,
        )
        await self._wait_for_steps(self.grace_seconds)
        if self._steps:
            log.warning(
                "worker %s: grace period over; cancelling %d step(s)",
                self.agent_id,
                len(self._steps),
            )
            for running in list(self._steps.values()):
                running.abort()
            await self._wait_for_steps(self.report_seconds, hurry=False)
        if self._steps:  # reports that could not get through: leases will hand them on
            for task in list(self._steps):
                task.cancel()
            self.stats.unreported += len(self._steps)
            await asyncio.wait(set(self._steps))

    async def _wait_for_steps(self, timeout: float, *, hurry: bool = True) -> None:
        waiters: set[asyncio.Future[Any]] = {asyncio.ensure_future(asyncio.wait(set(self._steps)))}
        if hurry:
            waiters.add(asyncio.ensure_future(self._hurry.wait()))
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()  # cancels the waiting, not the steps

    def _install_signals(self) -> Callable[[], None]:
        loop = asyncio.get_running_loop()

        def on_signal(signum: int) -> None:
            name = signal.Signals(signum).name
            if self._stop.is_set():
                log.warning("%s again: cancelling running steps now", name)
                self._hurry.set()
            else:
                log.info("%s: stopping (running steps get %gs)", name, self.grace_seconds)
                self.stop()

        restore: list[Callable[[], Any]] = []
        for signum in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(signum, on_signal, signum)
                restore.append(functools.partial(loop.remove_signal_handler, signum))
            except NotImplementedError:  # Windows: no add_signal_handler

                def forward(s: int, _frame: Any) -> None:
                    loop.call_soon_threadsafe(on_signal, s)

                previous = signal.signal(signum, forward)
                restore.append(functools.partial(signal.signal, signum, previous))

        def restore_all() -> None:
            for undo in restore:
                with contextlib.suppress(Exception):
                    undo()

        return restore_all


def agent_handler(
    agent: WorkerAgent,
    *,
    workspace: Path,
    client: AgentManagerClient | None = None,
    lock_wait: float = 10.0,
) -> Handler:
    """The built-in reasoning–acting agent as a role handler.

    Its file tools run under :class:`StepLocks`: OS locks on the real files, and for a
    path the step did not declare, an ad-hoc server lock first (through ``client``).
    """

    async def run_agent(claim: ClaimPublic) -> StepOutcome:
        locks = StepLocks.for_claim(
            claim, workspace, client.lock if client is not None else None, wait=lock_wait
        )
        return await agent.run(claim, workspace=workspace, lock=locks)

    return run_agent


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _since(started: float) -> float:
    return time.monotonic() - started


__all__ = ["DEFAULT_BACKOFF", "SHUTTING_DOWN", "Handler", "Worker", "WorkerStats", "agent_handler"]
