"""Every prompt the built-in agents send, in one place.

System prompts: :data:`PLANNER_PROMPT`, :data:`AUDITOR_PROMPT`, :data:`SYNTHESIZER_PROMPT`,
a worker prompt per built-in role (:data:`WORKER_ROLE_PROMPTS`: analyst, researcher,
writer) and :data:`GENERIC_WORKER_PROMPT` for any custom role. Workers follow the
reasoning–acting protocol in :data:`REACT_PROTOCOL`.

Message builders turn the agents' inputs into chat messages (``[{"role", "content"}]``):
:func:`worker_messages`, :func:`observation_message`, :func:`planner_messages`,
:func:`plan_problems_message`, :func:`auditor_messages`, :func:`synthesizer_messages`.
Long values (dependency outputs, observations) are clipped so one huge output cannot
blow the model's context window.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from agent_manager.agents.tools import FINAL_ANSWER, ToolRegistry
from agent_manager.llm.base import Message
from agent_manager.models import AuditFinding, AuditReport, ThoughtAction
from agent_manager.schemas import ClaimPublic

#: How much of one dependency output, step output or observation goes into a prompt.
MAX_VALUE_CHARS = 12_000

REACT_PROTOCOL = """\
You work in a Reasoning–Acting loop, one turn at a time.

Every reply is exactly ONE JSON object and nothing else (no prose, no Markdown fences):
{"thought": "...", "action": "...", "action_input": ...}

- "thought": your reasoning for this turn: what you know, what is missing, what you do next.
- "action": the name of ONE tool from the tool list, or "final_answer".
- "action_input": for a tool, a JSON object matching that tool's input schema;
  for "final_answer", your complete result for this step.

After a tool action the next message brings the tool's result, starting with
"Observation:". Read it before you choose the next action. An observation starting with
"error:" means the call did not work: fix the input or take another approach; never
repeat the same failing call unchanged. Never write an observation yourself, and never
put more than one action in a reply.

Use tools only when they help. If you can do the step without them, reply with
"final_answer" straight away. You have at most {max_turns} turns; the step fails if
you have not given a "final_answer" by then."""

_WORKER_RULES = """\
Rules for your final answer:
- Do exactly what your step's instruction asks; other steps cover the rest of the goal.
- Build on the outputs of the steps yours depends on; do not contradict them without
  saying why.
- If the request lists rework notes from the auditor, address every one of them.
- Deliver finished content. Placeholders (TODO, TBD, lorem ipsum, "[insert …]", "...",
  "N/A") are rejected by the auditor.
- Unless the instruction asks for another structure, the final answer is a Markdown
  string. If the instruction names a file to write, write it with a tool first and
  still give the content (or a summary of it) as the final answer."""

WORKER_ROLE_PROMPTS: dict[str, str] = {
    "analyst": """\
You are the analyst in a team of AI agents working on a shared goal.
You break problems down: name the key questions, constraints, assumptions and criteria;
weigh the options against them with explicit reasoning; quantify where you can. Make
every assumption explicit and end with a conclusion the next step can build on.""",
    "researcher": """\
You are the researcher in a team of AI agents working on a shared goal.
You gather the facts, options, evidence and trade-offs that bear on the goal. Keep
established facts apart from assumptions, say where a fact comes from (a workspace file,
a named source) when you know it, and never invent data or citations: say what is
unknown instead.""",
    "writer": """\
You are the writer in a team of AI agents working on a shared goal.
You turn the outputs of earlier steps into a clear, well-structured document for its
reader: a direct answer first, then the supporting points, with headings and lists
where they help. Use all relevant inputs, keep their facts intact, and do not add
claims they do not support.""",
}

GENERIC_WORKER_PROMPT = """\
You are the {role} in a team of AI agents working on a shared goal.
Do your step as an expert {role} would: thoroughly, concretely, and within the scope
of the instruction."""

PLANNER_PROMPT = """\
You are the planner of a team of AI agents. You turn a goal into a plan: a directed
acyclic graph of steps that workers carry out, in parallel wherever the dependencies
allow. An auditor reviews the steps' outputs and a synthesizer writes the final answer
afterwards, so do not plan steps for those.

