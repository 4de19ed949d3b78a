"""Prometheus metrics of one server: ``GET /metrics``.

Each app has its own :class:`Metrics` (its own ``CollectorRegistry``), kept on
``app.state.metrics`` and handed explicitly to what counts: the work routes (claims,
results), the lease reaper, the embedded runner and its LLM client. The task cycle
(audits, rework) hears of it through :data:`agent_manager.core.cycle.cycle_observer`,
which :class:`MetricsMiddleware` sets for every request and for the app's lifespan
(and so for the background tasks the lifespan starts).

Counters and histograms are this process's; ``am_steps`` and ``am_tasks`` are read from
the database at scrape time and so are the same on every replica (aggregate them with
``max``, not ``sum``). No label carries a task or step id.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine, Iterable
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder
from sqlalchemy import func, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agent_manager import __version__
from agent_manager.core.cycle import cycle_observer
from agent_manager.db.engine import Database
from agent_manager.db.tables import TaskGraphORM, TaskStepORM
from agent_manager.llm.base import CallContext, LLMClient, LLMResponse, T
from agent_manager.llm.base import Message as ChatMessage
from agent_manager.models import StepStatus, TaskStatus, Usage

log = logging.getLogger(__name__)

#: The role label of empty claims for roles no step has.
OTHER_ROLE = "other"
R = TypeVar("R")

#: A scrape gives the database this long to count the steps.
DATABASE_TIMEOUT = 5.0
# Work that outlived its wait (see wait_uncancelled), kept referenced until it ends.
_STRAGGLERS: set[asyncio.Task[Any]] = set()

_HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_WAIT_BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 20, 30, 60)
_LLM_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class Metrics:
    """The server's metrics, in a registry of their own."""

    def __init__(self) -> None:
        self.known_roles: set[str] = set()
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        Gauge("am_build_info", "The server's version.", ["version"], registry=r).labels(
            __version__
        ).set(1)
        self.steps = Gauge(
            "am_steps",
            "Steps in the database by status and role (counted at scrape time).",
            ["status", "role"],
            registry=r,
        )
        self.tasks = Gauge(
            "am_tasks",
            "Tasks in the database by status (counted at scrape time).",
            ["status"],
            registry=r,
        )
        self.database_up = Gauge(
            "am_database_up", "1 if the database answered the last scrape's count.", registry=r
        )
        self.claims = Counter(
            "am_claims",
            "Claim answers: one per step handed out (outcome=claimed, by the step's role), "
            "and one per role asked for when a claim came back empty (outcome=empty).",
            ["role", "outcome"],
            registry=r,
        )
        self.claim_wait = Histogram(
            "am_claim_wait_seconds",
            "How long a claim (long-poll) took before it got a step or came back empty.",
            ["outcome"],
            buckets=_WAIT_BUCKETS,
            registry=r,
        )
        self.results = Counter(
            "am_results",
            "Reported results: status success|failure, outcome done|retry_scheduled|failed, "
            "or rejected (a stale or refused report).",
            ["status", "outcome"],
            registry=r,
        )
        self.lease_expiries = Counter(
            "am_lease_expiries",
            "Claims whose lease lapsed without a heartbeat, found by this server's reaper.",
            registry=r,
        )
        self.audits = Counter(
            "am_audits",
            "Audit reports applied, by outcome passed|failed.",
            ["outcome"],
            registry=r,
        )
        self.rework_rounds = Counter(
            "am_rework_rounds", "Rework rounds started after a failed audit.", registry=r
        )
        self.reworked_steps = Counter(
            "am_reworked_steps",
            "Steps reset by rework rounds (flagged and downstream).",
            registry=r,
        )
        self.llm_tokens = Counter(
            "am_llm_tokens",
            "Tokens used by this process's agents, by model and kind prompt|completion.",
            ["model", "kind"],
            registry=r,
        )
        self.llm_seconds = Histogram(
            "am_llm_call_seconds",
            "Latency of one structured LLM call (its retries included), by model and "
            "outcome ok|error|cancelled.",
            ["model", "outcome"],
            buckets=_LLM_BUCKETS,
            registry=r,
        )
        self.http_seconds = Histogram(
            "am_http_request_duration_seconds",
            "HTTP request latency by method, route template and status, until the last "
            "byte of the response (a long-poll's or an event stream's whole duration).",
            ["method", "route", "status"],
            buckets=_HTTP_BUCKETS,
            registry=r,
        )
        self.http_in_flight = Gauge(
            "am_http_requests_in_flight", "HTTP requests being handled now.", registry=r
        )

    # -- what the server counts -------------------------------------------------------

    def observe_claim(self, roles: Iterable[str], claimed: list[str], waited: float) -> None:
        """A claim asked for ``roles`` and got steps of roles ``claimed`` (maybe none)."""
        if claimed:
            for role in claimed:
                self.known_roles.add(role)
                self.claims.labels(role, "claimed").inc()
        else:
            for role in roles:
                # A worker may ask for any role name; only roles that steps have get a
                # series of their own, so made-up names cannot grow the registry.
                self.claims.labels(role if role in self.known_roles else OTHER_ROLE, "empty").inc()
        self.claim_wait.labels("claimed" if claimed else "empty").observe(waited)

    def observe_result(self, status: str, outcome: str) -> None:
        self.results.labels(status, outcome).inc()

    def audit_completed(self, *, passed: bool) -> None:
        self.audits.labels("passed" if passed else "failed").inc()

    def rework_started(self, *, steps: int) -> None:
        self.rework_rounds.inc()
        self.reworked_steps.inc(steps)

    def observe_llm_call(
        self, *, model: str, outcome: str, seconds: float, usage: Usage | None
    ) -> None:
        self.llm_seconds.labels(model, outcome).observe(seconds)
        if usage is not None:
            self.llm_tokens.labels(model, "prompt").inc(usage.prompt_tokens)
            self.llm_tokens.labels(model, "completion").inc(usage.completion_tokens)

    # -- a scrape ---------------------------------------------------------------------

    async def collect_database(self, db: Database) -> None:
        """Fill the step and task gauges with one GROUP BY each."""

        async def count() -> tuple[Any, Any]:
            async with db.sessions() as session:
                steps = await session.execute(
                    select(TaskStepORM.status, TaskStepORM.role, func.count()).group_by(
                        TaskStepORM.status, TaskStepORM.role
                    )
                )
                tasks = await session.execute(
                    select(TaskGraphORM.status, func.count()).group_by(TaskGraphORM.status)
                )
                return steps.all(), tasks.all()

        try:
            steps, tasks = await wait_uncancelled(count(), DATABASE_TIMEOUT)
        except Exception:  # the scrape still shows this process's own metrics
            log.warning("metrics: could not count steps in the database", exc_info=True)
            self.database_up.set(0)
            self.steps.clear()
            self.tasks.clear()
            return
        # No await from here on: a concurrent scrape never sees half-filled gauges.
        self.database_up.set(1)
        counts = {(str(status), str(role)): int(n) for status, role, n in steps}
        self.steps.clear()
        # Every status of every role present, zeros included, so a series drops to 0
        # instead of vanishing when its last step moves on.
        self.known_roles.update(role for _, role in counts)
        for role in sorted({role for _, role in counts}):
            for status in StepStatus:
                self.steps.labels(status.value, role).set(counts.get((status.value, role), 0))
        by_status = {str(status): int(n) for status, n in tasks}
        self.tasks.clear()
        for task_status in TaskStatus:
            self.tasks.labels(task_status.value).set(by_status.get(task_status.value, 0))

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition the scraper's ``Accept`` header asks for (OpenMetrics or
        Prometheus text), and its content type."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


