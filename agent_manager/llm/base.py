"""The LLM seam: what an agent asks for, what it gets back, and what can go wrong.

An :class:`LLMClient` takes chat messages and a Pydantic schema and returns a validated
instance of that schema inside an :class:`LLMResponse` — never raw text. The model (the
API adapter, e.g. :class:`~agent_manager.llm.openai_provider.OpenAIClient`) is kept apart
from the agents that use it, so tests and the demo can swap in
:class:`~agent_manager.llm.scripted.ScriptedModel`.

Errors, all under :class:`~agent_manager.errors.AgentManagerError`::

    LLMError                 anything the LLM layer could not do
    ├── LLMOutputInvalid     the model kept returning unparsable / schema-invalid output
    ├── LLMUnavailable       timeouts, 429, 5xx or connection errors, retries exhausted
    ├── LLMConfigError       missing or wrong model, base URL or key (names the env var)
    └── LLMRequestRejected   the endpoint refused the request (a 4xx that is not 429/auth)

``retryable`` says whether trying the same step again later could help; the worker
copies it into the step's result.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Self, TypeVar

from pydantic import BaseModel, ValidationError

from agent_manager.errors import AgentManagerError
from agent_manager.models import Usage

T = TypeVar("T", bound=BaseModel)

#: One chat message: ``{"role": "system" | "user" | "assistant", "content": "..."}``.
Message = dict[str, str]


@dataclass(frozen=True, slots=True)
class CallContext:
    """Who is asking and why: the step, attempt and loop position of one LLM call.

    Real providers ignore it (beyond logging); :class:`ScriptedModel` uses it to pick a
    response, and ``extra`` carries any further hints for it (e.g. ``roles`` for the
    planner, ``step_ids`` for the auditor).
    """

    role: str
    task_id: str | None = None
    step_id: str | None = None
    attempt: int = 1
    rework_round: int = 0
    goal: str | None = None
    iteration: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class LLMResponse(Generic[T]):
    """A validated structured answer and what it cost."""

    value: T
    usage: Usage
    model: str
    provider: str
    attempts: int = 1
    """How many HTTP calls it took (retries and repairs included)."""


class LLMClient(abc.ABC):
    """Structured-output access to one model. Use as ``async with`` or call :meth:`aclose`."""

    @property
    @abc.abstractmethod
    def name(self) -> str:
        """The provider's short name, e.g. ``"openai"`` or ``"scripted"``."""

    @property
    @abc.abstractmethod
    def model(self) -> str:
        """The model this client talks to, as shown to users."""

    @abc.abstractmethod
    async def complete(
        self,
        *,
        messages: list[Message],
        schema: type[T],
        context: CallContext,
    ) -> LLMResponse[T]:
        """Ask the model and return its answer validated as ``schema``.

        Raises :class:`LLMError` (a subclass of it) when no valid answer can be had.
        """

    async def aclose(self) -> None:  # noqa: B027 - optional hook, most clients hold nothing
        """Release connections. Safe to call more than once."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


def describe_validation_error(exc: ValidationError, limit: int = 5) -> str:
    """One line naming what was wrong, e.g. ``"confidence: Field required"`` — short
    enough to feed back to a model or show to a user."""
    errors = exc.errors(include_url=False)
    if errors and errors[0]["type"] == "json_invalid":
        return f"invalid JSON ({errors[0]['msg']})"
    parts = [f"{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}" for e in errors]
    more = f" and {len(parts) - limit} more" if len(parts) > limit else ""
    return f"{len(parts)} validation error(s): " + "; ".join(parts[:limit]) + more


class LLMError(AgentManagerError):
    """The language model could not produce an answer."""

    code = "llm_error"
    retryable: ClassVar[bool] = False


class LLMOutputInvalid(LLMError):
    """The language model kept returning output that does not match the schema."""

    code = "llm_output_invalid"
    # Sampling differs between calls, so a later attempt of the step may well succeed.
    retryable = True


class LLMUnavailable(LLMError):
    """The language model endpoint is unavailable; retry later."""

    code = "llm_unavailable"
    retryable = True


class LLMConfigError(LLMError):
    """The language model is not configured correctly."""

    code = "llm_config"


class LLMRequestRejected(LLMError):
    """The language model endpoint rejected the request."""

    code = "llm_request_rejected"


__all__ = [
    "CallContext",
    "LLMClient",
    "LLMConfigError",
    "LLMError",
    "LLMOutputInvalid",
    "LLMRequestRejected",
    "LLMResponse",
    "LLMUnavailable",
    "Message",
    "T",
    "describe_validation_error",
]
