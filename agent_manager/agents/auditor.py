"""The auditor: deterministic pre-checks plus an LLM review of every step's output.

The pre-checks catch what needs no judgement — a missing or empty output, placeholder
text such as ``TODO`` or ``lorem ipsum`` — so such an output fails the audit even when
the model overlooks it. The LLM reviews the rest (off-instruction output, contradictions
with dependencies). The two are merged into one :class:`~agent_manager.models.AuditReport`
with at most one finding per step, and only for steps that are in the plan.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

from agent_manager.agents.prompts import auditor_messages
from agent_manager.llm.base import CallContext, LLMClient
from agent_manager.models import AuditFinding, AuditReport, Usage

log = logging.getLogger(__name__)

#: The highest score a report can keep when pre-checks flagged a step.
PRECHECK_SCORE_CAP = 0.5

# Markers that are placeholders wherever they appear. TODO/TBD only in capitals: as
# words ("a todo list") they are ordinary prose.
_PLACEHOLDER_MARKERS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\bTODO\b"), "TODO"),
    (re.compile(r"\bTBD\b"), "TBD"),
    (re.compile(r"\blorem\s+ipsum\b", re.I), "lorem ipsum"),
    (re.compile(r"\bplaceholder\b", re.I), "placeholder"),
    (re.compile(r"\[\s*insert\b[^\]]*\]", re.I), "[insert …]"),
    (re.compile(r"<\s*insert\b[^>]*>", re.I), "<insert …>"),
)
# Outputs that are nothing but a filler token (compared after trimming and lower-casing).
_FILLER_ONLY = {"...", "…", ". . .", "n/a", "na", "tbd", "todo", "none", "null", "-", "tba"}


def precheck_outputs(
    plan: Sequence[Mapping[str, Any]], outputs: Mapping[str, Any]
) -> list[AuditFinding]:
    """Findings for steps whose output is missing, empty or placeholder text, in plan order."""
    findings = []
    for step in plan:
        sid = str(step.get("id"))
        instruction = _short(str(step.get("instruction") or ""), 200)
        task = f": {instruction}" if instruction else ""
        if sid not in outputs:
            findings.append(
                AuditFinding(
                    step_id=sid,
                    problem="no output was recorded for this step",
                    rework_suggestions=[
                        f"Produce the output the step's instruction asks for{task}",
                        "Return the complete result as the final answer of the step.",
                    ],
                )
            )
            continue
        text = _text_of(outputs[sid])
        if not text.strip():
            findings.append(
                AuditFinding(
                    step_id=sid,
                    problem="the output is empty",
                    rework_suggestions=[
                        f"Write the full output the step's instruction asks for{task}",
                        "Put the complete result in the final answer, not only in a file "
                        "or a tool call.",
                    ],
                )
            )
            continue
        markers = _placeholders(text)
        if markers:
            shown = ", ".join(f"'{m}'" for m in markers)
            findings.append(
                AuditFinding(
                    step_id=sid,
                    problem=f"the output contains placeholder text ({shown}) instead of content",
                    rework_suggestions=[
                        f"Replace every placeholder ({shown}) with the actual content{task}",
                        "Deliver finished text: no TODO/TBD markers, template slots or "
                        "filler such as lorem ipsum.",
                    ],
                )
            )
    return findings


class AuditorAgent:
    """Reviews a task's outputs; see the module docstring."""

    def __init__(self, llm: LLMClient) -> None:
        self.llm = llm

    async def review(
        self,
        *,
        goal: str,
        plan: list[dict[str, Any]],
        outputs: dict[str, Any],
        rework_round: int,
        task_id: str | None = None,
    ) -> tuple[AuditReport, Usage]:
        """Audit ``outputs`` (by step id) of ``plan`` (dicts with ``id``, ``role``,
        ``instruction``, ``depends_on`` and optionally ``rework_notes``).

        Raises :class:`~agent_manager.llm.LLMError` when the model gives no valid report;
        its ``retryable`` says whether trying the audit again may help.
        """
        prechecks = precheck_outputs(plan, outputs)
        step_ids = [str(s.get("id")) for s in plan]
        flagged = [f.step_id for f in prechecks]
        messages = auditor_messages(
            goal=goal, plan=plan, outputs=outputs, rework_round=rework_round, prechecks=prechecks
        )
        context = CallContext(
            role="auditor",
            task_id=task_id,
            rework_round=rework_round,
            goal=goal,
            # Flagged steps first: a model that names one step (the scripted one does)
            # should name a step that certainly needs the work.
            extra={"step_ids": flagged + [s for s in step_ids if s not in flagged]},
        )
        response = await self.llm.complete(messages=messages, schema=AuditReport, context=context)
        return merge_reports(response.value, prechecks, step_ids), response.usage


def merge_reports(
    report: AuditReport, prechecks: Sequence[AuditFinding], step_ids: Sequence[str]
) -> AuditReport:
    """The model's report with the pre-check findings folded in.

    One finding per step (problems joined, suggestions de-duplicated), findings only
    for ``step_ids``, ordered as the plan; any pre-check finding fails the report.
    """
    known = set(step_ids)
    merged: dict[str, AuditFinding] = {}
    for finding in [*prechecks, *report.findings]:
        if finding.step_id not in known:
            log.warning("audit finding for unknown step %r dropped", finding.step_id)
            continue
        seen = merged.get(finding.step_id)
        if seen is None:
            merged[finding.step_id] = finding.model_copy(
                update={"rework_suggestions": _unique(finding.rework_suggestions)}
            )
            continue
        problem = seen.problem
        if finding.problem.strip() and finding.problem.strip() not in problem:
            problem = f"{problem}; {finding.problem.strip()}"
        merged[finding.step_id] = AuditFinding(
            step_id=finding.step_id,
            problem=problem,
            rework_suggestions=_unique([*seen.rework_suggestions, *finding.rework_suggestions]),
        )
    findings = [merged[sid] for sid in step_ids if sid in merged]
    if not prechecks:
        return report.model_copy(update={"findings": findings})
    names = ", ".join(f"'{f.step_id}'" for f in prechecks)
    return AuditReport(
        passed=False,
        score=min(report.score, PRECHECK_SCORE_CAP),
        summary=f"Pre-checks flagged {len(prechecks)} step(s) ({names}) with missing, empty "
        f"or placeholder output. {report.summary}".strip(),
        findings=findings,
    )


def _text_of(value: Any) -> str:
    """The text of an output to check: strings as they are, containers by their strings."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        return "\n".join(_text_of(v) for v in value.values())
    if isinstance(value, list | tuple):
        return "\n".join(_text_of(v) for v in value)
    return json.dumps(value, default=str)


def _placeholders(text: str) -> list[str]:
    stripped = text.strip()
    if stripped.lower().rstrip(".") in _FILLER_ONLY or stripped.lower() in _FILLER_ONLY:
        return [stripped]
    return [label for pattern, label in _PLACEHOLDER_MARKERS if pattern.search(text)]


def _unique(items: Sequence[str]) -> list[str]:
    out: list[str] = []
    for item in items:
        if item.strip() and item.strip() not in out:
            out.append(item.strip())
    return out


def _short(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


__all__ = ["PRECHECK_SCORE_CAP", "AuditorAgent", "merge_reports", "precheck_outputs"]