class MetricsMiddleware:
    """Times every HTTP request by route template (pure ASGI: it passes messages
    through untouched, so streamed responses and disconnect detection keep working),
    and binds :data:`cycle_observer` to this app's metrics."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # For the lifespan scope too: the reaper and embedded runner started there
        # inherit this context, so the audits they apply are counted.
        token = cycle_observer.set(self.metrics)
        try:
            if scope["type"] != "http":
                await self.app(scope, receive, send)
                return
            await self._timed(scope, receive, send)
        finally:
            cycle_observer.reset(token)

    async def _timed(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        status = 500  # an exception before the response started
        observed = False

        def observe() -> None:
            nonlocal observed
            if observed:
                return
            observed = True
            self.metrics.http_in_flight.dec()
            method = scope.get("method", "")
            self.metrics.http_seconds.labels(
                method if method in _METHODS else "other", route_template(scope), str(status)
            ).observe(time.perf_counter() - started)

        async def send_timed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                # Before the last bytes go out, so a client that has read the response
                # finds it counted (clean-up after the response does not count).
                observe()
            await send(message)

        self.metrics.http_in_flight.inc()
        try:
            await self.app(scope, receive, send_timed)
        finally:
            observe()


async def wait_uncancelled(work: Coroutine[Any, Any, R], timeout: float) -> R:
    """Wait up to ``timeout`` seconds for ``work``; raise :class:`TimeoutError` after
    that but let it run on to its end in the background.

    For database calls: cancelling one in the middle can cost the pool its connection
    (with aiosqlite the close may never finish), which is worse than a late answer.
    """
    task = asyncio.ensure_future(work)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
    finally:
        if not task.done():  # timed out, or our caller was cancelled: it goes on
            _STRAGGLERS.add(task)
            task.add_done_callback(_forget)
    if not done:
        raise TimeoutError(f"no answer within {timeout:g}s")
    return task.result()


def _forget(task: asyncio.Task[Any]) -> None:
    _STRAGGLERS.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved: a late failure was already answered for


def route_template(scope: Scope) -> str:
    """The matched route's path template (``/v1/tasks/{task_id}``), never the raw path."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) and path else "unmatched"


class InstrumentedLLM(LLMClient):
    """An :class:`LLMClient` that reports each call's latency and tokens to ``metrics``."""

    def __init__(self, inner: LLMClient, metrics: Metrics) -> None:
        self.inner = inner
        self.metrics = metrics

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def model(self) -> str:
        return self.inner.model

    async def complete(
        self, *, messages: list[ChatMessage], schema: type[T], context: CallContext
    ) -> LLMResponse[T]:
        started = time.perf_counter()
        outcome, usage = "error", None
        try:
            response = await self.inner.complete(messages=messages, schema=schema, context=context)
            outcome, usage = "ok", response.usage
            return response
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            self.metrics.observe_llm_call(
                model=self.model,
                outcome=outcome,
                seconds=time.perf_counter() - started,
                usage=usage,
            )

    async def aclose(self) -> None:
        await self.inner.aclose()

    def __getattr__(self, name: str) -> Any:
        # Anything else (a scripted model's call log, …) is the wrapped client's.
        if name == "inner":
            raise AttributeError(name)
        return getattr(self.inner, name)


__all__ = [
    "InstrumentedLLM",
    "Metrics",
    "MetricsMiddleware",
    "route_template",
    "wait_uncancelled",
]
