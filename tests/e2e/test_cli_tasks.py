"""``am submit``, ``status``, ``watch``, ``list``, ``cancel`` and ``logs`` as a user runs
them: ``.venv/bin/am`` processes against one ``am serve`` process.

The server runs the work roles itself (AM_EMBEDDED_WORK_ROLES) on the scripted model, so
planned goals go through the whole cycle; the role ``idle`` is served by nobody, which
keeps a task running until it is cancelled.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.processes import ServerProcess
from tests.server import ADMIN_TOKEN, free_port

AM = str(Path(sys.executable).with_name("am"))
WORK_ROLES = "analyst,researcher,writer"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    home = tmp_path_factory.mktemp("cli-server")
    proc = ServerProcess(
        f"sqlite+aiosqlite:///{home / 'am.db'}",
        home,
        AM_LLM_PROVIDER="scripted",
        AM_EMBEDDED_WORK_ROLES=WORK_ROLES,
    )
    with proc:
        yield proc


@pytest.fixture
def cwd(tmp_path: Path) -> Path:
    """A working directory of the test's own (no mcp_client_config.json unless written)."""
    return tmp_path


def clean_env(cwd: Path, **extra: str) -> dict[str, str]:
    """The caller's environment without any AM_* setting, and no user config file."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AM_")}
    env.update(AM_CLI_CONFIG=str(cwd / "no-such-cli.json"), COLUMNS="200")
    env.update(extra)
    return env


def am(
    *args: str, server: ServerProcess | None, cwd: Path, token: str | None = ADMIN_TOKEN, **env: str
) -> subprocess.CompletedProcess[str]:
    """Run ``am`` with the server and token given by the environment (when given)."""
    extra = dict(env)
    if server is not None:
        extra.setdefault("AM_SERVER_URL", server.url)
    if token is not None:
        extra.setdefault("AM_TOKEN", token)
    return subprocess.run(
        [AM, *args],
        env=clean_env(cwd, **extra),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    return result


def refused(result: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    """The command failed with ``code`` and one clear line naming ``words``."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


IDLE_PLAN = {"steps": [{"id": "wait", "role": "idle", "instruction": "nobody serves this"}]}


def test_a_planned_goal_from_submit_to_answer(server: ServerProcess, cwd: Path) -> None:
    created = json.loads(
        ok(am("submit", "Compare queue designs", "--json", server=server, cwd=cwd)).stdout
    )
    task_id = created["id"]
    assert created["created"] is True

    watched = ok(am("watch", task_id, server=server, cwd=cwd)).stdout
    # The live view on a pipe: a line per event, then the final tree and the answer.
    for seen in (
        "planned: analysis, research, draft, report",
        "took analysis (analyst, attempt 1)",
        "audit #1 failed (score 0.55): rework analysis",
        "findings",
        "Add two concrete examples",
        "rework analysis",
        "audit #2 passed",
        "task completed",
        "8/8 steps done",
        "final answer",
        "Scripted answer",
    ):
        assert seen in watched, seen

    task = json.loads(ok(am("status", task_id, "--json", server=server, cwd=cwd)).stdout)
    assert task["status"] == "completed" and task["rework_round"] == 1
    assert [a["report"]["passed"] for a in task["audits"]] == [False, True]
    shown = ok(am("status", task_id, server=server, cwd=cwd)).stdout
    for seen in ("completed", "analysis", "_synthesis", "audit #1 failed", "final answer"):
        assert seen in shown, seen

    done = json.loads(
        ok(
            am("list", "--status", "completed", "--limit", "500", "--json", server=server, cwd=cwd)
        ).stdout
    )
    assert task_id in [t["id"] for t in done["items"]]
    assert all(t["status"] == "completed" for t in done["items"])
    assert task_id in ok(am("list", server=server, cwd=cwd)).stdout

    events = json_lines(ok(am("logs", task_id, "--json", server=server, cwd=cwd)).stdout)
    types = [e["type"] for e in events]
    assert types[0] == "task.created" and types[-1] == "task.completed"
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)
    later = json_lines(
        ok(
            am("logs", task_id, "--json", "--after", str(events[-3]["id"]), server=server, cwd=cwd)
        ).stdout
    )
    assert later == events[-2:]


