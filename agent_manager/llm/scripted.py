"""A deterministic, offline stand-in for an LLM — for the demo and the tests, not for real work.

:class:`ScriptedModel` answers from a :class:`Scenario`: an ordered list of
:class:`Rule`\\ s. For each call the **first** rule that matches (every criterion it sets
equals the call's :class:`CallContext` / schema name, and it has uses left) answers it.
A rule answers with a dict (validated into the schema), a callable
``(context, messages, schema) -> dict``, or a simulated ``error``. ``times=N`` makes a
rule fire at most N times (then later rules get their turn); without it a rule is reused
forever. So put one-shot special cases first and general rules after them.

When no rule matches (and ``use_defaults`` is on) a built-in default answers, so any goal
gets a plausible run through the whole cycle without a network:

* ``TaskGraph`` — three parallel steps (analyst, researcher, writer, or
  ``extra["roles"]``) and a final ``report`` step depending on all of them;
* ``ThoughtAction`` — a ``final_answer`` with short Markdown about the instruction;
* ``AuditReport`` — round 0 fails (score 0.55, one finding on ``extra["step_ids"][0]``
  with concrete rework suggestions), round 1 and later pass (score 0.9);
* any other schema — required fields filled generically (text, ``[]``, ``True``, the
  lower bound of numbers), e.g. a synthesizer's ``answer`` gets a Markdown answer.

A scenario file is JSON: ``{"description": "...", "use_defaults": true, "rules": [{"role":
"auditor", "rework_round": 0, "times": 1, "response": {...}}, ...]}``.
"""

from __future__ import annotations

import asyncio
import enum
import re
import types
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from agent_manager.llm.base import (
    CallContext,
    LLMClient,
    LLMConfigError,
    LLMOutputInvalid,
    LLMResponse,
    LLMUnavailable,
    Message,
    T,
    describe_validation_error,
)
from agent_manager.models import RESERVED_ROLES, AuditReport, TaskGraph, ThoughtAction, Usage

ResponseFn = Callable[[CallContext, list[Message], type[BaseModel]], Any]
DEFAULT_ROLES = ("analyst", "researcher", "writer")
_STEP_IDS = {"analyst": "analysis", "researcher": "research", "writer": "draft"}
_STEP_TEXT = {
    "analyst": "Analyse the goal: the key questions, the constraints, what a good answer needs.",
    "researcher": "Collect the background facts, options and trade-offs that bear on the goal.",
    "writer": "Draft an outline and the key points of the answer.",
}


class Rule(BaseModel):
    """One scripted answer and the calls it applies to (unset criteria match anything)."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    role: str | None = None
    step_id: str | None = None
    attempt: int | None = None
    rework_round: int | None = None
    iteration: int | None = None
    schema_name: str | None = Field(default=None, description="e.g. 'TaskGraph'")
    response: dict[str, Any] | ResponseFn | None = None
    #: Raise LLMUnavailable / LLMOutputInvalid instead of answering.
    error: Literal["unavailable", "output_invalid"] | None = None
    times: int | None = Field(default=None, ge=1, description="uses before it is spent")

    @model_validator(mode="after")
    def _one_outcome(self) -> Rule:
        if (self.response is None) == (self.error is None):
            raise ValueError("a rule needs exactly one of 'response' or 'error'")
        return self

    def matches(self, context: CallContext, schema: type[BaseModel]) -> bool:
        """True when every criterion this rule sets equals the call's."""
        wanted = (
            (self.role, context.role),
            (self.step_id, context.step_id),
            (self.attempt, context.attempt),
            (self.rework_round, context.rework_round),
            (self.iteration, context.iteration),
            (self.schema_name, schema.__name__),
        )
        return all(want is None or want == have for want, have in wanted)


