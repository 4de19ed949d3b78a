"""``am submit``, ``status``, ``watch``, ``list``, ``cancel`` and ``logs``: the server's
tasks from the command line, with Rich output, or ``--json`` for scripts.

They speak to the server only through :class:`AgentManagerClient`. Every failure ends
in one line on stderr and an exit code from :data:`EXIT_CODES_HELP` — never a
traceback. The client package (and the LLM SDK its worker side pulls in) is imported
only when a command runs, so that ``am`` itself starts quickly.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import yaml
from pydantic import ValidationError
from rich.console import Console
from rich.text import Text

from agent_manager.cli import render
from agent_manager.cli.cli_config import (
    PRECEDENCE_HELP,
    CLIConfigError,
    Connection,
    resolve,
    user_config_path,
)
from agent_manager.cli.live import (
    FINAL,
    LiveTask,
    events_after,
    follow,
    print_event_lines,
    print_outcome,
)
from agent_manager.schemas import EventPublic, TaskCreate, TaskPublic

if TYPE_CHECKING:
    from agent_manager.client.errors import ClientError
    from agent_manager.client.http import AgentManagerClient

EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_AUTH, EXIT_NOT_FOUND = 1, 2, 3, 4, 5
EXIT_TIMEOUT, EXIT_INTERRUPTED = 124, 130
EXIT_CODES_HELP = (
    "Exit codes: 0 done (for --wait and watch: the task completed); 1 the task failed or "
    "was cancelled, or the server failed; 2 bad input (a plan file, a request the server "
    "refused); 3 server unreachable; 4 token missing or refused; 5 no such task; "
    "124 --timeout ran out; 130 interrupted."
)

out = Console()
err = Console(stderr=True, soft_wrap=True)  # one-line errors stay whole for grep

ServerOpt = Annotated[
    str | None,
    typer.Option("--server", help="the server's URL (AM_SERVER_URL)", show_default=False),
]
TokenOpt = Annotated[
    str | None, typer.Option("--token", help="an API token (AM_TOKEN)", show_default=False)
]
JsonOpt = Annotated[bool, typer.Option("--json", help="machine-readable JSON output")]
TaskArg = Annotated[str, typer.Argument(help="the task id", show_default=False)]
EPILOG = f"{PRECEDENCE_HELP}\n\n{EXIT_CODES_HELP}"


class Failure(Exception):
    """A problem to report as one line, with the exit code it ends in."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def run(server: str | None, token: str | None, body: Callable[..., Awaitable[int]]) -> None:
    """Resolve the connection, run ``body(client)``, and turn failures into exit codes."""
    from agent_manager.client.errors import ClientError
    from agent_manager.client.http import AgentManagerClient

    try:
        conn = resolve(server, token)
    except CLIConfigError as exc:
        raise _fail(str(exc), EXIT_USAGE) from None

    async def go() -> int:
        async with AgentManagerClient(conn.server_url, conn.token) as client:
            return await body(client)

    try:
        code = asyncio.run(go())
    except KeyboardInterrupt:
        raise typer.Exit(EXIT_INTERRUPTED) from None
    except Failure as exc:
        raise _fail(str(exc), exc.code) from None
    except ClientError as exc:
        raise _fail(*explain(exc, conn)) from None
    except (ValidationError, json.JSONDecodeError) as exc:  # an answer that is not the API's
        raise _fail(
            f"{conn.server_url} (from {conn.url_source}) did not answer like an AgentManager "
            f"server ({type(exc).__name__}) — check --server / AM_SERVER_URL",
            EXIT_FAILED,
        ) from None
    raise typer.Exit(code)


def _fail(message: str, code: int) -> typer.Exit:
    err.print(Text.assemble(("error: ", "bold red"), message))
    return typer.Exit(code)


