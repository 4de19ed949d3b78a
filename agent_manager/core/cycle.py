"""The task's life cycle: plan → parallel work → audit → rework → synthesis.

Planning, audit and synthesis are steps of the reserved roles ``planner``, ``auditor``
and ``synthesizer`` (ids starting with ``_``, which a user's step id cannot), so
they get leases, retries and crash recovery like any other step. These functions run
inside the transaction that accepted a result; they return the roles of the steps
they made ready, for the caller to wake after the commit.

Whoever watches the cycle (the server's metrics) sets :data:`cycle_observer` for the
context it runs the core in; the core itself needs nothing from it.
"""

from __future__ import annotations

from contextvars import ContextVar
from datetime import datetime
from typing import Any, Protocol

from pydantic import ValidationError
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from agent_manager.core.events import EventBuffer
from agent_manager.core.views import latest_outputs
from agent_manager.db import queries
from agent_manager.db.tables import TaskGraphORM, TaskStepORM
from agent_manager.errors import InvalidPlan
from agent_manager.models import AuditReport, StepStatus, TaskStatus, TaskStep
from agent_manager.plan import CheckedPlan, validate_plan

SYSTEM_ROLES = ("planner", "auditor", "synthesizer")
SYNTHESIS_STEP_ID = "_synthesis"
# System steps sort around the work steps: planning first, audits and synthesis after.
_SYSTEM_POSITIONS = {"planner": -1, "auditor": 1_000_000, "synthesizer": 2_000_000}


class CycleObserver(Protocol):
    """Hears of the cycle's turns as they are decided (inside their transaction)."""

    def audit_completed(self, *, passed: bool) -> None: ...

    def rework_started(self, *, steps: int) -> None: ...


#: The observer for code running in this context; set by the API layer for its
#: requests and background tasks (the AgentManager's signature stays free of it).
cycle_observer: ContextVar[CycleObserver | None] = ContextVar("cycle_observer", default=None)


def audit_step_id(round_: int) -> str:
    return f"_audit-{round_ + 1}"


def is_system_step(step_id: str) -> bool:
    return step_id.startswith("_")


async def insert_plan(
    session: AsyncSession,
    *,
    task: TaskGraphORM,
    plan: CheckedPlan,
    now: datetime,
    events: EventBuffer,
) -> list[str]:
    """Store a checked plan's steps, its roots ready. Returns the roots' roles."""
    options = task.options
    rows = []
    woken = []
    for position, step in enumerate(plan.steps):
        ready = not step.depends_on
        rows.append(
            {
                "task_id": task.id,
                "id": step.id,
                "role": step.role,
                "position": position,
                "instruction": step.instruction,
                "depends_on": list(step.depends_on),
                "dependents": plan.dependents[step.id],
                "files": [f.model_dump() for f in step.files],
                "has_files": bool(step.files),
                "status": StepStatus.READY if ready else StepStatus.PENDING,
                "remaining_deps": len(step.depends_on),
                "priority": step.priority if step.priority is not None else options["priority"],
                "attempt": 1,
                "max_attempts": step.max_attempts or options["max_attempts"],
                "lease_seconds": options["lease_seconds"],
                "ready_at": now if ready else None,
                "rework_notes": [],
                "updated_at": now,
            }
        )
        if ready:
            woken.append(step.role)
            events.add(task.id, "step.ready", step.id, role=step.role, attempt=1)
    await session.execute(insert(TaskStepORM), rows)
    task.steps_remaining = len(rows)
    return woken


async def add_system_step(
    session: AsyncSession,
    *,
    task: TaskGraphORM,
    step_id: str,
    role: str,
    instruction: str,
    now: datetime,
    events: EventBuffer,
) -> None:
    """Queue a planner, auditor or synthesizer step, ready at once."""
    if await session.get(TaskStepORM, (task.id, step_id)) is not None:
        # Each round has its own audit step and synthesis runs once: a second one
        # would mean a bug, and replacing the row would drop its results.
        raise RuntimeError(f"task {task.id} already has a step '{step_id}'")
    session.add(
        TaskStepORM(
            task_id=task.id,
            id=step_id,
            role=role,
            position=_SYSTEM_POSITIONS[role] + task.rework_round,
            instruction=instruction,
            depends_on=[],
            dependents=[],
            files=[],
            status=StepStatus.READY,
            remaining_deps=0,
            priority=task.options["priority"],
            attempt=1,
            max_attempts=task.options["max_attempts"],
            lease_seconds=task.options["lease_seconds"],
            ready_at=now,
            rework_notes=[],
            rework_round=task.rework_round,
            updated_at=now,
        )
    )
    events.add(task.id, "step.ready", step_id, role=role, attempt=1)


