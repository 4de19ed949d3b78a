"""The HTTP API's shapes: ``XCreate`` in, ``XPublic`` out. Kept apart from the tables."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agent_manager.models import (
    AuditReport,
    FileMode,
    FileSpec,
    ResultStatus,
    StepStatus,
    TaskStatus,
    TaskStep,
    ThoughtAction,
    Usage,
)


class TaskOptions(BaseModel):
    """How a task is run. Unset ``audit``/``synthesize`` mean: on for a planned goal,
    off for an explicit plan (whose author usually wants exactly the steps given)."""

    model_config = ConfigDict(extra="forbid")

    audit: bool | None = None
    synthesize: bool | None = None
    max_rework_rounds: int = Field(default=2, ge=0, le=10)
    max_attempts: int = Field(default=3, ge=1, le=50)
    lease_seconds: float | None = Field(default=None, ge=1, le=86_400)
    priority: int = Field(default=0, ge=-1000, le=1000)
    roles: list[str] | None = Field(
        default=None,
        max_length=32,
        description="roles the planner may give steps (default: AM_PLANNER_ROLES)",
    )


class TaskCreate(BaseModel):
    """A goal to run, with an optional explicit plan."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    goal: str = Field(min_length=1, max_length=20_000)
    steps: list[TaskStep] | None = Field(default=None, max_length=10_000)
    options: TaskOptions = Field(default_factory=TaskOptions)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("steps")
    @classmethod
    def _not_empty(cls, v: list[TaskStep] | None) -> list[TaskStep] | None:
        if v is not None and not v:
            raise ValueError("give at least one step, or leave 'steps' out to have it planned")
        return v


class TaskCreated(BaseModel):
    id: str
    status: TaskStatus
    created: bool = Field(description="false when an Idempotency-Key matched an earlier task")


class ResultPublic(BaseModel):
    id: int
    step_id: str
    attempt: int
    rework_round: int
    agent_id: str | None
    status: ResultStatus
    output: Any
    ra_history: list[ThoughtAction]
    usage: Usage
    error: str | None
    retryable: bool
    outcome: str
    created_at: datetime


class LockPublic(BaseModel):
    """A held file lock."""

    id: int
    path: str
    mode: FileMode
    task_id: str
    step_id: str
    agent_id: str | None
    expires_at: datetime


class LockCreate(BaseModel):
    """An ad-hoc lock for a path a running step found it needs: ``POST /v1/locks``."""

    model_config = ConfigDict(extra="forbid")

    task_id: str
    step_id: str
    claim_token: str = Field(min_length=1)
    path: str = Field(min_length=1, max_length=1024)
    mode: FileMode
    wait: float = Field(default=0.0, ge=0, le=300, description="seconds to wait for it")


class StepPublic(BaseModel):
    id: str
    role: str
    instruction: str
    status: StepStatus
    attempt: int
    max_attempts: int
    priority: int
    depends_on: list[str]
    files: list[FileSpec]
    agent_id: str | None
    claimed_at: datetime | None
    lease_expires_at: datetime | None
    rework_notes: list[str]
    last_error: str | None
    locks: list[LockPublic] = Field(default_factory=list, description="file locks it holds")
    result: ResultPublic | None = Field(description="the latest result of this step")
    attempts: list[ResultPublic] = Field(
        default_factory=list, description="every result, oldest first (only with ?history=true)"
    )


class AuditPublic(BaseModel):
    round: int
    report: AuditReport


class TaskPublic(BaseModel):
    id: str
    goal: str
    status: TaskStatus
    rework_round: int
    options: TaskOptions
    steps: list[StepPublic]
    audits: list[AuditPublic]
    final_result: Any
    error: str | None
    usage: Usage
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None


class TaskSummary(BaseModel):
    id: str
    goal: str
    status: TaskStatus
    rework_round: int
    steps_total: int
    steps_done: int
    created_at: datetime
    finished_at: datetime | None


class TaskPage(BaseModel):
    items: list[TaskSummary]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page")


class ClaimedStep(BaseModel):
    id: str
    role: str
    instruction: str
    depends_on: list[str]
    files: list[FileSpec]
    attempt: int
    max_attempts: int
    rework_round: int = Field(default=0, description="the audit round this run belongs to")


class ClaimContext(BaseModel):
    dependencies: dict[str, Any] = Field(
        description="the latest successful output of each dependency, by step id"
    )
    rework_notes: list[str]
    extra: dict[str, Any] = Field(
        default_factory=dict,
        description="for planner, auditor and synthesizer steps: the plan, audits so far, …",
    )


class ClaimPublic(BaseModel):
    task_id: str
    step: ClaimedStep
    goal: str
    claim_token: str
    lease_expires_at: datetime
    lease_seconds: float
    context: ClaimContext


class ClaimRequest(BaseModel):
    """Claim several steps at once: ``POST /v1/claims``."""

    model_config = ConfigDict(extra="forbid")

    agent_id: str = Field(min_length=1, max_length=128, pattern=r"^[\w.:@-]+$")
    roles: list[str] | None = Field(
        default=None, description="roles to claim; default: the token's roles"
    )
    max: int = Field(default=1, ge=1, le=100, description="how many steps at most")
    wait: float = Field(default=0.0, ge=0, description="seconds to long-poll for a step")


class ClaimBatch(BaseModel):
    claims: list[ClaimPublic]


class HeartbeatIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    task_id: str
    claim_token: str = Field(min_length=1)
    agent_id: str | None = None


class HeartbeatOut(BaseModel):
    lease_expires_at: datetime | None
    cancelled: bool = Field(description="true when the task was cancelled: stop the step")


class ReleaseOut(BaseModel):
    released: bool


class ResultCreate(BaseModel):
    """A worker's report of one attempt."""

    model_config = ConfigDict(extra="forbid")

    task_id: str
    step_id: str
    claim_token: str = Field(min_length=1)
    agent_id: str | None = None
    status: ResultStatus
    output: Any = None
    ra_history: list[ThoughtAction] = Field(default_factory=list, max_length=10_000)
    usage: Usage = Field(default_factory=Usage)
    error: str | None = Field(default=None, max_length=100_000)
    retryable: bool = True


Outcome = Literal["done", "retry_scheduled", "failed"]


class ResultAck(BaseModel):
    """The server's answer to a report. A repeated report gets the same answer."""

    result_id: int
    task_id: str
    step_id: str
    attempt: int
    outcome: Outcome


class ErrorBody(BaseModel):
    code: str
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class ResultBatch(BaseModel):
    """Several reports at once: ``POST /v1/results/batch``."""

    model_config = ConfigDict(extra="forbid")

    results: list[ResultCreate] = Field(min_length=1, max_length=500)


class ResultBatchAck(BaseModel):
    results: list[ResultAck | ErrorBody] = Field(
        description="one answer per report, in order: its ack, or its error"
    )


class AgentStep(BaseModel):
    task_id: str
    step_id: str
    role: str
    claimed_at: datetime | None
    lease_expires_at: datetime | None


class AgentPublic(BaseModel):
    """A worker the server has seen (it claimed), and what it holds now."""

    id: str
    roles: list[str]
    first_seen_at: datetime
    last_seen_at: datetime
    current_steps: list[AgentStep]


class EventPublic(BaseModel):
    id: int
    task_id: str
    step_id: str | None
    type: str
    data: dict[str, Any]
    created_at: datetime