def explain(exc: ClientError, conn: Connection) -> tuple[str, int]:
    """The client error as one line naming what to fix, and its exit code."""
    from agent_manager.client.errors import (
        AuthError,
        InvalidRequest,
        NotFound,
        ServerUnavailable,
        WaitTimeout,
    )

    said = re.sub(r"^HTTP \d+: ", "", exc.message)
    if isinstance(exc, WaitTimeout):
        return exc.message, EXIT_TIMEOUT
    if isinstance(exc, ServerUnavailable):
        return (
            f"{said} — is the server running? (URL from {conn.url_source}; "
            "set it with --server or AM_SERVER_URL)",
            EXIT_UNREACHABLE,
        )
    if isinstance(exc, AuthError):
        if conn.token is None:
            return (
                f'no token: pass --token, set AM_TOKEN, or put "token" in {user_config_path()} '
                "(create one with `am token create --scope submit --scope read`)",
                EXIT_AUTH,
            )
        verb = "refused the token" if exc.status == 401 else "does not allow this with the token"
        return f"the server {verb} from {conn.token_source}: {said}", EXIT_AUTH
    if isinstance(exc, NotFound):
        return f"{said} on {conn.server_url}", EXIT_NOT_FOUND
    if isinstance(exc, InvalidRequest):
        return f"the server refused the request: {said}", EXIT_USAGE
    return said, EXIT_FAILED


def exit_code_of(task: TaskPublic) -> int:
    return 0 if task.status == "completed" else EXIT_FAILED


def print_json(value: Any) -> None:
    """JSON on stdout, unstyled (Rich would wrap and colour it)."""
    print(json.dumps(value), flush=True)


# -- plans ------------------------------------------------------------------------------


