"""Rich renderings of tasks, steps, audits and events, shared by ``am status``,
``am watch``, ``am logs``, ``am list`` and ``am demo``.

Everything here is a pure function of the API's shapes (``TaskPublic``,
``EventPublic``, …) and the current time, so the live views can rebuild their frame
as often as they like.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.json import JSON
from rich.markdown import Markdown
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from agent_manager.schemas import EventPublic, StepPublic, TaskPublic, TaskSummary

STATUS_STYLES = {
    # steps
    "pending": "dim",
    "ready": "cyan",
    "claimed": "yellow",
    "done": "green",
    # tasks
    "planning": "cyan",
    "running": "yellow",
    "auditing": "blue",
    "synthesizing": "blue",
    "completed": "bold green",
    # both
    "failed": "bold red",
    "cancelled": "magenta",
}
SYMBOLS = {
    "pending": "·",
    "ready": "○",
    "claimed": "◐",
    "done": "●",
    "failed": "✗",
    "cancelled": "⊘",
}
#: Event types a live view leaves out: they only restate what the next event says.
QUIET_EVENTS = frozenset({"step.ready", "task.running", "task.created"})


def status_text(status: str) -> Text:
    return Text(status, style=STATUS_STYLES.get(status, ""))


def clip(text: str, limit: int) -> str:
    """One line of at most ``limit`` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def now_utc() -> datetime:
    return datetime.now(UTC)


def step_elapsed(step: StepPublic, now: datetime) -> float | None:
    """How long the step's current (or finished) run has taken, in seconds."""
    if step.claimed_at is None:
        return None
    if step.status == "claimed":
        return (now - step.claimed_at).total_seconds()
    if step.result is not None and step.result.created_at >= step.claimed_at:
        return (step.result.created_at - step.claimed_at).total_seconds()
    return None


def is_system(step: StepPublic) -> bool:
    """Planning, audit and synthesis steps (their ids start with ``_``)."""
    return step.id.startswith("_")


def progress(task: TaskPublic) -> tuple[int, int]:
    """Steps done and steps in the graph so far (rework sends some back)."""
    return sum(s.status == "done" for s in task.steps), len(task.steps)


# -- a task as a tree (watch, demo) ---------------------------------------------------


def task_header(task: TaskPublic, now: datetime | None = None) -> RenderableType:
    """Goal, status, round, elapsed time and a progress bar."""
    now = now or now_utc()
    done, total = progress(task)
    end = task.finished_at or now
    grid = Table.grid(padding=(0, 1))
    grid.add_column()
    grid.add_column()
    title = Text.assemble(("task ", "bold"), (task.id, "bold"), "  ", status_text(task.status))
    if task.rework_round:
        title.append(f"  rework round {task.rework_round}", style="magenta")
    grid.add_row(title, Text(duration((end - task.created_at).total_seconds()), style="dim"))
    bar = ProgressBar(total=max(total, 1), completed=done, width=40)
    grid.add_row(bar, Text(f"{done}/{total} steps done"))
    return Group(Text(clip(task.goal, 200), style="italic"), grid)


def step_line(step: StepPublic, now: datetime, widths: tuple[int, int, int]) -> Text:
    """One step in aligned columns: symbol, id, role, status, worker, attempt, time."""
    id_width, role_width, agent_width = widths
    style = STATUS_STYLES.get(step.status, "")
    ran = step.status in ("claimed", "done", "failed")
    agent = step.agent_id if ran and step.agent_id else ""
    line = Text.assemble(
        (SYMBOLS.get(step.status, "?") + " ", style),
        (step.id.ljust(id_width), "bold"),
        " ",
        (step.role.ljust(role_width), "cyan"),
        " ",
        (step.status.ljust(9), style),
        " ",
        (agent.ljust(agent_width), "yellow" if step.status == "claimed" else ""),
    )
    if ran:
        retried = step.attempt > 1
        line.append(f"  attempt {step.attempt}", style="bold red" if retried else "dim")
    elapsed = step_elapsed(step, now)
    if elapsed is not None:
        line.append(f"  {duration(elapsed)}", style="dim")
    if step.depends_on and step.status in ("pending", "ready"):
        line.append(f"  after {', '.join(step.depends_on)}", style="dim")
    if step.rework_notes and step.status != "done":
        line.append("  rework", style="magenta")
    return line