Reply with ONE JSON object of this shape and nothing else:
{"goal": "<the goal>",
 "steps": [{"id": "research", "role": "researcher", "instruction": "...",
            "depends_on": [], "files": [{"path": "notes/research.md", "mode": "write"}]},
           {"id": "report", "role": "writer", "instruction": "...",
            "depends_on": ["research"], "files": []}]}

Rules:
- "id": unique; letters, digits, "_", "." and "-", starting with a letter or digit,
  at most 64 characters.
- "role": exactly one of the available roles named in the request. Never "planner",
  "auditor" or "synthesizer".
- "instruction": self-contained. A worker sees only the goal, its own instruction and
  the outputs of the steps it depends on; say what to produce and in what form.
- "depends_on": the ids of the steps whose output this step needs. No unknown ids, no
  step depending on itself, no cycles.
- "files" (optional): files the step will read or write, as paths relative to the
  shared workspace (no absolute paths, no ".."), each with mode "read", "write" or
  "exclusive". Two steps that write the same file must not run in parallel.
- Prefer a few substantial steps (usually two to six). Make independent work parallel,
  and end with one step that combines the branches when there are several."""

AUDITOR_PROMPT = """\
You are the auditor of a team of AI agents. You review the output of every step of a
plan against the goal and that step's instruction, and decide whether the results are
good enough to write the final answer from.

Flag a step when its output:
- is missing or empty, or contains placeholder text (TODO, TBD, lorem ipsum,
  "[insert …]", "..." or "N/A" instead of content);
- does not do what the step's instruction asks (off-topic, incomplete, wrong form);
- contradicts the output of a step it depends on without explaining why;
- makes unsupported or internally inconsistent claims.

Reply with ONE JSON object and nothing else:
{"passed": false, "score": 0.6, "summary": "...",
 "findings": [{"step_id": "...", "problem": "...", "rework_suggestions": ["...", "..."]}]}

- "passed": true only when no step needs rework.
- "score": overall quality from 0.0 to 1.0.
- "findings": at most one per step; "step_id" must be an id from the plan.
- "rework_suggestions": concrete instructions to the worker who redoes the step (what to
  add, fix or remove), not general advice.
- Problems listed under "Pre-check findings" are certain; include them.
- In a rework round, check whether the earlier findings were addressed."""

SYNTHESIZER_PROMPT = """\
You are the synthesizer of a team of AI agents. From the outputs of the plan's steps
you write the final answer to the goal.

Reply with ONE JSON object and nothing else:
{"answer": "<the final answer in Markdown>", "unresolved": ["..."]}

- "answer": complete and self-contained Markdown that answers the goal directly.
  Combine and reconcile the steps' outputs; do not add facts they do not support, and
  do not describe the team's internal process unless the reader needs it.
