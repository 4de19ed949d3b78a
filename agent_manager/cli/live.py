"""Following a task as it runs: polling its events and state, and the live tree of
its steps. Shared by ``am watch``, ``am logs --follow`` and ``am demo``.

Polling ``GET /v1/tasks/{id}/events?after=`` beside ``GET /v1/tasks/{id}`` works with
any server version and through any proxy, and every event has an id, so nothing is
missed or shown twice between polls.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from rich.console import Console, RenderableType
from rich.live import Live
from rich.text import Text

from agent_manager.cli import render
from agent_manager.schemas import EventPublic, TaskPublic

if TYPE_CHECKING:
    from agent_manager.client.http import AgentManagerClient

FINAL = frozenset({"completed", "failed", "cancelled"})
POLL_SECONDS = 0.5
#: How long a follower rides out an unreachable server (a restart) before giving up.
UNREACHABLE_GRACE = 30.0
EVENTS_PAGE = 1000


async def follow(
    client: AgentManagerClient,
    task_id: str,
    on_tick: Callable[[TaskPublic, list[EventPublic]], None],
    *,
    after: int = 0,
    poll: float = POLL_SECONDS,
) -> TaskPublic:
    """Poll the task and its new events until the task is final; return it.

    Events are read before the task, so every event handed to ``on_tick`` is already
    reflected in the task it comes with; once the task is final, the events up to it
    are read once more, so none is missed.
    """
    from agent_manager.client.errors import ServerUnavailable

    loop = asyncio.get_running_loop()
    last, unreachable_since = after, None
    while True:
        try:
            events = await events_after(client, task_id, last)
            task = await client.get(task_id)
            if task.status in FINAL:
                events += await events_after(client, task_id, events[-1].id if events else last)
        except ServerUnavailable:
            unreachable_since = unreachable_since or loop.time()
            if loop.time() - unreachable_since > UNREACHABLE_GRACE:
                raise
            await asyncio.sleep(poll)
            continue
        unreachable_since = None
        if events:
            last = events[-1].id
        on_tick(task, events)
        if task.status in FINAL:
            return task
        await asyncio.sleep(poll)


async def events_after(client: AgentManagerClient, task_id: str, after: int) -> list[EventPublic]:
    """Every event of the task after event id ``after``, a page at a time."""
    events: list[EventPublic] = []
    while True:
        page = await client.events(task_id, after=after, limit=EVENTS_PAGE)
        events += page
        if len(page) < EVENTS_PAGE:
            return events
        after = page[-1].id


class LiveTask:
    """A live tree of the task's steps, with a line for each event printed above it.

    On a terminal the tree redraws in place; elsewhere (a pipe, a log file) only the
    event lines and, at the end, the final tree are printed.
    """

    def __init__(self, console: Console) -> None:
        self.console = console
        self.task: TaskPublic | None = None

    def frame(self) -> RenderableType:
        if self.task is None:
            return Text("waiting for the task…", style="dim")
        return render.task_tree(self.task)

    def on_tick(self, task: TaskPublic, events: list[EventPublic]) -> None:
        self.task = task
        for event in events:
            if event.type in render.QUIET_EVENTS:
                continue
            self.console.print(render.event_line(event))
            if event.type == "task.planned":
                self.console.print(render.plan_table(task))
            elif event.type == "audit.completed":
                audit = next((a for a in task.audits if a.round == event.data.get("round")), None)
                if audit is not None and audit.report.findings:
                    self.console.print(render.audit_findings(audit.report))

    async def run(self, client: AgentManagerClient, task_id: str) -> TaskPublic:
        with Live(console=self.console, get_renderable=self.frame, refresh_per_second=4):
            task = await follow(client, task_id, self.on_tick)
        if not self.console.is_terminal:
            self.console.line()  # the final frame ends without one there
        return task


def print_event_lines(_: TaskPublic | None, events: list[EventPublic]) -> None:
    """Events as JSON lines, flushed at once so that a reading script sees them live."""
    for event in events:
        print(render.event_json(event), flush=True)


def print_outcome(task: TaskPublic, console: Console) -> None:
    """The verdict line and, when there is one, the final answer."""
    answer = render.final_answer(task)
    if answer is not None:
        console.print(answer)
    line = Text.assemble("task ", (task.id, "bold"), " ", render.status_text(task.status))
    if task.error:
        line.append(f": {task.error}", style="red")
    console.print(line)


__all__ = [
    "FINAL",
    "LiveTask",
    "events_after",
    "follow",
    "print_event_lines",
    "print_outcome",
]