def test_explicit_plans_from_json_and_yaml_files(server: ServerProcess, cwd: Path) -> None:
    plan = {
        "steps": [
            {"id": "a", "role": "analyst", "instruction": "List the designs"},
            {"id": "b", "role": "writer", "instruction": "Recommend one", "depends_on": ["a"]},
        ],
        "options": {"audit": False, "max_attempts": 2},
    }
    as_json = write(cwd / "plan.json", json.dumps(plan))
    result = ok(
        am(
            "submit",
            "From JSON",
            "--plan",
            str(as_json),
            "--wait",
            "--json",
            server=server,
            cwd=cwd,
        )
    )
    task = json.loads(result.stdout)
    assert task["status"] == "completed" and task["goal"] == "From JSON"
    assert [s["id"] for s in task["steps"]] == ["a", "b"]
    assert task["audits"] == [] and task["options"]["max_attempts"] == 2

    as_yaml = write(
        cwd / "plan.yaml",
        "goal: From YAML\n"
        "steps:\n"
        "  - id: a\n    role: analyst\n    instruction: List the designs\n"
        "  - {id: b, role: writer, instruction: Recommend one, depends_on: [a]}\n"
        "options:\n  audit: false\n",
    )
    shown = ok(am("submit", "--plan", str(as_yaml), "--wait", server=server, cwd=cwd)).stdout
    assert "final answer" in shown and "completed" in shown and "b: Recommend one" in shown