- "unresolved": the problems the audit left open that the reader should know about,
  one short sentence each; [] when there are none."""


# --- workers ----------------------------------------------------------------------------


def worker_system_prompt(role: str, tools: ToolRegistry, *, max_turns: int = 8) -> str:
    """The system prompt of a worker of ``role``: its role text, the RA protocol, the tools."""
    intro = WORKER_ROLE_PROMPTS.get(role) or GENERIC_WORKER_PROMPT.format(role=role)
    return "\n\n".join(
        [
            intro,
            # str.replace, not format(): the protocol is full of literal JSON braces.
            REACT_PROTOCOL.replace("{max_turns}", str(max_turns)),
            _WORKER_RULES,
            "Tools:\n"
            + tools.describe()
            + f'\n- {FINAL_ANSWER}: finish the step; "action_input" is your complete result.',
        ]
    )


def worker_messages(
    claim: ClaimPublic, tools: ToolRegistry, *, max_turns: int = 8
) -> list[Message]:
    """The opening messages of a worker's RA loop for a claimed step."""
    step = claim.step
    parts = [
        f"# Goal\n{claim.goal}",
        f"## Your step\nStep '{step.id}' (role: {step.role}), attempt {step.attempt} "
        f"of {step.max_attempts}.",
        f"## Instruction\n{step.instruction.strip() or f'Do the {step.role} part of the goal.'}",
    ]
    if step.files:
        files = "\n".join(f"- {f.path} ({f.mode})" for f in step.files)
        parts.append(f"## Files this step declared (paths relative to the workspace)\n{files}")
    deps = claim.context.dependencies
    if deps:
        blocks = [f"### {sid}\n{render(out)}" for sid, out in deps.items()]
        parts.append("## Outputs of the steps this one depends on\n\n" + "\n\n".join(blocks))
    elif step.depends_on:
        parts.append(
            "## Outputs of the steps this one depends on\n(none were available: "
            + ", ".join(step.depends_on)
            + ")"
        )
    if claim.context.rework_notes:
        notes = "\n".join(f"- {note}" for note in claim.context.rework_notes)
        parts.append(
            "## Rework notes from the auditor\nThis step is being redone because the audit "
            f"found problems with its earlier output. Address every note:\n{notes}"
        )
    parts.append("Reply with your first JSON object.")
    return [
        {"role": "system", "content": worker_system_prompt(step.role, tools, max_turns=max_turns)},
        {"role": "user", "content": "\n\n".join(parts)},
    ]


def assistant_message(turn: ThoughtAction) -> Message:
    """The model's own turn, replayed into the conversation (without the observation)."""
    content = json.dumps(
        {"thought": turn.thought, "action": turn.action, "action_input": turn.action_input},
        ensure_ascii=False,
        default=str,
    )
    return {"role": "assistant", "content": content}


def observation_message(observation: str, *, turns_left: int) -> Message:
    """The tool's result, fed back as the next user message."""
    if turns_left <= 1:
        tail = f'This is your last turn: reply with "{FINAL_ANSWER}" now.'
    else:
        tail = f"{turns_left} turns left."
    return {"role": "user", "content": f"Observation: {observation}\n\n({tail})"}


# --- planner ----------------------------------------------------------------------------


def planner_messages(
    *, goal: str, roles: Sequence[str], constraints: str | None = None
) -> list[Message]:
    """The planner's opening messages."""
    parts = [f"# Goal\n{goal}"]
    if roles:
        parts.append("## Available roles\n" + "\n".join(f"- {r}" for r in roles))
    else:
        parts.append(
            "## Available roles\nAny role that fits the work, e.g. analyst, researcher, writer."
        )
    if constraints and constraints.strip():
        parts.append(f"## Constraints\n{constraints.strip()}")
    parts.append("Write the plan as one JSON object.")
    return [
        {"role": "system", "content": PLANNER_PROMPT},
        {"role": "user", "content": "\n\n".join(parts)},
    ]


def plan_problems_message(problems: Sequence[str]) -> Message:
    """Send an invalid plan back to the planner with each problem named."""
    listed = "\n".join(f"- {p}" for p in problems)
    return {
        "role": "user",
        "content": "That plan cannot be used. Problems found:\n"
        f"{listed}\n\nFix every problem and reply with the complete corrected plan "
        "as one JSON object.",
    }


# --- auditor ----------------------------------------------------------------------------


