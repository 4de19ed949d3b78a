"""The vocabulary of AgentManager as Pydantic models (SPEC §2).

These are the values the core, the agents and the LLM exchange. The HTTP shapes
(``TaskCreate``, ``TaskPublic``, …) live in :mod:`agent_manager.schemas`, the tables
in :mod:`agent_manager.db.tables`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

STEP_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$"

#: Roles the server itself serves by default (planning, audit, synthesis).
RESERVED_ROLES = frozenset({"planner", "auditor", "synthesizer"})


class TaskStatus(StrEnum):
    PLANNING = "planning"
    RUNNING = "running"
    AUDITING = "auditing"
    SYNTHESIZING = "synthesizing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED)


class StepStatus(StrEnum):
    PENDING = "pending"
    READY = "ready"
    CLAIMED = "claimed"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


FileMode = Literal["read", "write", "exclusive"]


class FileSpec(BaseModel):
    """A file a step declares it will touch, relative to the shared workspace."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(min_length=1, max_length=1024)
    mode: FileMode = "read"


class TaskStep(BaseModel):
    """One node of a plan: who does what, after which other steps, on which files."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    id: str = Field(pattern=STEP_ID_PATTERN, description="unique within the task")
    role: str = Field(max_length=64, description="the kind of worker that runs it")
    instruction: str = Field(default="", max_length=20_000)
    depends_on: list[str] = Field(default_factory=list, max_length=256)
    files: list[FileSpec] = Field(default_factory=list, max_length=64)
    priority: int | None = Field(default=None, ge=-1000, le=1000)
    max_attempts: int | None = Field(default=None, ge=1, le=50)


class TaskGraph(BaseModel):
    """A goal and its plan: the steps and their dependencies."""

    model_config = ConfigDict(extra="forbid")

    goal: str
    steps: list[TaskStep]


class ThoughtAction(BaseModel):
    """One reasoning–acting iteration: what the agent thought, did, and saw."""

    thought: str = ""
    action: str = Field(description="a tool name, or 'final_answer'")
    action_input: Any = None
    observation: str | None = None


RAHistory = list[ThoughtAction]


class Usage(BaseModel):
    """Tokens spent by one LLM call, one attempt, or a whole task."""

    prompt_tokens: int = Field(default=0, ge=0)
    completion_tokens: int = Field(default=0, ge=0)
    total_tokens: int = Field(default=0, ge=0)

    @field_validator("total_tokens")
    @classmethod
    def _at_least_parts(cls, v: int, info: Any) -> int:
        parts = info.data.get("prompt_tokens", 0) + info.data.get("completion_tokens", 0)
        return max(v, parts)

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
        )


ResultStatus = Literal["success", "failure"]


class Result(BaseModel):
    """What one attempt of one step produced. Every attempt is kept."""

    task_id: str
    step_id: str
    attempt: int
    agent_id: str | None = None
    status: ResultStatus
    output: Any = None
    ra_history: RAHistory = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    error: str | None = None
    retryable: bool = False


class AuditFinding(BaseModel):
    """What is wrong with one step's output and how to fix it."""

    step_id: str
    problem: str
    rework_suggestions: list[str] = Field(default_factory=list)


class AuditReport(BaseModel):
    """The auditor's verdict on a task's outputs."""

    passed: bool
    score: float = Field(ge=0.0, le=1.0)
    summary: str
    findings: list[AuditFinding] = Field(default_factory=list)
