"""The synthesizer: the steps' outputs and the audits in, the final answer out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, Field

from agent_manager.agents.prompts import synthesizer_messages
from agent_manager.llm.base import CallContext, LLMClient
from agent_manager.models import AuditReport, Usage


class Synthesis(BaseModel):
    """The final answer to a goal."""

    answer: str = Field(description="the final answer in Markdown")
    unresolved: list[str] = Field(
        default_factory=list, description="problems the audit left open, one sentence each"
    )


class Synthesizer:
    """Writes the final answer from a task's outputs."""

    def __init__(self, llm: LLMClient) -> None:
        self.llm = llm

    async def synthesize(
        self,
        *,
        goal: str,
        plan: list[dict[str, Any]],
        outputs: dict[str, Any],
        audits: list[AuditReport],
        unresolved: list[dict[str, Any]],
        task_id: str | None = None,
    ) -> tuple[Synthesis, Usage]:
        """The final answer and the tokens it cost.

        ``unresolved`` are the findings (``AuditFinding`` dumps) of a last audit that
        failed with the rework budget spent. Should the model drop them, they are
        listed anyway: a reader must not take the answer for fully audited when it is
        not. Raises :class:`~agent_manager.llm.LLMError` when the model gives no answer.
        """
        messages = synthesizer_messages(
            goal=goal, plan=plan, outputs=outputs, audits=audits, unresolved=unresolved
        )
        response = await self.llm.complete(
            messages=messages,
            schema=Synthesis,
            context=CallContext(
                role="synthesizer",
                task_id=task_id,
                rework_round=max(0, len(audits) - 1),
                goal=goal,
                extra={"step_ids": [str(s.get("id")) for s in plan]},
            ),
        )
        synthesis = response.value
        if unresolved and not synthesis.unresolved:
            synthesis = synthesis.model_copy(
                update={"unresolved": [_describe(u) for u in unresolved]}
            )
        return synthesis, response.usage


def _describe(finding: Mapping[str, Any]) -> str:
    step = finding.get("step_id")
    problem = str(finding.get("problem") or "unresolved audit finding")
    return f"Step '{step}': {problem}" if step else problem


__all__ = ["Synthesis", "Synthesizer"]