def test_cancel_ends_a_follower_and_a_waiting_submit(server: ServerProcess, cwd: Path) -> None:
    plan = write(cwd / "idle.json", json.dumps(IDLE_PLAN))
    env = clean_env(cwd, AM_SERVER_URL=server.url, AM_TOKEN=ADMIN_TOKEN)
    waiting = subprocess.Popen(
        [AM, "submit", "Wait for me", "--plan", str(plan), "--wait", "--json"],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        task_id = None
        deadline = time.monotonic() + 60
        while task_id is None and time.monotonic() < deadline:
            page = json.loads(
                ok(
                    am(
                        "list",
                        "--status",
                        "running",
                        "--json",
                        "--limit",
                        "500",
                        server=server,
                        cwd=cwd,
                    )
                ).stdout
            )
            task_id = next((t["id"] for t in page["items"] if t["goal"] == "Wait for me"), None)
        assert task_id is not None, "the submitted task never showed in the list"
        follower = subprocess.Popen(
            [AM, "logs", task_id, "--follow", "--json"],
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert "cancelled task" in ok(am("cancel", task_id, server=server, cwd=cwd)).stdout
            followed, follow_err = follower.communicate(timeout=60)
        finally:
            if follower.poll() is None:
                follower.kill()
        assert follower.returncode == 0, follow_err
        assert json_lines(followed)[-1]["type"] == "task.cancelled"

        final, wait_err = waiting.communicate(timeout=60)
    finally:
        if waiting.poll() is None:
            waiting.kill()
    assert waiting.returncode == 1, wait_err  # the task did not complete
    assert json.loads(final)["status"] == "cancelled" and "Traceback" not in wait_err

    again = ok(am("cancel", task_id, "--json", server=server, cwd=cwd))
    assert json.loads(again.stdout)["status"] == "cancelled"
    assert ok(am("cancel", task_id, server=server, cwd=cwd)).stdout.startswith("task ")
    watched = am("watch", task_id, "--json", server=server, cwd=cwd)
    assert watched.returncode == 1 and json_lines(watched.stdout)[-1]["type"] == "task.cancelled"


def test_bad_plan_files_are_refused_before_anything_is_sent(
    server: ServerProcess, cwd: Path
) -> None:
    cases = {
        "broken.json": ('{"steps": [', "not valid JSON"),
        "broken.yaml": ("steps:\n  - id: [\n", "not valid YAML"),
        "no-role.yaml": ("steps:\n  - id: x\n", "steps[0].role"),
        "odd-keys.yaml": ("steps: []\n1: one\non: yes\n", "unknown key(s)"),
        "cycle.json": (
            '{"steps": [{"id": "x", "role": "a", "depends_on": ["y"]},'
            ' {"id": "y", "role": "a", "depends_on": ["x"]}]}',
            "cycle",
        ),
    }
    for name, (text, words) in cases.items():
        path = write(cwd / name, text)
        refused(
            am("submit", "Never submitted", "--plan", str(path), server=server, cwd=cwd), 2, words
        )
    refused(
        am("submit", "g", "--plan", str(cwd / "missing.json"), server=server, cwd=cwd),
        2,
        "missing.json",
        "cannot be read",
    )
    page = json.loads(ok(am("list", "--json", "--limit", "500", server=server, cwd=cwd)).stdout)
    assert "Never submitted" not in [t["goal"] for t in page["items"]]


def test_connection_problems_are_one_clear_line(server: ServerProcess, cwd: Path) -> None:
    refused(
        am("list", server=server, cwd=cwd, token="am_wrong_token_1234567890"),
        4,
        "refused the token",
        "AM_TOKEN",
    )
    refused(am("status", "x", server=server, cwd=cwd, token=None), 4, "no token", "--token")
    nobody = f"http://127.0.0.1:{free_port()}"
    refused(am("submit", "g", "--server", nobody, server=None, cwd=cwd), 3, nobody, "--server")
    refused(am("status", "no-such-task", server=server, cwd=cwd), 5, "no-such-task")


def test_server_and_token_from_files_flags_and_environment(
    server: ServerProcess, cwd: Path
) -> None:
    # The worker's file in the current directory is the last resort.
    write(
        cwd / "mcp_client_config.json",
        json.dumps({"server_url": [server.url], "auth_token": ADMIN_TOKEN}),
    )
    ok(am("list", server=None, cwd=cwd, token=None))
    # The CLI's own file comes before it: here with a wrong token, which the flag beats.
    cli = write(cwd / "cli.json", json.dumps({"server_url": server.url, "token": "am_bad_1"}))
    refused(am("list", server=None, cwd=cwd, token=None, AM_CLI_CONFIG=str(cli)), 4, str(cli))
    ok(am("list", "--token", ADMIN_TOKEN, server=None, cwd=cwd, token=None, AM_CLI_CONFIG=str(cli)))
    # The environment beats the files.
    ok(am("list", server=None, cwd=cwd, AM_CLI_CONFIG=str(cli)))
    write(cli, "{not json")
    refused(
        am("list", server=None, cwd=cwd, token=None, AM_CLI_CONFIG=str(cli)), 2, "not valid JSON"
    )


def test_a_token_is_not_sent_to_a_server_named_by_a_file_in_this_directory(
    server: ServerProcess, cwd: Path
) -> None:
    elsewhere = f"http://127.0.0.1:{free_port()}"
    write(cwd / "mcp_client_config.json", json.dumps({"server_url": elsewhere, "auth_token": "x"}))
    refused(am("list", server=None, cwd=cwd), 2, "mcp_client_config.json", "AM_TOKEN", "--server")
    # Named explicitly, the server gets the token.
    ok(am("list", server=server, cwd=cwd))


@pytest.mark.parametrize("url", ["http://[::1", "http://localhost:99999", "ftp://host"])
def test_a_malformed_server_url_is_one_clear_line(cwd: Path, url: str) -> None:
    refused(am("list", "--server", url, server=None, cwd=cwd), 2, repr(url))


def test_text_from_the_server_is_shown_as_it_is_not_as_markup(
    server: ServerProcess, cwd: Path
) -> None:
    goal = "Check [/etc/app] and [bold]this[/bold]"
    plan = write(
        cwd / "plan.json",
        json.dumps({"steps": [{"id": "s", "role": "idle", "instruction": "read [/x] then [red]"}]}),
    )
    # Without --json, stdout is the id alone: ID=$(am submit …) works.
    task_id = ok(am("submit", goal, "--plan", str(plan), server=server, cwd=cwd)).stdout.strip()
    assert len(task_id.split()) == 1
    listed = ok(am("list", server=server, cwd=cwd)).stdout
    assert "[/etc/app]" in listed and "[bold]this[/bold]" in listed
    status = ok(am("status", task_id, server=server, cwd=cwd)).stdout
    assert "Check [/etc/app]" in status
    ok(am("cancel", task_id, server=server, cwd=cwd))