def task_tree(task: TaskPublic, now: datetime | None = None) -> Tree:
    """The task as a tree: plan, work steps, audits, synthesis."""
    now = now or now_utc()
    tree = Tree(task_header(task, now), guide_style="dim")
    widths = (
        max((len(s.id) for s in task.steps), default=4),
        max((len(s.role) for s in task.steps), default=4),
        max((len(s.agent_id or "") for s in task.steps), default=0),
    )
    phases: dict[str, list[StepPublic]] = {"plan": [], "work": [], "audit": [], "synthesis": []}
    for step in task.steps:
        phase = {"planner": "plan", "auditor": "audit", "synthesizer": "synthesis"}.get(step.role)
        phases[phase if phase and is_system(step) else "work"].append(step)
    for name, steps in phases.items():
        if not steps:
            continue
        branch = tree.add(Text(name, style="bold"))
        for step in steps:
            node = branch.add(step_line(step, now, widths))
            if name == "audit" and step.status == "done":
                audit = _audit_for(task, step.id)
                if audit is not None:
                    node.add(audit_verdict(audit.round, audit.report))
    if task.error:
        tree.add(Text(f"error: {task.error}", style="red"))
    return tree


def _audit_for(task: TaskPublic, step_id: str) -> Any:
    # "_audit-1" holds the report of round 0.
    try:
        round_ = int(step_id.rsplit("-", 1)[1]) - 1
    except (IndexError, ValueError):
        return None
    return next((a for a in task.audits if a.round == round_), None)


# -- audits and the answer ----------------------------------------------------------


def audit_verdict(round_: int, report: Any) -> Text:
    verdict = ("passed", "bold green") if report.passed else ("failed", "bold red")
    return Text.assemble(
        f"audit #{round_ + 1} ", verdict, f"  score {report.score:.2f}  ", (report.summary, "dim")
    )


def audit_findings(report: Any) -> RenderableType:
    """The verdict's findings: the step, the problem, the suggested rework."""
    tree = Tree(Text("findings", style="bold"), guide_style="dim")
    for finding in report.findings:
        node = tree.add(Text.assemble((finding.step_id, "bold"), ": ", finding.problem))
        for suggestion in finding.rework_suggestions:
            node.add(Text(suggestion, style="magenta"))
    return tree


def final_answer(task: TaskPublic) -> RenderableType | None:
    """The synthesized answer as Markdown (or JSON for a structured one)."""
    result = task.final_result
    if result is None:
        return None
    answer = result.get("answer") if isinstance(result, dict) else result
    parts: list[RenderableType] = []
    outputs = answer.get("outputs") if isinstance(answer, dict) else None
    if isinstance(answer, str):
        parts.append(Markdown(answer))
    elif isinstance(outputs, dict):  # no synthesis: the outputs of the final steps
        for step_id, output in outputs.items():
            parts.append(Text(step_id, style="bold underline"))
            parts.append(Markdown(output) if isinstance(output, str) else JSON.from_data(output))
    elif answer is not None:
        parts.append(JSON.from_data(answer))
    unresolved = result.get("unresolved") if isinstance(result, dict) else None
    if unresolved:
        parts.append(Text("Unresolved audit findings:", style="bold red"))
        parts += [Text(f"- {u.get('step_id')}: {u.get('problem')}") for u in unresolved]
    if not parts:
        return None
    return Panel(Group(*parts), title="final answer", title_align="left", border_style="green")


# -- a task in full (status) ----------------------------------------------------------


def task_details(task: TaskPublic, now: datetime | None = None) -> RenderableType:
    """Everything ``am status`` shows: header, steps, audits, the answer."""
    now = now or now_utc()
    steps = Table(title="steps", title_justify="left", title_style="bold")
    for column in ("id", "role", "status", "worker", "attempt", "time", "output"):
        steps.add_column(column, no_wrap=column in ("id", "worker"), overflow="fold")
    for step in task.steps:
        elapsed = step_elapsed(step, now)
        output = step.result.output if step.result is not None else None
        if step.last_error and step.status != "done":
            shown = Text(clip(step.last_error, 80), style="red")
        else:
            shown = Text(clip(_short(output), 80), style="dim")
        steps.add_row(
            Text(step.id),
            Text(step.role),
            status_text(step.status),
            Text(step.agent_id or ""),
            f"{step.attempt}/{step.max_attempts}",
            duration(elapsed) if elapsed is not None else "",
            shown,
        )
    parts: list[RenderableType] = [task_header(task, now), steps]
    for audit in task.audits:
        parts.append(audit_verdict(audit.round, audit.report))
        if audit.report.findings:
            parts.append(audit_findings(audit.report))
    usage = task.usage
    parts.append(
        Text(
            f"tokens: {usage.total_tokens} ({usage.prompt_tokens} prompt, "
            f"{usage.completion_tokens} completion)",
            style="dim",
        )
    )
    if task.error:
        parts.append(Text(f"error: {task.error}", style="red"))
    answer = final_answer(task)
    if answer is not None:
        parts.append(answer)
    return Group(*parts)