class Scenario(BaseModel):
    """An ordered list of rules; see the module docstring for how they are chosen."""

    model_config = ConfigDict(extra="forbid")

    description: str = ""
    rules: list[Rule] = Field(default_factory=list)
    use_defaults: bool = True
    """Answer unmatched calls with the built-in defaults (else raise LLMConfigError)."""

    @classmethod
    def from_file(cls, path: str | Path) -> Scenario:
        """Load a JSON scenario; problems become :class:`LLMConfigError` naming the file."""
        try:
            return cls.model_validate_json(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise LLMConfigError(
                f"cannot read scenario file {path}: {exc.strerror or exc}; check AM_LLM_SCENARIO"
            ) from exc
        except ValidationError as exc:
            problems = describe_validation_error(exc, limit=20)
            raise LLMConfigError(f"invalid scenario file {path}: {problems}") from exc


@dataclass(frozen=True, slots=True)
class ScriptedCall:
    """One call the scripted model received, kept so tests can inspect prompts."""

    context: CallContext
    schema_name: str
    messages: list[Message]


class ScriptedModel(LLMClient):
    """Deterministic answers from a :class:`Scenario`; never touches the network.

    ``latency`` (seconds) makes each call take a moment, so the demo looks live and
    parallel steps visibly overlap.
    """

    def __init__(self, scenario: Scenario | None = None, *, latency: float = 0.0) -> None:
        self.scenario = scenario or Scenario()
        self.latency = latency
        self.calls: list[ScriptedCall] = []
        # Use counts live here, not in the Scenario, so one scenario can drive many models.
        self._uses = [0] * len(self.scenario.rules)

    @property
    def name(self) -> str:
        return "scripted"

    @property
    def model(self) -> str:
        return "scripted (not an LLM)"

    async def complete(
        self, *, messages: list[Message], schema: type[T], context: CallContext
    ) -> LLMResponse[T]:
        """Answer from the first matching rule, or from the defaults for ``schema``."""
        # Always yield, as a real call would, so callers never come to rely on it not suspending.
        await asyncio.sleep(self.latency)
        self.calls.append(ScriptedCall(context, schema.__name__, list(messages)))
        rule = self._take_rule(context, schema)
        if rule is None:
            if not self.scenario.use_defaults:
                raise LLMConfigError(
                    f"no scenario rule matches role={context.role!r} step={context.step_id!r} "
                    f"attempt={context.attempt} round={context.rework_round} "
                    f"iteration={context.iteration} schema={schema.__name__}"
                )
            data: Any = default_response(schema, context, messages)
        elif rule.error == "unavailable":
            raise LLMUnavailable("scripted: the model is unavailable (simulated)")
        elif rule.error == "output_invalid":
            raise LLMOutputInvalid(f"scripted: invalid {schema.__name__} output (simulated)")
        elif callable(rule.response):
            data = rule.response(context, list(messages), schema)
        else:
            data = rule.response
        try:
            value = schema.model_validate(data)
        except ValidationError as exc:
            problem = describe_validation_error(exc)
            raise LLMOutputInvalid(f"scripted {schema.__name__} response: {problem}") from exc
        # About four characters a token, like the real thing, so usage sums are plausible.
        p = max(1, sum(len(m.get("content", "")) for m in messages) // 4)
        c = max(1, len(value.model_dump_json()) // 4)
        # total_tokens explicitly: Usage only checks it against the parts when it is given.
        usage = Usage(prompt_tokens=p, completion_tokens=c, total_tokens=p + c)
        return LLMResponse(value=value, usage=usage, model=self.model, provider=self.name)

    def _take_rule(self, context: CallContext, schema: type[BaseModel]) -> Rule | None:
        for index, rule in enumerate(self.scenario.rules):
            if rule.times is not None and self._uses[index] >= rule.times:
                continue
            if rule.matches(context, schema):
                self._uses[index] += 1
                return rule
        return None


# --- defaults -------------------------------------------------------------------------


def default_response(
    schema: type[BaseModel], context: CallContext, messages: Sequence[Message]
) -> dict[str, Any]:
    """The built-in answer for ``schema`` when no rule matches."""
    if issubclass(schema, TaskGraph):
        return _default_plan(context, messages)
    if issubclass(schema, ThoughtAction):
        return _default_thought(context, messages)
    if issubclass(schema, AuditReport):
        return _default_audit(context)
    return _fill_required(schema, _goal(context, messages))


def _default_plan(context: CallContext, messages: Sequence[Message]) -> dict[str, Any]:
    goal = _goal(context, messages)
    requested = [r for r in context.extra.get("roles") or () if r not in RESERVED_ROLES]
    roles = requested or list(DEFAULT_ROLES)
    steps: list[dict[str, Any]] = []
    for role in roles:
        step_id = _unique(_STEP_IDS.get(role) or _slug(role), {s["id"] for s in steps})
        text = _STEP_TEXT.get(role, f"As the {role}, do your part of the work on the goal.")
        steps.append(
            {"id": step_id, "role": role, "instruction": f"{text} Goal: {goal}", "depends_on": []}
        )
    parallel = [s["id"] for s in steps]
    steps.append(
        {
            "id": _unique("report", set(parallel)),
            # A writer if the deployment has one; otherwise a role that is surely served.
            "role": "writer" if "writer" in roles else roles[-1],
            "instruction": f"Combine the outputs of {', '.join(parallel)} into one clear, "
            f"well-structured report that answers the goal. Goal: {goal}",
            "depends_on": parallel,
        }
    )
    return {"goal": goal, "steps": steps}


def _default_thought(context: CallContext, messages: Sequence[Message]) -> dict[str, Any]:
    goal = _goal(context, messages)
    instruction = _instruction(messages) or f"the {context.role} part of the goal"
    lines = [
        f"### {context.step_id or context.role}: {_clip(instruction, 80)}",
        "",
        "_Scripted output — not written by an LLM._",
        "",
        f"Goal: {goal}",
        "",
        f"- **Scope:** what the goal asks for, seen from the {context.role}'s side.",
        "- **Main points:** the two or three considerations that matter most, with a reason each.",
        "- **Open questions:** what would need real data or an expert to settle.",
    ]
    if context.rework_round > 0:
        lines += ["", f"**Revised in rework round {context.rework_round}** to address the audit:"]
        notes = context.extra.get("rework_notes") or ["the auditor's findings"]
        lines += [f"- {note}" for note in notes]
    return {
        "thought": "The instruction is clear; I can answer directly without tools.",
        "action": "final_answer",
        "action_input": "\n".join(lines),
    }


def _default_audit(context: CallContext) -> dict[str, Any]:
    if context.rework_round >= 1:
        return {
            "passed": True,
            "score": 0.9,
            "summary": f"Scripted audit, round {context.rework_round}: the reworked output "
            "addresses the earlier findings and the results answer the goal.",
            "findings": [],
        }
    # Without step ids the finding names the first step of the default plan.
    target = (context.extra.get("step_ids") or ["analysis"])[0]
    return {
        "passed": False,
        "score": 0.55,
        "summary": f"Scripted audit, round 0: the results cover the goal, but step "
        f"'{target}' is too generic to support the final answer.",
        "findings": [
            {
                "step_id": target,
                "problem": "The output states its main points without concrete examples "
                "or explicit assumptions.",
                "rework_suggestions": [
                    "Add two concrete examples that support the main points.",
                    "List the assumptions and constraints explicitly.",
                    "End with a one-paragraph conclusion that answers the goal directly.",
                ],
            }
        ],
    }


def _fill_required(schema: type[BaseModel], goal: str, depth: int = 0) -> dict[str, Any]:
    return {
        info.alias or name: _placeholder(info.annotation, info.metadata, name, goal, depth)
        for name, info in schema.model_fields.items()
        if info.is_required()
    }


def _placeholder(tp: Any, metadata: list[Any], name: str, goal: str, depth: int) -> Any:
    """A value of type ``tp`` that satisfies simple constraints (bounds, lengths)."""
    origin, args = get_origin(tp), get_args(tp)
    if origin is Annotated:
        return _placeholder(args[0], [*metadata, *args[1:]], name, goal, depth)
    if origin in (Union, types.UnionType):
        real = [a for a in args if a is not type(None)]
        return _placeholder(real[0], metadata, name, goal, depth) if real else None
    if origin is Literal:
        return args[0]
    bound = {k: getattr(m, k) for m in metadata for k in ("ge", "gt", "min_length", "max_length")
             if getattr(m, k, None) is not None}  # fmt: skip
    if tp is bool:
        return True
    if tp in (int, float):
        if "ge" in bound:
            return bound["ge"]
        return bound["gt"] + 1 if "gt" in bound else 0
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return next(iter(tp)).value
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return _fill_required(tp, goal, depth + 1) if depth < 5 else {}
    container = origin or tp
    if isinstance(container, type) and issubclass(container, Mapping):
        return {}
    if (
        isinstance(container, type)
        and issubclass(container, (Sequence, AbstractSet))
        and not issubclass(container, (str, bytes))
    ):
        item = args[0] if args else str
        return [
            _placeholder(item, [], name, goal, depth) for _ in range(bound.get("min_length", 0))
        ]
    text = _text_for(name, goal)  # str, Any, and whatever else we do not know
    if "min_length" in bound and len(text) < bound["min_length"]:
        text = text.ljust(bound["min_length"], ".")
    return text[: bound["max_length"]] if "max_length" in bound else text


def _text_for(name: str, goal: str) -> str:
    if name in {"answer", "final_answer", "markdown", "output", "report", "content", "result"}:
        return (
            f"## {_clip(goal, 100)}\n\n_Scripted answer — not written by an LLM._\n\n"
            "The steps' results were combined into this answer:\n\n"
            "- **Findings:** the main points the analysis and research produced.\n"
            "- **Recommendation:** the option that best fits the stated constraints.\n"
            "- **Next steps:** what to verify with real data before acting on it."
        )
    return f"Scripted {name.replace('_', ' ')} for: {_clip(goal, 120)}"


def _last_user_text(messages: Sequence[Message]) -> str:
    return next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")


def _goal(context: CallContext, messages: Sequence[Message]) -> str:
    if context.goal:
        return context.goal
    first = next((ln.strip() for ln in _last_user_text(messages).splitlines() if ln.strip()), "")
    return _clip(first, 200) or "the goal"


def _instruction(messages: Sequence[Message]) -> str:
    """The text after an ``Instruction:`` label or heading, else the first line."""
    lines = [ln.strip() for ln in _last_user_text(messages).splitlines()]
    for i, line in enumerate(lines):
        # "Instruction: …", "**Instruction:** …" or a "## Instruction" heading, not
        # any line that merely starts with the word ("Instructional design …").
        match = re.match(r"^[#*\s]*instructions?[*\s]*(?::[*\s]*(.*))?$", line, re.I)
        rest = match and (
            (match.group(1) or "").strip() or next((n for n in lines[i + 1 :] if n), "")
        )
        if rest:
            return rest
    return next((ln for ln in lines if ln), "")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-._")[:48] or "step"


def _unique(base: str, taken: set[str]) -> str:
    candidate, n = base, 2
    while candidate in taken:
        candidate, n = f"{base}-{n}", n + 1
    return candidate


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


__all__ = ["DEFAULT_ROLES", "Rule", "Scenario", "ScriptedCall", "ScriptedModel", "default_response"]