async def on_step_finished(
    session: AsyncSession,
    *,
    task_id: str,
    step_id: str,
    role: str,
    dependents: list[str],
    output: Any,
    now: datetime,
    events: EventBuffer,
) -> list[str]:
    """A step succeeded: promote its dependents, or move the task to its next phase.

    A work step that is not the last touches only its dependents and the task's
    counter; the task row itself is loaded only when the phase changes.
    """
    if is_system_step(step_id):
        task = await queries.lock_task(session, task_id=task_id)
        assert task is not None
        if TaskStatus(task.status).is_final:
            return []
        if role == "planner":
            return await _on_plan(session, task=task, output=output, now=now, events=events)
        if role == "auditor":
            return await _on_audit(session, task=task, output=output, now=now, events=events)
        # The synthesizer answers {"answer": …, "unresolved": […]}, or just the answer.
        answer = output.get("answer", output) if isinstance(output, dict) else output
        return await _complete(session, task=task, answer=answer, now=now, events=events)

    promoted = await queries.promote_dependents(
        session, task_id=task_id, dependents=dependents, now=now
    )
    for ready_id, ready_role in promoted:
        events.add(task_id, "step.ready", ready_id, role=ready_role)
    woken = [r for _, r in promoted]
    if await queries.count_step_done(session, task_id=task_id) == 0:
        task = await queries.lock_task(session, task_id=task_id)
        assert task is not None
        woken += await after_work(session, task=task, now=now, events=events)
    return woken


async def after_work(
    session: AsyncSession, *, task: TaskGraphORM, now: datetime, events: EventBuffer
) -> list[str]:
    """Every work step is done: audit, synthesize, or complete."""
    task.updated_at = now
    if task.options.get("audit"):
        _set_status(task, TaskStatus.AUDITING, events)
        await add_system_step(
            session,
            task=task,
            step_id=audit_step_id(task.rework_round),
            role="auditor",
            instruction="Review every step's output against the goal and the plan.",
            now=now,
            events=events,
        )
        return ["auditor"]
    return await _synthesize_or_complete(session, task=task, now=now, events=events)


async def _synthesize_or_complete(
    session: AsyncSession, *, task: TaskGraphORM, now: datetime, events: EventBuffer
) -> list[str]:
    if task.options.get("synthesize"):
        _set_status(task, TaskStatus.SYNTHESIZING, events)
        await add_system_step(
            session,
            task=task,
            step_id=SYNTHESIS_STEP_ID,
            role="synthesizer",
            instruction="Write the final answer from all outputs and the audit.",
            now=now,
            events=events,
        )
        return ["synthesizer"]
    outputs = await latest_outputs(session, task_id=task.id)
    steps = (await session.scalars(select(TaskStepORM).where(TaskStepORM.task_id == task.id))).all()
    sinks = {
        s.id: outputs.get(s.id) for s in steps if not s.dependents and not is_system_step(s.id)
    }
    return await _complete(session, task=task, answer={"outputs": sinks}, now=now, events=events)


async def _complete(
    session: AsyncSession,
    *,
    task: TaskGraphORM,
    answer: Any,
    now: datetime,
    events: EventBuffer,
) -> list[str]:
    unresolved = (task.final_result or {}).get("unresolved", [])
    task.final_result = {"answer": answer, "unresolved": unresolved}
    task.finished_at = task.updated_at = now
    _set_status(task, TaskStatus.COMPLETED, events)
    return []


async def _on_plan(
    session: AsyncSession,
    *,
    task: TaskGraphORM,
    output: Any,
    now: datetime,
    events: EventBuffer,
) -> list[str]:
    try:
        raw = output.get("steps") if isinstance(output, dict) else output
        steps = [TaskStep.model_validate(s) for s in (raw or [])]
        plan = validate_plan(steps)
    except (ValidationError, TypeError, AttributeError) as exc:
        reason = f"the planner's output is not a plan: {exc}"
        await fail_task(session, task=task, reason=reason, now=now, events=events)
        return []
    except InvalidPlan as exc:
        await fail_task(
            session,
            task=task,
            reason=f"the planner's plan is invalid: {exc.message}",
            now=now,
            events=events,
        )
        return []
    events.add(task.id, "task.planned", steps=[s.id for s in plan.steps])
    woken = await insert_plan(session, task=task, plan=plan, now=now, events=events)
    _set_status(task, TaskStatus.RUNNING, events)
    task.updated_at = now
    return woken