def _short(output: Any) -> str:
    if output is None:
        return ""
    if isinstance(output, str):
        lines = [ln.strip("#*_ ") for ln in output.splitlines() if ln.strip("#*_ ")]
        return lines[0] if lines else ""
    if isinstance(output, dict):
        if isinstance(output.get("steps"), list):  # a plan
            return "plan: " + ", ".join(str(s.get("id")) for s in output["steps"])
        if "passed" in output and "score" in output:  # an audit report
            verdict = "passed" if output["passed"] else "failed"
            return f"{verdict}, score {output['score']}: {output.get('summary', '')}"
        if isinstance(output.get("answer"), str):  # the synthesis
            return _short(output["answer"])
    return json.dumps(output, default=str)


def plan_table(task: TaskPublic) -> Table:
    """The work steps of the plan: id, role, what they wait for, the instruction."""
    table = Table(title="plan", title_justify="left", title_style="bold", show_edge=False)
    table.add_column("step", style="bold", no_wrap=True)
    table.add_column("role", style="cyan", no_wrap=True)
    table.add_column("after")
    table.add_column("instruction", overflow="fold")
    for step in task.steps:
        if not is_system(step):
            table.add_row(
                Text(step.id),
                Text(step.role),
                Text(", ".join(step.depends_on)),
                Text(clip(step.instruction, 90)),
            )
    return table


# -- lists and events -----------------------------------------------------------------


def tasks_table(items: Iterable[TaskSummary], width: int = 120) -> Table:
    """One line per task. Ids are shown whole (to be copied) and the goal takes what is
    left; below ``width`` 100 the creation time gives way, so 80 columns stay readable."""
    wide = width >= 100
    # Rich shrinks every column when a long goal would overflow; giving the goal only
    # the width the others leave keeps ids, statuses and counts whole.
    fixed = 36 + 10 + 6 + (17 if wide else 0) + 2
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1), collapse_padding=True)
    table.add_column("id", no_wrap=True, min_width=36)
    table.add_column("status", no_wrap=True, min_width=9)
    table.add_column("steps", justify="right", no_wrap=True, min_width=5)
    if wide:
        table.add_column("created", no_wrap=True, min_width=16)
    table.add_column("goal", overflow="ellipsis", no_wrap=True, max_width=max(10, width - fixed))
    for t in items:
        cells: list[RenderableType] = [
            t.id,
            status_text(t.status),
            f"{t.steps_done}/{t.steps_total}",
        ]
        if wide:
            cells.append(f"{t.created_at.astimezone():%Y-%m-%d %H:%M}")
        cells.append(Text(t.goal))  # Text: a goal is not Rich markup
        table.add_row(*cells)
    return table


def event_line(event: EventPublic) -> Text:
    """One event as a line of text: time, what happened, and to which step."""
    d = event.data
    step = event.step_id or ""
    kind = event.type
    if kind == "step.claimed":
        what = Text.assemble(
            (str(d.get("agent_id")), "yellow"),
            " took ",
            (step, "bold"),
            f" ({d.get('role')}, attempt {d.get('attempt')})",
        )
    elif kind == "step.done":
        what = Text.assemble((str(d.get("agent_id")), "yellow"), " finished ", (step, "bold green"))
    elif kind == "audit.completed":
        passed = bool(d.get("passed"))
        what = Text.assemble(
            f"audit #{int(d.get('round', 0)) + 1} ",
            ("passed", "bold green") if passed else ("failed", "bold red"),
            f" (score {float(d.get('score', 0)):.2f})",
        )
        if d.get("flagged"):
            what.append(f": rework {', '.join(d['flagged'])}", style="magenta")
    elif kind == "step.reset":
        notes = d.get("notes") or []
        what = Text.assemble(("rework ", "magenta"), (step, "bold"), f": {len(notes)} note(s)")
        if notes:
            what.append(f" — {clip(notes[0], 100)}", style="dim")
    elif kind == "task.planned":
        what = Text(f"planned: {', '.join(d.get('steps') or [])}", style="bold")
    elif kind.startswith("task."):
        what = Text.assemble("task ", status_text(kind.removeprefix("task.")))
        if d.get("reason"):
            what.append(f": {d['reason']}", style="dim")
    else:
        what = Text.assemble(kind.removeprefix("step."), " ", (step, "bold"))
        extra = {k: v for k, v in d.items() if k not in ("role",)}
        if extra:
            what.append("  " + " ".join(f"{k}={v}" for k, v in extra.items()), style="dim")
    stamp = Text(f"{event.created_at.astimezone():%H:%M:%S} ", style="dim")
    return stamp + what


def event_json(event: EventPublic) -> str:
    return event.model_dump_json()


__all__ = [
    "QUIET_EVENTS",
    "audit_findings",
    "audit_verdict",
    "event_json",
    "event_line",
    "final_answer",
    "plan_table",
    "status_text",
    "task_details",
    "task_header",
    "task_tree",
    "tasks_table",
]
