"""Small pure helpers of the AgentManager: the rows and answers of claims and reports,
and the messages of refusals."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from agent_manager.db.queries import ClaimedRow
from agent_manager.db.tables import ResultORM, TaskGraphORM, TaskStepORM
from agent_manager.errors import NotFound
from agent_manager.models import StepStatus
from agent_manager.schemas import (
    ClaimContext,
    ClaimedStep,
    ClaimPublic,
    ResultAck,
    ResultCreate,
)


async def missing_step(session: AsyncSession, task_id: str, step_id: str) -> NotFound:
    if await session.get(TaskGraphORM, task_id) is None:
        return NotFound(f"no task '{task_id}'")
    return NotFound(f"task '{task_id}' has no step '{step_id}'")


def stale_reason(step: TaskStepORM) -> str:
    status = StepStatus(step.status)
    if status == StepStatus.CLAIMED:
        return (
            f"step '{step.id}' is held by another claim (agent '{step.agent_id}', "
            f"attempt {step.attempt}); this claim token is not current"
        )
    return (
        f"step '{step.id}' is {status} (attempt {step.attempt}); this claim token is not "
        "current — its lease may have expired and the step been handed to another worker"
    )


def outcome_of(step: TaskStepORM, report: ResultCreate) -> str:
    if report.status == "success":
        return "done"
    if report.retryable and step.attempt < step.max_attempts:
        return "retry_scheduled"
    return "failed"


def claim_public(claimed: ClaimedRow, context: ClaimContext) -> ClaimPublic:
    return ClaimPublic(
        task_id=claimed.task_id,
        step=ClaimedStep(
            id=claimed.id,
            role=claimed.role,
            instruction=claimed.instruction,
            depends_on=claimed.depends_on,
            files=claimed.files,  # type: ignore[arg-type]
            attempt=claimed.attempt,
            max_attempts=claimed.max_attempts,
            rework_round=claimed.rework_round,
        ),
        goal=claimed.goal,
        claim_token=claimed.claim_token,
        lease_expires_at=claimed.lease_expires_at,
        lease_seconds=claimed.lease_seconds,
        context=context,
    )


def result_row(
    report: ResultCreate,
    attempt: int,
    rework_round: int,
    agent_id: str | None,
    outcome: str,
    now: datetime,
) -> ResultORM:
    return ResultORM(
        task_id=report.task_id,
        step_id=report.step_id,
        attempt=attempt,
        rework_round=rework_round,
        claim_token=report.claim_token,
        agent_id=report.agent_id or agent_id,
        status=report.status,
        output=report.output,
        ra_history=[ta.model_dump(mode="json") for ta in report.ra_history],
        prompt_tokens=report.usage.prompt_tokens,
        completion_tokens=report.usage.completion_tokens,
        total_tokens=report.usage.total_tokens,
        error=report.error,
        retryable=report.retryable and report.status == "failure",
        outcome=outcome,
        created_at=now,
    )


def ack_of(result: ResultORM) -> ResultAck:
    return ResultAck(
        result_id=result.id,
        task_id=result.task_id,
        step_id=result.step_id,
        attempt=result.attempt,
        outcome=result.outcome,  # type: ignore[arg-type]
    )
