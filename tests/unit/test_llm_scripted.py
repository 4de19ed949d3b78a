"""ScriptedModel: scenario rules, the built-in defaults, scenario files — all without I/O."""

from __future__ import annotations

import enum
import json
import re
import socket
from typing import Annotated, Any, Literal

import pytest
from pydantic import BaseModel, Field

from agent_manager.llm import (
    CallContext,
    LLMConfigError,
    LLMOutputInvalid,
    LLMUnavailable,
    Rule,
    Scenario,
    ScriptedModel,
    build_llm_client,
)
from agent_manager.models import STEP_ID_PATTERN, AuditReport, TaskGraph, ThoughtAction

GOAL = "Compare three queueing designs and write a recommendation"


class Synthesis(BaseModel):
    """The shape the synthesizer will use; unknown to the scripted model."""

    answer: str
    unresolved: list[str]


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Inner(BaseModel):
    label: str
    weight: float = Field(gt=0.5)


class Awkward(BaseModel):
    """Required fields of many kinds, each with a constraint the filler must meet."""

    title: Annotated[str, Field(min_length=80)]
    short: str = Field(max_length=5)
    count: int = Field(ge=3)
    ok: bool
    kind: Literal["x", "y"]
    colour: Colour
    inner: Inner
    maybe: int | None
    tags: list[str] = Field(min_length=1)
    meta: dict[str, Any]
    optional: str = "kept default"


def ctx(role: str = "writer", **kw: Any) -> CallContext:
    kw.setdefault("goal", GOAL)
    return CallContext(role=role, **kw)