async def _on_audit(
    session: AsyncSession,
    *,
    task: TaskGraphORM,
    output: Any,
    now: datetime,
    events: EventBuffer,
) -> list[str]:
    try:
        report = AuditReport.model_validate(output)
    except ValidationError as exc:
        await fail_task(
            session,
            task=task,
            reason=f"the auditor's output is not an audit report: {exc}",
            now=now,
            events=events,
        )
        return []
    steps = {
        s.id: s
        for s in (
            await session.scalars(select(TaskStepORM).where(TaskStepORM.task_id == task.id))
        ).all()
        if not is_system_step(s.id)
    }
    flagged = {f.step_id for f in report.findings if f.step_id in steps}
    events.add(
        task.id,
        "audit.completed",
        audit_step_id(task.rework_round),
        round=task.rework_round,
        passed=report.passed,
        score=report.score,
        flagged=sorted(flagged),
    )
    if (observer := cycle_observer.get()) is not None:
        observer.audit_completed(passed=report.passed)
    if report.passed or not flagged or task.rework_round >= task.options["max_rework_rounds"]:
        if not report.passed:
            task.final_result = {"unresolved": [f.model_dump() for f in report.findings]}
        return await _synthesize_or_complete(session, task=task, now=now, events=events)
    return await _rework(session, task=task, steps=steps, report=report, now=now, events=events)


async def _rework(
    session: AsyncSession,
    *,
    task: TaskGraphORM,
    steps: dict[str, TaskStepORM],
    report: AuditReport,
    now: datetime,
    events: EventBuffer,
) -> list[str]:
    """Reset the flagged steps and everything downstream, with the auditor's notes."""
    notes: dict[str, list[str]] = {}
    for finding in report.findings:
        if finding.step_id in steps:
            notes.setdefault(finding.step_id, []).append(finding.problem)
            notes[finding.step_id] += finding.rework_suggestions
    reset: set[str] = set()
    frontier = list(notes)
    while frontier:
        step_id = frontier.pop()
        if step_id not in reset:
            reset.add(step_id)
            frontier += steps[step_id].dependents
    task.rework_round += 1
    woken = []
    for step_id in sorted(reset):
        step = steps[step_id]
        upstream = sorted(d for d in step.depends_on if d in reset)
        step.rework_notes = notes.get(step_id) or [
            f"Upstream step(s) {', '.join(upstream)} were reworked; update your output to match."
        ]
        step.remaining_deps = sum(1 for d in step.depends_on if d in reset)
        step.attempt = 1
        step.rework_round = task.rework_round
        step.last_error = None
        step.holds_locks = False
        step.claim_token = step.agent_id = step.lease_expires_at = step.claimed_at = None
        step.updated_at = now
        ready = step.remaining_deps == 0
        step.status = StepStatus.READY if ready else StepStatus.PENDING
        step.ready_at = now if ready else None
        events.add(task.id, "step.reset", step_id, round=task.rework_round, notes=step.rework_notes)
        if ready:
            events.add(task.id, "step.ready", step_id, role=step.role, attempt=1)
            woken.append(step.role)
    task.steps_remaining = len(reset)
    task.updated_at = now
    _set_status(task, TaskStatus.RUNNING, events)
    if (observer := cycle_observer.get()) is not None:
        observer.rework_started(steps=len(reset))
    return woken


async def fail_task(
    session: AsyncSession,
    *,
    task: TaskGraphORM,
    reason: str,
    now: datetime,
    events: EventBuffer,
    failed_step: str | None = None,
) -> None:
    """Fail the task: its open steps are cancelled."""
    await close_open_steps(session, task=task, now=now, events=events, reason=reason)
    task.error = reason
    task.finished_at = task.updated_at = now
    _set_status(task, TaskStatus.FAILED, events, reason=reason, failed_step=failed_step)


async def close_open_steps(
    session: AsyncSession,
    *,
    task: TaskGraphORM,
    now: datetime,
    events: EventBuffer,
    reason: str,
) -> None:
    """Cancel every pending, ready or claimed step of the task and free their locks.

    A claimed step keeps its claim token so its worker's next heartbeat learns of the
    cancellation instead of getting a bare 409.
    """
    open_steps = (
        await session.scalars(
            select(TaskStepORM).where(queries.open_steps_filter(task.id)).with_for_update()
        )
    ).all()
    tokens = [s.claim_token for s in open_steps if s.claim_token]
    await queries.release_locks(session, claim_tokens=tokens)
    for step in open_steps:
        step.status = StepStatus.CANCELLED
        step.lease_expires_at = None
        step.updated_at = now
        events.add(task.id, "step.cancelled", step.id, reason=reason)


def _set_status(task: TaskGraphORM, status: TaskStatus, events: EventBuffer, **data: Any) -> None:
    task.status = status
    events.add(
        task.id,
        f"task.{status.value}",
        status=status.value,
        **{k: v for k, v in data.items() if v is not None},
    )
