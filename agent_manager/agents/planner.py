"""The planner: a goal in, a validated :class:`~agent_manager.models.TaskGraph` out.

The model's plan is checked with the same rules as an explicit plan
(:func:`~agent_manager.plan.validate_plan`), plus "every role is one the deployment
serves". An invalid plan goes back to the model with each problem named, up to
``max_attempts`` plans in all; then :class:`PlanningFailed` says what was still wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from agent_manager.agents.prompts import plan_problems_message, planner_messages
from agent_manager.errors import AgentManagerError, InvalidPlan
from agent_manager.llm.base import CallContext, LLMClient, Message
from agent_manager.models import TaskGraph, Usage
from agent_manager.plan import validate_plan


class PlanningFailed(AgentManagerError):
    """The planner could not produce a valid plan."""

    code = "planning_failed"
    # The model samples differently next time, so a later attempt of the planning
    # step may well succeed (as with LLMOutputInvalid).
    retryable: ClassVar[bool] = True

    def __init__(self, problems: list[str], *, attempts: int) -> None:
        self.problems = problems
        self.attempts = attempts
        super().__init__(
            f"no valid plan after {attempts} attempt(s); last problems: " + "; ".join(problems),
            problems=problems,
            attempts=attempts,
        )


class Planner:
    """Asks the LLM for a plan and insists on a valid one.

    ``workspace``, when given, lets the path check also catch symlinks out of it.
    """

    def __init__(
        self, llm: LLMClient, max_attempts: int = 3, *, workspace: Path | None = None
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.llm = llm
        self.max_attempts = max_attempts
        self.workspace = workspace

    async def plan(
        self,
        *,
        goal: str,
        roles: list[str],
        constraints: str | None = None,
        task_id: str | None = None,
    ) -> tuple[TaskGraph, Usage]:
        """A valid plan for ``goal`` using only ``roles`` (any role when empty), and the
        tokens spent on all attempts.

        Raises :class:`PlanningFailed` after ``max_attempts`` invalid plans, and
        :class:`~agent_manager.llm.LLMError` when the model gives no plan at all.
        """
        messages: list[Message] = planner_messages(goal=goal, roles=roles, constraints=constraints)
        usage = Usage()
        problems: list[str] = []
        for attempt in range(self.max_attempts):
            response = await self.llm.complete(
                messages=messages,
                schema=TaskGraph,
                context=CallContext(
                    role="planner",
                    task_id=task_id,
                    goal=goal,
                    # Re-asks are turns of one conversation, not new attempts of the step.
                    iteration=attempt,
                    extra={"roles": list(roles)},
                ),
            )
            usage = usage + response.usage
            graph = response.value
            try:
                return self._checked(graph, goal=goal, roles=roles), usage
            except InvalidPlan as exc:
                problems = exc.problems
            messages = [
                *messages,
                {"role": "assistant", "content": graph.model_dump_json(exclude_none=True)},
                plan_problems_message(problems),
            ]
        raise PlanningFailed(problems, attempts=self.max_attempts)

    def _checked(self, graph: TaskGraph, *, goal: str, roles: Sequence[str]) -> TaskGraph:
        """``graph`` with normalized paths and the caller's goal, or raise InvalidPlan."""
        allowed = set(roles)
        listed = ", ".join(roles)
        wrong_roles = [
            f"step '{s.id}': role '{s.role}' is not one of the available roles ({listed})"
            for s in graph.steps
            if allowed and s.role.strip() and s.role not in allowed
        ]
        try:
            checked = validate_plan(graph.steps, workspace=self.workspace)
        except InvalidPlan as exc:
            raise InvalidPlan([*wrong_roles, *exc.problems]) from exc
        if wrong_roles:
            raise InvalidPlan(wrong_roles)
        # The user's goal, not the model's paraphrase of it.
        return TaskGraph(goal=goal, steps=list(checked.steps))


__all__ = ["Planner", "PlanningFailed"]
