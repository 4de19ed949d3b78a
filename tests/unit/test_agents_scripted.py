"""The built-in agents driven by ScriptedModel: the RA loop, tools, audit, planning, synthesis.

No network; the file tools work on a temporary workspace.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from agent_manager.agents import (
    AuditorAgent,
    Planner,
    PlanningFailed,
    StepOutcome,
    Synthesis,
    Synthesizer,
    ToolContext,
    ToolError,
    ToolRegistry,
    WorkerAgent,
    default_registry,
    precheck_outputs,
)
from agent_manager.agents.prompts import worker_messages
from agent_manager.errors import AgentManagerError
from agent_manager.llm import CallContext, Message, Rule, Scenario, ScriptedModel
from agent_manager.models import AuditReport, FileMode, TaskGraph
from agent_manager.plan import validate_plan
from agent_manager.schemas import ClaimContext, ClaimedStep, ClaimPublic

GOAL = "Compare three queueing designs and write a recommendation"


def make_claim(
    *,
    role: str = "analyst",
    step_id: str = "analysis",
    instruction: str = "Summarise the numbers in data.txt.",
    dependencies: dict[str, Any] | None = None,
    rework_notes: list[str] | None = None,
) -> ClaimPublic:
    return ClaimPublic(
        task_id="t-1",
        step=ClaimedStep(
            id=step_id,
            role=role,
            instruction=instruction,
            depends_on=list(dependencies or {}),
            files=[],
            attempt=1,
            max_attempts=3,
            # The server starts a reworked step in the round of the audit that flagged it.
            rework_round=1 if rework_notes else 0,
        ),
        goal=GOAL,
        claim_token="tok",
        lease_expires_at=datetime.now(UTC) + timedelta(seconds=60),
        lease_seconds=60,
        context=ClaimContext(
            dependencies=dependencies or {}, rework_notes=rework_notes or [], extra={}
        ),
    )


def act(action: str, action_input: Any, thought: str = "next") -> dict[str, Any]:
    return {"thought": thought, "action": action, "action_input": action_input}


def last_observation(messages: list[Message]) -> str:
    last = messages[-1]
    assert last["role"] == "user"
    assert last["content"].startswith("Observation: ")
    return last["content"].removeprefix("Observation: ")


def entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def model(*rules: Rule, use_defaults: bool = True) -> ScriptedModel:
    return ScriptedModel(Scenario(rules=list(rules), use_defaults=use_defaults))


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    ws.mkdir()
    return ws


# --- the reasoning–acting loop ----------------------------------------------------------


async def test_observation_drives_the_next_thought(workspace: Path) -> None:
    (workspace / "data.txt").write_text("revenue: 42\ncosts: 17\n")

    def answer_from_observation(ctx: CallContext, messages: list[Message], schema: Any) -> Any:
        seen = last_observation(messages)
        revenue = next(ln.split(":")[1].strip() for ln in seen.splitlines() if "revenue" in ln)
        return act("final_answer", f"Revenue is {revenue}.", thought=f"the file says {revenue}")

    llm = model(
        Rule(role="analyst", iteration=0, response=act("read_file", {"path": "data.txt"})),
        Rule(role="analyst", iteration=1, response=answer_from_observation),
    )
    outcome = await WorkerAgent(llm).run(make_claim(), workspace=workspace)

    assert outcome.status == "success", outcome.error
    assert outcome.output == "Revenue is 42."
    assert [t.action for t in outcome.ra_history] == ["read_file", "final_answer"]
    assert outcome.ra_history[0].observation == "revenue: 42\ncosts: 17\n"
    assert outcome.ra_history[1].thought == "the file says 42"
    assert outcome.ra_history[1].observation is None
    # The second request replays the first turn and carries the observation.
    second = llm.calls[1].messages
    assert json.loads(second[-2]["content"])["action"] == "read_file"
    assert second[-2]["role"] == "assistant"
    assert [c.context.iteration for c in llm.calls] == [0, 1]
    # Usage is the sum of both calls.
    assert outcome.usage.total_tokens > 0
    assert outcome.usage.total_tokens == (
        outcome.usage.prompt_tokens + outcome.usage.completion_tokens
    )


async def test_first_request_carries_goal_instruction_dependencies_notes_and_tools(
    workspace: Path,
) -> None:
    llm = model()  # the scripted default answers at once
    claim = make_claim(
        role="writer",
        step_id="report",
        instruction="Write the recommendation.",
        dependencies={"research": "Postgres SKIP LOCKED is fast.", "analysis": {"score": 3}},
        rework_notes=["Cite the benchmark numbers."],
    )
    outcome = await WorkerAgent(llm).run(claim, workspace=workspace)

    assert outcome.status == "success"
    [call] = llm.calls
    system, user = call.messages
    assert system["role"] == "system" and user["role"] == "user"
    assert "You are the writer" in system["content"]
    assert '"final_answer"' in system["content"]
    for name in ("read_file", "write_file", "append_file", "list_files", "search_text"):
        assert f"- {name}:" in system["content"]
    assert '"path"' in system["content"]  # input schemas are shown
    for text in (GOAL, "Write the recommendation.", "Postgres SKIP LOCKED is fast.",
                 '"score": 3', "Cite the benchmark numbers."):  # fmt: skip
        assert text in user["content"]
    assert call.context.extra == {"rework_notes": ["Cite the benchmark numbers."]}
    assert call.context.rework_round == 1
    assert (call.context.role, call.context.step_id, call.context.task_id) == (
        "writer",
        "report",
        "t-1",
    )
    # The scripted default picked the instruction and the notes out of the prompt.
    assert "Write the recommendation." in outcome.output
    assert "Cite the benchmark numbers." in outcome.output


def test_custom_roles_get_the_generic_prompt() -> None:
    messages = worker_messages(make_claim(role="legal-reviewer"), default_registry())
    assert "You are the legal-reviewer" in messages[0]["content"]
    assert "Reasoning–Acting" in messages[0]["content"]


async def test_unknown_tool_is_an_observation_and_the_loop_recovers(workspace: Path) -> None:
    def recover(ctx: CallContext, messages: list[Message], schema: Any) -> Any:
        seen = last_observation(messages)
        assert seen.startswith("error: unknown tool 'browse_web'")
        return act("final_answer", "Done without browsing.")

    llm = model(
        Rule(iteration=0, response=act("browse_web", {"url": "https://example.com"})),
        Rule(iteration=1, response=recover),
    )
    outcome = await WorkerAgent(llm).run(make_claim(), workspace=workspace)

    assert outcome.status == "success", outcome.error
    assert outcome.output == "Done without browsing."
    observation = outcome.ra_history[0].observation or ""
    assert observation.startswith("error: unknown tool 'browse_web'")
    assert "read_file" in observation and "final_answer" in observation


async def test_bad_tool_input_is_an_observation(workspace: Path) -> None:
    llm = model(
        Rule(iteration=0, response=act("write_file", {"content": "no path given"})),
        Rule(iteration=1, response=act("final_answer", "ok")),
    )
    outcome = await WorkerAgent(llm).run(make_claim(), workspace=workspace)
    assert outcome.status == "success"
    observation = outcome.ra_history[0].observation or ""
    assert observation.startswith("error: invalid input for tool 'write_file'")
    assert "path: Field required" in observation
    assert entries(workspace) == []


async def test_empty_final_answer_is_sent_back(workspace: Path) -> None:
    llm = model(
        Rule(iteration=0, response=act("final_answer", "  ")),
        Rule(iteration=1, response=act("final_answer", "the real answer")),
    )
    outcome = await WorkerAgent(llm).run(make_claim(), workspace=workspace)
    assert outcome.output == "the real answer"
    assert (outcome.ra_history[0].observation or "").startswith("error:")


@pytest.mark.parametrize("how", ["absolute", "dotdot", "symlink-dir", "symlink-file"])
async def test_paths_outside_the_workspace_are_refused(
    tmp_path: Path, workspace: Path, how: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("top secret")
    if how.startswith("symlink"):
        try:
            (workspace / "link").symlink_to(outside, target_is_directory=True)
            (workspace / "secret-link.txt").symlink_to(outside / "secret.txt")
        except OSError:
            pytest.skip("symlinks are not available here")
    write_path, read_path = {
        "absolute": (str(outside / "evil.txt"), str(outside / "secret.txt")),
        "dotdot": ("../outside/evil.txt", "../outside/secret.txt"),
        "symlink-dir": ("link/evil.txt", "link/secret.txt"),
        "symlink-file": ("secret-link.txt", "secret-link.txt"),
    }[how]
    llm = model(
        Rule(iteration=0, response=act("write_file", {"path": write_path, "content": "pwned"})),
        Rule(iteration=1, response=act("append_file", {"path": write_path, "content": "!"})),
        Rule(iteration=2, response=act("read_file", {"path": read_path})),
        Rule(iteration=3, response=act("final_answer", "gave up")),
    )
    outcome = await WorkerAgent(llm).run(make_claim(), workspace=workspace)

    assert outcome.status == "success"
    observations = [t.observation or "" for t in outcome.ra_history[:3]]
    for observation in observations:
        assert observation.startswith("error: path"), observation
        assert "workspace" in observation
        assert "top secret" not in observation
    assert not (outside / "evil.txt").exists()
    assert (outside / "secret.txt").read_text() == "top secret"
    assert not (tmp_path / "evil.txt").exists()


async def test_iteration_limit_is_a_clear_non_retryable_failure(workspace: Path) -> None:
    llm = model(Rule(role="analyst", response=act("list_files", {"path": "."})))
    outcome = await WorkerAgent(llm, max_iterations=3).run(make_claim(), workspace=workspace)

    assert outcome.status == "failure"
    assert outcome.retryable is False
    assert outcome.output is None
    assert outcome.error is not None
    assert "iteration limit reached" in outcome.error
    assert "3 turns" in outcome.error
    assert "list_files" in outcome.error
    assert len(outcome.ra_history) == 3
    assert len(llm.calls) == 3
    # The model was warned before its last turn.
    assert "last turn" in llm.calls[-1].messages[-1]["content"]


@pytest.mark.parametrize(
    ("error", "retryable", "code"),
    [("unavailable", True, "llm_unavailable"), ("output_invalid", True, "llm_output_invalid")],
)
async def test_llm_errors_become_failures(
    workspace: Path, error: Any, retryable: bool, code: str
) -> None:
    llm = model(
        Rule(iteration=0, response=act("list_files", {})),
        Rule(iteration=1, error=error),
    )
    outcome = await WorkerAgent(llm).run(make_claim(), workspace=workspace)
    assert outcome.status == "failure"
    assert outcome.retryable is retryable
    assert outcome.error is not None
    assert code in outcome.error and "turn 2" in outcome.error
    assert len(outcome.ra_history) == 1  # the history so far is kept


async def test_llm_config_error_is_not_retryable(workspace: Path) -> None:
    llm = model(use_defaults=False)  # no rule matches: LLMConfigError
    outcome = await WorkerAgent(llm).run(make_claim(), workspace=workspace)
    assert outcome.status == "failure"
    assert outcome.retryable is False
    assert outcome.error is not None and "llm_config" in outcome.error


class Nothing(BaseModel):
    pass


async def test_a_raising_or_slow_tool_does_not_kill_the_step(workspace: Path) -> None:
    tools = ToolRegistry(timeout=0.05)

    @tools.tool
    async def explode(args: Nothing, ctx: ToolContext) -> str:
        """Always fails."""
        raise RuntimeError("kaboom")

    @tools.tool
    async def refuse(args: Nothing, ctx: ToolContext) -> str:
        """Refuses politely."""
        raise ToolError("not today")

    @tools.tool(name="sleepy", description="Takes forever.")
    async def _sleepy(args: Nothing, ctx: ToolContext) -> str:
        await asyncio.sleep(30)
        return "never"

    llm = model(
        Rule(iteration=0, response=act("explode", {})),
        Rule(iteration=1, response=act("refuse", None)),
        Rule(iteration=2, response=act("sleepy", {})),
        Rule(iteration=3, response=act("final_answer", "survived")),
    )
    outcome = await WorkerAgent(llm, tools).run(make_claim(), workspace=workspace)
    assert outcome.output == "survived"
    assert [t.observation for t in outcome.ra_history[:3]] == [
        "error: tool 'explode' failed: RuntimeError: kaboom",
        "error: not today",
        "error: tool 'sleepy' did not finish within 0.05s",
    ]


async def test_step_timeout_ends_the_run(workspace: Path) -> None:
    llm = ScriptedModel(latency=5.0)
    outcome = await WorkerAgent(llm, timeout=0.05).run(make_claim(), workspace=workspace)
    assert outcome.status == "failure"
    assert outcome.retryable is True
    assert outcome.error is not None and "did not finish within 0.05s" in outcome.error


def test_registry_rejects_bad_names() -> None:
    tools = default_registry()
    with pytest.raises(ValueError, match="already registered"):
        tools.register(next(iter(tools)))

    async def final_answer(args: Nothing, ctx: ToolContext) -> str:
        """Not allowed."""
        return ""

    with pytest.raises(ValueError, match="loop's own action"):
        tools.tool(final_answer)

    class Local(BaseModel):
        x: int

    async def local(args: Local, ctx: ToolContext) -> str:
        """Its model is local, so the string annotation cannot be resolved."""
        return str(args.x)

    with pytest.raises(ValueError, match="pass input_model="):
        tools.tool(local)
    tools.tool(local, input_model=Local)
    assert tools.get("local") is not None

    async def untyped(args, ctx):  # type: ignore[no-untyped-def]
        """No model."""

    with pytest.raises(ValueError, match="Pydantic model"):
        tools.tool(untyped)


# --- the file tools ---------------------------------------------------------------------


async def test_file_tools_work_on_the_workspace(workspace: Path) -> None:
    tools = default_registry()
    ctx = ToolContext(workspace=workspace, task_id="t", step_id="s")

    async def call(name: str, args: Any) -> str:
        return await tools.execute(name, args, ctx)

    assert await call("write_file", {"path": "notes/a.md", "content": "alpha\n"}) == (
        "wrote 6 characters to 'notes/a.md'"
    )
    assert await call("append_file", {"path": "notes/a.md", "content": "Beta line\n"}) == (
        "appended 10 characters to 'notes/a.md'"
    )
    assert (workspace / "notes" / "a.md").read_text() == "alpha\nBeta line\n"
    assert await call("read_file", {"path": "notes/a.md"}) == "alpha\nBeta line\n"
    assert await call("read_file", '{"path": "./notes/a.md"}') == "alpha\nBeta line\n"
    assert await call("read_file", "notes/a.md") == "alpha\nBeta line\n"  # bare value

    page = await call("read_file", {"path": "notes/a.md", "offset": 6, "max_chars": 4})
    assert page == "[characters 6-10 of 16; call again with offset=10 for more]\nBeta"

    await call("write_file", {"path": "top.txt", "content": "nothing here\nbeta again"})
    assert await call("list_files", {}) == "notes/\nnotes/a.md\ntop.txt"
    assert await call("list_files", {"path": "notes"}) == "notes/a.md"
    assert await call("list_files", {"recursive": False}) == "notes/\ntop.txt"

    assert await call("search_text", {"query": "beta"}) == (
        "notes/a.md:2: Beta line\ntop.txt:2: beta again"
    )
    assert await call("search_text", {"query": "beta", "case_sensitive": True}) == (
        "top.txt:2: beta again"
    )
    assert await call("search_text", {"query": r"^al\w+", "regex": True}) == "notes/a.md:1: alpha"
    assert await call("search_text", {"query": "zeta"}) == "no matches for 'zeta'"

    missing = await call("read_file", {"path": "nope.txt"})
    assert missing == "error: file 'nope.txt' does not exist"
    assert (await call("read_file", {"path": "notes"})).startswith("error: 'notes' is not a file")
    assert (await call("search_text", {"query": "(", "regex": True})).startswith(
        "error: invalid regular expression"
    )
    assert (await call("read_file", {"path": "."})).startswith("error: path '.'")


async def test_search_does_not_follow_symlinks_out(tmp_path: Path, workspace: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("password=hunter2")
    try:
        (workspace / "leak.txt").symlink_to(outside / "secret.txt")
        (workspace / "dir").symlink_to(outside, target_is_directory=True)
    except OSError:
        pytest.skip("symlinks are not available here")
    tools = default_registry()
    ctx = ToolContext(workspace=workspace)
    assert await tools.execute("search_text", {"query": "password"}, ctx) == (
        "no matches for 'password'"
    )
    listing = await tools.execute("list_files", {}, ctx)
    assert "secret.txt" not in listing


async def test_file_tools_enter_the_lock_hook(workspace: Path) -> None:
    taken: list[tuple[str, str, str]] = []

    @asynccontextmanager
    async def recording_lock(path: str, mode: FileMode) -> AsyncIterator[None]:
        taken.append(("enter", path, mode))
        yield
        taken.append(("exit", path, mode))

    tools = default_registry()
    ctx = ToolContext(workspace=workspace, lock=recording_lock)
    await tools.execute("write_file", {"path": "./a.txt", "content": "x"}, ctx)
    await tools.execute("append_file", {"path": "a.txt", "content": "y"}, ctx)
    await tools.execute("read_file", {"path": "a.txt"}, ctx)
    await tools.execute("search_text", {"query": "x"}, ctx)
    assert taken == [
        ("enter", "a.txt", "write"),
        ("exit", "a.txt", "write"),
        ("enter", "a.txt", "write"),
        ("exit", "a.txt", "write"),
        ("enter", "a.txt", "read"),
        ("exit", "a.txt", "read"),
        ("enter", "a.txt", "read"),
        ("exit", "a.txt", "read"),
    ]


async def test_a_lock_conflict_is_an_observation(workspace: Path) -> None:
    from agent_manager.errors import LockConflict

    @asynccontextmanager
    async def busy(path: str, mode: FileMode) -> AsyncIterator[None]:
        raise LockConflict(f"'{path}' is held by step 'other'")
        yield  # pragma: no cover - never reached

    llm = model(
        Rule(iteration=0, response=act("write_file", {"path": "a.txt", "content": "x"})),
        Rule(iteration=1, response=act("final_answer", "waited")),
    )
    outcome = await WorkerAgent(llm).run(make_claim(), workspace=workspace, lock=busy)
    assert outcome.ra_history[0].observation == "error: 'a.txt' is held by step 'other'"
    assert not (workspace / "a.txt").exists()


def test_tool_error_is_in_the_exception_tree() -> None:
    assert issubclass(ToolError, AgentManagerError)
    assert issubclass(PlanningFailed, AgentManagerError)


# --- the auditor ------------------------------------------------------------------------

PLAN = [
    {"id": "good", "role": "analyst", "instruction": "Compare the designs.", "depends_on": []},
    {"id": "empty", "role": "researcher", "instruction": "Find benchmarks.", "depends_on": []},
    {"id": "todo", "role": "writer", "instruction": "Draft the text.", "depends_on": []},
    {"id": "absent", "role": "writer", "instruction": "Write the summary.", "depends_on": []},
]
OUTPUTS = {
    "good": "Design A wins on latency; B on cost. A is recommended.",
    "empty": "   ",
    "todo": "## Draft\nTODO: write the comparison",
}


@pytest.mark.parametrize(
    ("output", "flagged"),
    [
        ("lorem ipsum dolor sit amet", True),
        ("Results: [Insert analysis here]", True),
        ("...", True),
        ("N/A", True),
        ("n/a.", True),
        ("TBD", True),
        ("This is placeholder text.", True),
        ({"summary": "TODO"}, True),
        ({"summary": ""}, True),
        ([], True),
        (None, True),
        ("The total is 42.", False),
        ("Q3 values: N/A because the data is missing; Q4 grew 5%.", False),
        ("Keep a todo list for follow-ups.", False),
        ({"summary": "Queue A is best.", "score": 0.8}, False),
        (0, False),
    ],
)
def test_precheck_placeholder_detection(output: Any, flagged: bool) -> None:
    plan = [{"id": "s", "role": "analyst", "instruction": "Do it."}]
    findings = precheck_outputs(plan, {"s": output})
    assert bool(findings) is flagged, findings
    for finding in findings:
        assert finding.step_id == "s"
        assert finding.rework_suggestions


async def test_auditor_prechecks_override_a_lenient_model() -> None:
    lenient = {
        "passed": True,
        "score": 0.95,
        "summary": "All good.",
        "findings": [
            # A step outside the plan: dropped.
            {"step_id": "ghost", "problem": "does not exist", "rework_suggestions": ["x"]},
            # The same step as a pre-check: merged into one entry.
            {"step_id": "todo", "problem": "too short", "rework_suggestions": ["Expand it."]},
        ],
    }
    llm = model(Rule(role="auditor", response=lenient))
    report, usage = await AuditorAgent(llm).review(
        goal=GOAL, plan=PLAN, outputs=OUTPUTS, rework_round=0, task_id="t-1"
    )

    assert report.passed is False
    assert report.score <= 0.5
    assert "Pre-checks flagged 3 step(s)" in report.summary
    assert [f.step_id for f in report.findings] == ["empty", "todo", "absent"]
    by_id = {f.step_id: f for f in report.findings}
    assert "empty" in by_id["empty"].problem
    assert "Find benchmarks." in by_id["empty"].rework_suggestions[0]
    assert "placeholder" in by_id["todo"].problem and "'TODO'" in by_id["todo"].problem
    assert "too short" in by_id["todo"].problem
    assert "Expand it." in by_id["todo"].rework_suggestions
    assert "no output" in by_id["absent"].problem
    assert all(f.rework_suggestions for f in report.findings)
    assert usage.total_tokens > 0

    [call] = llm.calls
    assert call.context.role == "auditor"
    assert call.context.task_id == "t-1"
    assert call.context.extra["step_ids"][:3] == ["empty", "todo", "absent"]
    assert set(call.context.extra["step_ids"]) == {"good", "empty", "todo", "absent"}
    prompt = call.messages[-1]["content"]
    assert "Pre-check findings" in prompt
    assert "Design A wins on latency" in prompt and "Compare the designs." in prompt
    assert "contradicts the output of a step it depends on" in call.messages[0]["content"]


async def test_auditor_passes_clean_outputs_through_the_model() -> None:
    outputs = {"good": OUTPUTS["good"], "other": "Benchmarks: A 3ms, B 9ms."}
    plan: list[dict[str, Any]] = [
        PLAN[0],
        {"id": "other", "role": "researcher", "instruction": "Benchmarks."},
    ]
    llm = model()  # scripted default: round 0 fails the first step id, round 1 passes
    auditor = AuditorAgent(llm)

    report0, _ = await auditor.review(goal=GOAL, plan=plan, outputs=outputs, rework_round=0)
    assert report0.passed is False
    assert [f.step_id for f in report0.findings] == ["good"]

    report1, _ = await auditor.review(goal=GOAL, plan=plan, outputs=outputs, rework_round=1)
    assert report1.passed is True and report1.findings == []
    assert "rework round 1" in llm.calls[1].messages[-1]["content"]


# --- the planner ------------------------------------------------------------------------

CYCLIC = {
    "goal": GOAL,
    "steps": [
        {"id": "a", "role": "analyst", "instruction": "A", "depends_on": ["b"]},
        {"id": "b", "role": "researcher", "instruction": "B", "depends_on": ["a"]},
    ],
}


async def test_planner_reasks_after_a_cyclic_plan() -> None:
    roles = ["analyst", "researcher", "writer"]
    llm = model(Rule(role="planner", times=1, response=CYCLIC))
    graph, usage = await Planner(llm).plan(goal=GOAL, roles=roles, task_id="t-1")

    assert isinstance(graph, TaskGraph)
    assert graph.goal == GOAL
    validate_plan(graph.steps)  # really valid
    assert {s.role for s in graph.steps} <= set(roles)
    assert len(llm.calls) == 2
    first, second = llm.calls
    assert first.context.extra == {"roles": roles}
    assert (first.context.iteration, second.context.iteration) == (0, 1)
    feedback = second.messages[-1]
    assert feedback["role"] == "user"
    assert "steps form a cycle" in feedback["content"]
    assert "a -> b -> a" in feedback["content"] or "b -> a -> b" in feedback["content"]
    assert json.loads(second.messages[-2]["content"])["steps"][0]["depends_on"] == ["b"]
    assert "Available roles" in first.messages[-1]["content"]
    assert usage.total_tokens > 0


async def test_planner_gives_up_after_max_attempts() -> None:
    llm = model(Rule(role="planner", response=CYCLIC))
    with pytest.raises(PlanningFailed) as caught:
        await Planner(llm, max_attempts=2).plan(goal=GOAL, roles=["analyst", "researcher"])
    assert len(llm.calls) == 2
    assert caught.value.attempts == 2
    assert "no valid plan after 2 attempt(s)" in caught.value.message
    assert "steps form a cycle" in caught.value.message
    assert caught.value.problems and "cycle" in caught.value.problems[0]


async def test_planner_names_roles_that_are_not_available() -> None:
    bad = {
        "goal": GOAL,
        "steps": [
            {"id": "x", "role": "poet", "instruction": "Rhyme.", "depends_on": []},
            {"id": "y", "role": "analyst", "instruction": "Think.", "depends_on": ["zz"]},
        ],
    }
    llm = model(Rule(role="planner", times=1, response=bad))
    graph, _ = await Planner(llm).plan(goal=GOAL, roles=["analyst"], constraints="Be brief.")
    assert {s.role for s in graph.steps} == {"analyst"}
    feedback = llm.calls[1].messages[-1]["content"]
    assert "step 'x': role 'poet' is not one of the available roles (analyst)" in feedback
    assert "step 'y': depends on unknown step 'zz'" in feedback
    assert "Be brief." in llm.calls[0].messages[-1]["content"]


# --- the synthesizer --------------------------------------------------------------------


async def test_synthesizer_returns_a_synthesis() -> None:
    report = AuditReport(passed=False, score=0.5, summary="Weak evidence.", findings=[])
    unresolved = [{"step_id": "research", "problem": "no benchmark sources"}]
    llm = model()
    synthesis, usage = await Synthesizer(llm).synthesize(
        goal=GOAL,
        plan=[{"id": "research", "role": "researcher", "instruction": "Find benchmarks."}],
        outputs={"research": "A: 3ms, B: 9ms"},
        audits=[report],
        unresolved=unresolved,
        task_id="t-1",
    )
    assert isinstance(synthesis, Synthesis)
    assert synthesis.answer.strip()
    # The scripted model does not fill 'unresolved'; the synthesizer keeps the findings.
    assert synthesis.unresolved == ["Step 'research': no benchmark sources"]
    assert usage.total_tokens > 0
    [call] = llm.calls
    assert call.schema_name == "Synthesis"
    prompt = call.messages[-1]["content"]
    for text in (GOAL, "A: 3ms, B: 9ms", "Weak evidence.", "no benchmark sources"):
        assert text in prompt


async def test_synthesizer_keeps_the_models_unresolved_list() -> None:
    answer = {"answer": "# Use A", "unresolved": ["Benchmarks are unverified."]}
    llm = model(Rule(role="synthesizer", response=answer))
    synthesis, _ = await Synthesizer(llm).synthesize(
        goal=GOAL, plan=[], outputs={"x": "y"}, audits=[], unresolved=[{"problem": "p"}]
    )
    assert synthesis == Synthesis(answer="# Use A", unresolved=["Benchmarks are unverified."])


def test_step_outcome_shape() -> None:
    outcome = StepOutcome(status="failure", error="boom", retryable=True)
    assert outcome.model_dump() == {
        "status": "failure",
        "output": None,
        "ra_history": [],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        "error": "boom",
        "retryable": True,
    }