def auditor_messages(
    *,
    goal: str,
    plan: Sequence[Mapping[str, Any]],
    outputs: Mapping[str, Any],
    rework_round: int,
    prechecks: Sequence[AuditFinding] = (),
) -> list[Message]:
    """The auditor's messages: the goal, each step with its instruction and output."""
    parts = [f"# Goal\n{goal}"]
    if rework_round:
        parts.append(
            f"This is rework round {rework_round}: steps flagged by the previous audit were "
            "redone with the rework notes shown. Check that the notes were addressed."
        )
    blocks = []
    for step in plan:
        sid = str(step.get("id"))
        lines = [f"### Step '{sid}' (role: {step.get('role', '?')})"]
        deps = list(step.get("depends_on") or [])
        if deps:
            lines.append("Depends on: " + ", ".join(deps))
        lines.append(f"Instruction: {step.get('instruction') or '(none)'}")
        notes = list(step.get("rework_notes") or [])
        if notes:
            lines.append("Rework notes it was given:\n" + "\n".join(f"- {n}" for n in notes))
        output = render(outputs[sid]) if sid in outputs else "(no output)"
        lines.append(f"Output:\n{output}")
        blocks.append("\n".join(lines))
    parts.append("## Steps and their outputs\n\n" + "\n\n".join(blocks))
    if prechecks:
        found = "\n".join(f"- step '{f.step_id}': {f.problem}" for f in prechecks)
        parts.append(f"## Pre-check findings (certain)\n{found}")
    parts.append("Write the audit report as one JSON object.")
    return [
        {"role": "system", "content": AUDITOR_PROMPT},
        {"role": "user", "content": "\n\n".join(parts)},
    ]


# --- synthesizer ------------------------------------------------------------------------


def synthesizer_messages(
    *,
    goal: str,
    plan: Sequence[Mapping[str, Any]],
    outputs: Mapping[str, Any],
    audits: Sequence[AuditReport],
    unresolved: Sequence[Mapping[str, Any]],
) -> list[Message]:
    """The synthesizer's messages: goal, outputs in plan order, audit verdicts, open issues."""
    parts = [f"# Goal\n{goal}"]
    blocks = []
    for step in plan:
        sid = str(step.get("id"))
        if sid in outputs:
            blocks.append(f"### {sid} ({step.get('role', '?')})\n{render(outputs[sid])}")
    # Outputs of steps the plan does not list still count (e.g. a plan given in short form).
    listed = {str(s.get("id")) for s in plan}
    blocks += [f"### {sid}\n{render(out)}" for sid, out in outputs.items() if sid not in listed]
    parts.append("## Outputs of the steps\n\n" + ("\n\n".join(blocks) or "(none)"))
    if audits:
        verdicts = "\n".join(
            f"- round {i}: {'passed' if a.passed else 'failed'}, score {a.score:.2f}. {a.summary}"
            for i, a in enumerate(audits)
        )
        parts.append(f"## Audit results\n{verdicts}")
    if unresolved:
        issues = "\n".join(
            f"- step '{u.get('step_id', '?')}': {u.get('problem', u)}" for u in unresolved
        )
        parts.append(f"## Problems the audit left unresolved\n{issues}")
    parts.append("Write the final answer as one JSON object.")
    return [
        {"role": "system", "content": SYNTHESIZER_PROMPT},
        {"role": "user", "content": "\n\n".join(parts)},
    ]


def render(value: Any, limit: int = MAX_VALUE_CHARS) -> str:
    """A value as prompt text: strings as they are, anything else as indented JSON; clipped."""
    if isinstance(value, str):
        text = value
    else:
        text = json.dumps(value, ensure_ascii=False, indent=2, default=str)
    return clip(text, limit)


def clip(text: str, limit: int = MAX_VALUE_CHARS) -> str:
    """``text`` cut to ``limit`` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[… {len(text) - limit} more characters not shown]"


__all__ = [
    "AUDITOR_PROMPT",
    "GENERIC_WORKER_PROMPT",
    "MAX_VALUE_CHARS",
    "PLANNER_PROMPT",
    "REACT_PROTOCOL",
    "SYNTHESIZER_PROMPT",
    "WORKER_ROLE_PROMPTS",
    "assistant_message",
    "auditor_messages",
    "clip",
    "observation_message",
    "plan_problems_message",
    "planner_messages",
    "render",
    "synthesizer_messages",
    "worker_messages",
    "worker_system_prompt",
]