def user(text: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": "You are a careful worker."},
        {"role": "user", "content": text},
    ]


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """The scripted model must never open a connection."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the scripted model tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


# --- labelling and usage ----------------------------------------------------------------


async def test_is_labelled_as_not_an_llm() -> None:
    model = ScriptedModel()
    assert model.name == "scripted"
    assert model.model == "scripted (not an LLM)"
    resp = await model.complete(messages=user("hi"), schema=ThoughtAction, context=ctx())
    assert resp.provider == "scripted"
    assert resp.model == "scripted (not an LLM)"
    assert resp.attempts == 1
    await model.aclose()


async def test_usage_is_derived_from_message_lengths() -> None:
    short = await ScriptedModel().complete(messages=user("x"), schema=ThoughtAction, context=ctx())
    long = await ScriptedModel().complete(
        messages=user("x" * 4000), schema=ThoughtAction, context=ctx()
    )
    assert short.usage.prompt_tokens > 0
    assert short.usage.completion_tokens > 0
    assert short.usage.total_tokens == short.usage.prompt_tokens + short.usage.completion_tokens
    assert long.usage.prompt_tokens >= short.usage.prompt_tokens + 1000


async def test_calls_are_recorded() -> None:
    model = ScriptedModel()
    context = ctx("analyst", step_id="analysis")
    await model.complete(messages=user("Instruction: think"), schema=ThoughtAction, context=context)
    [call] = model.calls
    assert call.context == context
    assert call.schema_name == "ThoughtAction"
    assert call.messages[-1]["content"] == "Instruction: think"


# --- defaults ---------------------------------------------------------------------------


async def test_default_plan_has_three_parallel_steps_and_a_dependent_report() -> None:
    resp = await ScriptedModel().complete(
        messages=user(GOAL), schema=TaskGraph, context=ctx("planner")
    )
    plan = resp.value
    assert plan.goal == GOAL
    *parallel, final = plan.steps
    assert [s.role for s in parallel] == ["analyst", "researcher", "writer"]
    assert all(s.depends_on == [] for s in parallel)
    assert final.role == "writer"
    assert final.depends_on == [s.id for s in parallel]
    assert len({s.id for s in plan.steps}) == 4
    assert all(GOAL in s.instruction for s in plan.steps)


async def test_default_plan_uses_the_roles_given_and_skips_reserved_ones() -> None:
    context = ctx("planner", extra={"roles": ["coder", "code reviewer", "auditor"]})
    plan = (await ScriptedModel().complete(messages=[], schema=TaskGraph, context=context)).value
    assert [s.role for s in plan.steps] == ["coder", "code reviewer", "code reviewer"]
    assert plan.steps[-1].depends_on == [s.id for s in plan.steps[:-1]]
    assert all(re.match(STEP_ID_PATTERN, s.id) for s in plan.steps)


async def test_default_thought_is_one_final_answer_about_the_instruction() -> None:
    messages = user(
        f"Goal: {GOAL}\nInstructional notes follow.\n\n"
        "## Instruction\n\nList the trade-offs of each design.\n"
    )
    context = ctx("analyst", step_id="analysis", iteration=0)
    step = (
        await ScriptedModel().complete(messages=messages, schema=ThoughtAction, context=context)
    ).value
    assert step.action == "final_answer"
    text = step.action_input
    assert isinstance(text, str)
    assert "List the trade-offs of each design." in text
    assert "analysis" in text
    assert GOAL in text
    assert "not written by an LLM" in text


async def test_default_thought_in_a_rework_round_mentions_the_notes() -> None:
    context = ctx(
        "analyst", step_id="analysis", rework_round=1, extra={"rework_notes": ["Add examples."]}
    )
    step = (
        await ScriptedModel().complete(
            messages=user("Instruction: redo"), schema=ThoughtAction, context=context
        )
    ).value
    assert "rework round 1" in step.action_input
    assert "Add examples." in step.action_input


async def test_default_audit_fails_round_zero_and_passes_round_one() -> None:
    model = ScriptedModel()
    extra = {"step_ids": ["research", "analysis", "report"]}
    first = (
        await model.complete(messages=[], schema=AuditReport, context=ctx("auditor", extra=extra))
    ).value
    assert first.passed is False
    assert first.score == pytest.approx(0.55)
    [finding] = first.findings
    assert finding.step_id == "research"
    assert len(finding.rework_suggestions) >= 2
    second = (
        await model.complete(
            messages=[], schema=AuditReport, context=ctx("auditor", rework_round=1, extra=extra)
        )
    ).value
    assert second.passed is True
    assert second.score == pytest.approx(0.9)
    assert second.findings == []


async def test_default_audit_without_step_ids_targets_the_default_plan() -> None:
    report = (
        await ScriptedModel().complete(messages=[], schema=AuditReport, context=ctx("auditor"))
    ).value
    assert [f.step_id for f in report.findings] == ["analysis"]


async def test_unknown_schema_gets_required_fields_filled() -> None:
    synthesis = (
        await ScriptedModel().complete(messages=[], schema=Synthesis, context=ctx("synthesizer"))
    ).value
    assert GOAL[:50] in synthesis.answer
    assert synthesis.answer.startswith("## ")
    assert synthesis.unresolved == []

    awkward = (await ScriptedModel().complete(messages=[], schema=Awkward, context=ctx())).value
    assert len(awkward.title) >= 80
    assert len(awkward.short) <= 5
    assert awkward.count == 3
    assert awkward.ok is True
    assert awkward.kind == "x"
    assert awkward.colour is Colour.RED
    assert awkward.inner.weight > 0.5
    assert len(awkward.tags) == 1
    assert awkward.meta == {}
    assert awkward.optional == "kept default"


# --- rules ------------------------------------------------------------------------------


def _answer(text: str) -> dict[str, Any]:
    return {"thought": "scripted", "action": "final_answer", "action_input": text}


async def test_rules_match_on_role_step_attempt_round_and_schema() -> None:
    scenario = Scenario(
        rules=[
            Rule(step_id="research", attempt=2, response=_answer("research, attempt 2")),
            Rule(role="researcher", rework_round=1, response=_answer("researcher, round 1")),
            Rule(role="researcher", iteration=3, response=_answer("researcher, iteration 3")),
            Rule(role="researcher", schema_name="ThoughtAction", response=_answer("researcher")),
        ]
    )
    model = ScriptedModel(scenario)

    async def ask(**kw: Any) -> str:
        resp = await model.complete(messages=[], schema=ThoughtAction, context=ctx(**kw))
        return resp.value.action_input

    assert await ask(role="researcher", step_id="research", attempt=2) == "research, attempt 2"
    assert await ask(role="researcher", step_id="research", rework_round=1) == "researcher, round 1"
    assert await ask(role="researcher", iteration=3) == "researcher, iteration 3"
    assert await ask(role="researcher", step_id="research") == "researcher"
    # No rule for writers: the default answers.
    assert "not written by an LLM" in await ask(role="writer")


async def test_times_spends_a_rule_then_later_rules_answer() -> None:
    scenario = Scenario(
        rules=[
            Rule(role="writer", times=1, response=_answer("first")),
            Rule(role="writer", response=_answer("again")),
        ]
    )
    model = ScriptedModel(scenario)
    answers = [
        (await model.complete(messages=[], schema=ThoughtAction, context=ctx())).value.action_input
        for _ in range(3)
    ]
    assert answers == ["first", "again", "again"]
    # Use counts belong to the model: a fresh model starts over with the same scenario.
    fresh = await ScriptedModel(scenario).complete(messages=[], schema=ThoughtAction, context=ctx())
    assert fresh.value.action_input == "first"


async def test_callable_response_sees_context_messages_and_schema() -> None:
    seen: list[Any] = []

    def respond(
        context: CallContext, messages: list[dict[str, str]], schema: type[BaseModel]
    ) -> dict[str, Any]:
        seen.append((context.step_id, messages[-1]["content"], schema.__name__))
        return _answer(f"echo: {messages[-1]['content']}")

    model = ScriptedModel(Scenario(rules=[Rule(response=respond)]))
    resp = await model.complete(
        messages=user("ping"), schema=ThoughtAction, context=ctx(step_id="s1")
    )
    assert resp.value.action_input == "echo: ping"
    assert seen == [("s1", "ping", "ThoughtAction")]


async def test_error_rules_simulate_failures() -> None:
    scenario = Scenario(
        rules=[
            Rule(attempt=1, error="unavailable"),
            Rule(attempt=2, error="output_invalid"),
        ]
    )
    model = ScriptedModel(scenario)
    with pytest.raises(LLMUnavailable) as unavailable:
        await model.complete(messages=[], schema=ThoughtAction, context=ctx(attempt=1))
    assert unavailable.value.retryable is True
    with pytest.raises(LLMOutputInvalid):
        await model.complete(messages=[], schema=ThoughtAction, context=ctx(attempt=2))
    ok = await model.complete(messages=[], schema=ThoughtAction, context=ctx(attempt=3))
    assert ok.value.action == "final_answer"


async def test_a_response_that_does_not_fit_the_schema_is_output_invalid() -> None:
    model = ScriptedModel(Scenario(rules=[Rule(response={"passed": "maybe"})]))
    with pytest.raises(LLMOutputInvalid, match="AuditReport"):
        await model.complete(messages=[], schema=AuditReport, context=ctx("auditor"))


async def test_without_defaults_an_unmatched_call_names_the_context() -> None:
    model = ScriptedModel(Scenario(use_defaults=False))
    with pytest.raises(LLMConfigError, match=r"role='writer' step='draft'.*schema=ThoughtAction"):
        await model.complete(messages=[], schema=ThoughtAction, context=ctx(step_id="draft"))


def test_a_rule_needs_exactly_one_outcome() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        Rule(role="writer")
    with pytest.raises(ValueError, match="exactly one"):
        Rule(role="writer", response={}, error="unavailable")


# --- scenario files ---------------------------------------------------------------------


async def test_scenario_loads_from_a_json_file(tmp_path: Any) -> None:
    path = tmp_path / "scenario.json"
    path.write_text(
        json.dumps(
            {
                "description": "the auditor always passes",
                "rules": [
                    {
                        "role": "auditor",
                        "schema_name": "AuditReport",
                        "response": {"passed": True, "score": 1.0, "summary": "fine"},
                    },
                    {"step_id": "flaky", "attempt": 1, "times": 1, "error": "unavailable"},
                ],
            }
        )
    )
    scenario = Scenario.from_file(path)
    assert scenario.description == "the auditor always passes"
    assert scenario.rules[1].times == 1

    model = build_llm_client(provider="scripted", scenario_path=str(path))
    assert isinstance(model, ScriptedModel)
    report = await model.complete(messages=[], schema=AuditReport, context=ctx("auditor"))
    assert report.value.passed is True
    with pytest.raises(LLMUnavailable):
        await model.complete(messages=[], schema=ThoughtAction, context=ctx(step_id="flaky"))
    again = await model.complete(messages=[], schema=ThoughtAction, context=ctx(step_id="flaky"))
    assert again.value.action == "final_answer"


def test_scenario_file_problems_are_config_errors(tmp_path: Any) -> None:
    with pytest.raises(LLMConfigError, match=r"missing\.json"):
        Scenario.from_file(tmp_path / "missing.json")
    typo = tmp_path / "typo.json"
    typo.write_text(json.dumps({"rules": [{"rol": "writer", "response": {}}]}))
    with pytest.raises(LLMConfigError, match=r"typo\.json.*rol"):
        Scenario.from_file(typo)


def test_build_offline_provider_is_the_scripted_model() -> None:
    assert isinstance(build_llm_client(provider="offline"), ScriptedModel)
    assert isinstance(build_llm_client(provider="Scripted"), ScriptedModel)
    with pytest.raises(LLMConfigError, match="AM_LLM_PROVIDER"):
        build_llm_client(provider="gemini")
