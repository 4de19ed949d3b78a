"""The worker's reasoning–acting loop, independent of HTTP.

:class:`WorkerAgent` takes a claimed step (:class:`~agent_manager.schemas.ClaimPublic`),
asks the LLM for one :class:`~agent_manager.models.ThoughtAction` per turn, runs the
named tool, feeds the observation back, and stops at ``final_answer`` or after
``max_iterations`` turns. It always returns a :class:`StepOutcome` — LLM errors,
tool failures and the turn limit become a ``failure`` with a clear ``error`` — so the
caller can report it as the step's result.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agent_manager.agents.file_tools import default_registry
from agent_manager.agents.prompts import (
    assistant_message,
    clip,
    observation_message,
    worker_messages,
)
from agent_manager.agents.tools import (
    FINAL_ANSWER,
    LockFactory,
    ToolContext,
    ToolRegistry,
    no_lock,
)
from agent_manager.llm.base import CallContext, LLMClient, LLMError, Message
from agent_manager.models import ResultStatus, ThoughtAction, Usage
from agent_manager.schemas import ClaimPublic

log = logging.getLogger(__name__)

#: How much of one observation goes back to the model and into the RA history.
MAX_OBSERVATION_CHARS = 8_000


class StepOutcome(BaseModel):
    """What one attempt of a step produced; maps one to one onto a result report."""

    model_config = ConfigDict(frozen=True)

    status: ResultStatus
    output: Any = None
    ra_history: list[ThoughtAction] = Field(default_factory=list)
    usage: Usage = Field(default_factory=Usage)
    error: str | None = None
    retryable: bool = False


class WorkerAgent:
    """Runs claimed steps with an LLM and a tool registry.

    ``max_iterations`` bounds the LLM turns of one step; ``timeout`` (seconds, optional)
    bounds the whole step, including tool calls.
    """

    def __init__(
        self,
        llm: LLMClient,
        tools: ToolRegistry | None = None,
        max_iterations: int = 8,
        *,
        timeout: float | None = None,
        max_observation_chars: int = MAX_OBSERVATION_CHARS,
    ) -> None:
        if max_iterations < 1:
            raise ValueError("max_iterations must be at least 1")
        self.llm = llm
        self.tools = tools if tools is not None else default_registry()
        self.max_iterations = max_iterations
        self.timeout = timeout
        self.max_observation_chars = max_observation_chars

    async def run(
        self, claim: ClaimPublic, *, workspace: Path, lock: LockFactory | None = None
    ) -> StepOutcome:
        """Run the RA loop for ``claim`` with file tools confined to ``workspace``.

        ``lock`` is the file-lock factory the tools enter around each file operation
        (default: none). Never raises except on cancellation.
        """
        run = _Run(
            self, claim, ToolContext(workspace, claim.task_id, claim.step.id, lock or no_lock)
        )
        try:
            async with asyncio.timeout(self.timeout):
                return await run.loop()
        except TimeoutError:
            return run.failure(
                f"step '{claim.step.id}' did not finish within {self.timeout:g}s "
                f"({len(run.history)} turn(s) done)",
                retryable=True,
            )


class _Run:
    """The state of one step's loop: the conversation, the history, the tokens spent."""

    def __init__(self, agent: WorkerAgent, claim: ClaimPublic, ctx: ToolContext) -> None:
        self.agent = agent
        self.claim = claim
        self.ctx = ctx
        self.messages: list[Message] = worker_messages(
            claim, agent.tools, max_turns=agent.max_iterations
        )
        self.history: list[ThoughtAction] = []
        self.usage = Usage()

    async def loop(self) -> StepOutcome:
        limit = self.agent.max_iterations
        for iteration in range(limit):
            try:
                response = await self.agent.llm.complete(
                    messages=self.messages, schema=ThoughtAction, context=self._context(iteration)
                )
            except LLMError as exc:
                return self.failure(
                    f"LLM call failed at turn {iteration + 1} ({exc.code}): {exc.message}",
                    retryable=exc.retryable,
                )
            except Exception as exc:
                # Not an LLMError: a bug in the client. Report it with the history so far
                # rather than losing the attempt; a retry would most likely hit it again.
                log.exception("LLM client raised for step %s", self.claim.step.id)
                return self.failure(
                    f"LLM client error at turn {iteration + 1}: {type(exc).__name__}: {exc}",
                    retryable=False,
                )
            self.usage = self.usage + response.usage
            turn = response.value
            action = turn.action.strip()
            if _is_final(action):
                if _is_empty(turn.action_input):
                    observation = (
                        f'error: "{FINAL_ANSWER}" needs your complete result in "action_input"'
                    )
                else:
                    final = turn.model_copy(update={"action": FINAL_ANSWER, "observation": None})
                    self.history.append(final)
                    return StepOutcome(
                        status="success",
                        output=turn.action_input,
                        ra_history=self.history,
                        usage=self.usage,
                    )
            else:
                observation = await self.agent.tools.execute(action, turn.action_input, self.ctx)
            observation = clip(observation, self.agent.max_observation_chars)
            self.history.append(turn.model_copy(update={"observation": observation}))
            self.messages = [
                *self.messages,
                assistant_message(turn),
                observation_message(observation, turns_left=limit - iteration - 1),
            ]
        last = self.history[-1]
        return self.failure(
            f"iteration limit reached: no {FINAL_ANSWER} after {limit} turns; last action "
            f"was {last.action}({_short(last.action_input)}) -> {_short(last.observation)}",
            retryable=False,
        )

    def _context(self, iteration: int) -> CallContext:
        step, context = self.claim.step, self.claim.context
        notes = list(context.rework_notes)
        rework_round = step.rework_round
        return CallContext(
            role=step.role,
            task_id=self.claim.task_id,
            step_id=step.id,
            attempt=step.attempt,
            rework_round=rework_round,
            goal=self.claim.goal,
            iteration=iteration,
            extra={"rework_notes": notes},
        )

    def failure(self, error: str, *, retryable: bool) -> StepOutcome:
        return StepOutcome(
            status="failure",
            ra_history=self.history,
            usage=self.usage,
            error=error,
            retryable=retryable,
        )


def _is_final(action: str) -> bool:
    # Models write "Final Answer" or "final-answer" often enough to be worth accepting.
    return action.lower().replace(" ", "_").replace("-", "_") == FINAL_ANSWER


def _is_empty(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str | list | dict):
        return not (value.strip() if isinstance(value, str) else value)
    return False


def _short(value: Any, limit: int = 160) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


__all__ = ["MAX_OBSERVATION_CHARS", "StepOutcome", "WorkerAgent"]