def load_plan(path: Path) -> dict[str, Any]:
    """A plan file (JSON, or YAML for .yaml/.yml): ``steps`` and optionally ``options``
    and ``goal``; a bare list is taken as the steps. Raises :class:`Failure`."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise Failure(f"{path}: cannot be read ({reason})", EXIT_USAGE) from None
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno}, column {exc.colno}"
        raise Failure(f"{path}: not valid JSON: {exc.msg} at {where}", EXIT_USAGE) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise Failure(f"{path}: not valid YAML: {problem}{where}", EXIT_USAGE) from None
    if isinstance(data, list):
        data = {"steps": data}
    if not isinstance(data, dict):
        raise Failure(
            f"{path}: must hold a mapping with 'steps' (and optionally 'options'), "
            f"not {type(data).__name__}",
            EXIT_USAGE,
        )
    unknown = sorted(str(k) for k in set(data) - {"goal", "steps", "options", "metadata"})
    if unknown:
        raise Failure(
            f"{path}: unknown key(s) {', '.join(unknown)} — a plan has goal, steps, options",
            EXIT_USAGE,
        )
    return data


def checked_request(goal: str | None, plan: dict[str, Any], source: str) -> TaskCreate:
    """The submit request, validated here so that a bad file submits nothing."""
    goal = goal or plan.get("goal")
    if not goal:
        raise Failure("give the goal as an argument (or as 'goal' in the plan file)", EXIT_USAGE)
    try:
        return TaskCreate.model_validate({**plan, "goal": goal})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"])
        message = str(first["msg"]).removeprefix("Value error, ")
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise Failure(f"{source}: {where.lstrip('.')}: {message}{more}", EXIT_USAGE) from None


# -- the commands -------------------------------------------------------------------------


def submit(
    goal: Annotated[str | None, typer.Argument(help="what to achieve", show_default=False)] = None,
    plan: Annotated[
        Path | None,
        typer.Option(
            "--plan",
            "-p",
            help="a JSON or YAML file with 'steps' (and 'options'); without it the "
            "server plans the goal",
            show_default=False,
        ),
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", "-w", help="wait until the task is final; print it")
    ] = False,
    timeout: Annotated[
        float | None, typer.Option(help="with --wait: give up after this many seconds")
    ] = None,
    idempotency_key: Annotated[
        str | None, typer.Option(help="a repeated submit with this key returns the first task")
    ] = None,
    as_json: JsonOpt = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """Submit a goal, optionally with an explicit plan; prints the task id."""

    async def body(client: AgentManagerClient) -> int:
        # Checked before anything is sent: a bad file submits nothing.
        data = load_plan(plan) if plan is not None else {}
        request = checked_request(goal, data, str(plan) if plan else "goal")
        steps = request.steps if plan is not None and "steps" in data else None
        options = request.options if "options" in data else None
        created = await client.submit(
            request.goal,
            steps=steps,
            options=options,
            idempotency_key=idempotency_key,
            metadata=request.metadata or None,
        )
        if not wait:
            if as_json:
                print_json(created.model_dump(mode="json"))
            else:
                # stdout holds the id alone, for ID=$(am submit …); the words go to stderr.
                again = "" if created.created else " (already submitted with this key)"
                err.print(f"submitted task ({created.status}){again}; follow it with: am watch ID")
                out.print(created.id, highlight=False)
            return 0
        if not as_json:
            err.print(f"submitted task {created.id}", style="dim")
        with err.status(f"waiting for task {created.id}…"):
            task = await client.wait(created.id, timeout=timeout)
        if as_json:
            print_json(task.model_dump(mode="json"))
        else:
            print_outcome(task, out)
        return exit_code_of(task)

    run(server, token, body)


def status(
    task_id: TaskArg, as_json: JsonOpt = False, server: ServerOpt = None, token: TokenOpt = None
) -> None:
    """Show a task: its steps, audits and final answer."""

    async def body(client: AgentManagerClient) -> int:
        task = await client.get(task_id)
        if as_json:
            print_json(task.model_dump(mode="json"))
        else:
            out.print(render.task_details(task))
        return 0

    run(server, token, body)


def watch(
    task_id: TaskArg, as_json: JsonOpt = False, server: ServerOpt = None, token: TokenOpt = None
) -> None:
    """Follow a task live until it ends (--json: its events as JSON lines)."""

    async def body(client: AgentManagerClient) -> int:
        if as_json:
            task = await follow(client, task_id, print_event_lines)
            return exit_code_of(task)
        task = await LiveTask(out).run(client, task_id)
        print_outcome(task, out)
        return exit_code_of(task)

    run(server, token, body)


def list_tasks(
    status: Annotated[
        list[str] | None,
        typer.Option("--status", help="only tasks in this status; repeat for several"),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="at most this many")] = 20,
    cursor: Annotated[str | None, typer.Option(help="the next page, as printed")] = None,
    as_json: JsonOpt = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """List tasks, newest first (--json: {"items": [...], "next_cursor": ...})."""

    async def body(client: AgentManagerClient) -> int:
        page = await client.list(status=status, limit=limit, cursor=cursor)
        if as_json:
            print_json(page.model_dump(mode="json"))
            return 0
        if not page.items:
            out.print("no tasks" + (f" with status {', '.join(status)}" if status else ""))
            return 0
        out.print(render.tasks_table(page.items, out.width))
        if page.next_cursor:
            err.print(f"more: am list --cursor {page.next_cursor}", style="dim")
        return 0

    run(server, token, body)


def cancel(
    task_id: TaskArg, as_json: JsonOpt = False, server: ServerOpt = None, token: TokenOpt = None
) -> None:
    """Cancel a task; its workers stop at their next heartbeat."""

    async def body(client: AgentManagerClient) -> int:
        before = await client.get(task_id)
        task = await client.cancel(task_id) if before.status not in FINAL else before
        if as_json:
            print_json(task.model_dump(mode="json"))
        elif before.status in FINAL:
            out.print(f"task [bold]{task.id}[/] had already ended: {task.status}")
        else:
            out.print(f"cancelled task [bold]{task.id}[/] (it was {before.status})")
        return 0

    run(server, token, body)


def logs(
    task_id: TaskArg,
    follow_: Annotated[
        bool, typer.Option("--follow", "-f", help="keep printing new events until the task ends")
    ] = False,
    after: Annotated[int, typer.Option(min=0, help="only events after this event id")] = 0,
    as_json: JsonOpt = False,
    server: ServerOpt = None,
    token: TokenOpt = None,
) -> None:
    """Print a task's events (--json: one JSON object a line)."""

    def show(task: TaskPublic | None, events: list[EventPublic]) -> None:
        if as_json:
            print_event_lines(task, events)
            return
        for event in events:
            out.print(render.event_line(event))

    async def body(client: AgentManagerClient) -> int:
        if follow_:
            await follow(client, task_id, show, after=after)
        else:
            await client.get(task_id)  # "no such task" rather than an empty log
            show(None, await events_after(client, task_id, after))
        return 0

    run(server, token, body)


def register(app: typer.Typer) -> None:
    """Add the task commands to ``am``."""
    for name, fn in (
        ("submit", submit),
        ("status", status),
        ("watch", watch),
        ("list", list_tasks),
        ("cancel", cancel),
        ("logs", logs),
    ):
        app.command(name, epilog=EPILOG)(fn)


__all__ = ["EXIT_CODES_HELP", "checked_request", "load_plan", "register"]
