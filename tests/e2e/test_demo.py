"""``am demo`` as a user runs it, its output on a pipe: the whole cycle, then a clean exit.

The demo runs in a process group of its own; its server and workers share that group,
so "nothing left running" is checked by asking whether the group still has members.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent_manager.testing.fake_openai import FakeOpenAIServer
from tests.server import free_port

AM = str(Path(sys.executable).with_name("am"))

pytestmark = pytest.mark.timeout(180)


def demo_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """No AM_* settings and no model from the caller: the demo's defaults."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("AM_") and k not in ("OPENAI_API_KEY", "TMPDIR")
    }
    # Its temporary directory lands in ours, so that a leftover would be seen.
    env.update(COLUMNS="200", TMPDIR=str(tmp_path))
    env.update(extra)
    return env


def run_demo(
    tmp_path: Path, *args: str, **env: str
) -> tuple[subprocess.CompletedProcess[str], int]:
    """Run ``am demo`` in a new process group; return its result and the group id."""
    proc = subprocess.Popen(
        [AM, "demo", *args],
        env=demo_env(tmp_path, **env),
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=150)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr), proc.pid


def group_is_empty(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def test_the_demo_shows_the_whole_cycle_and_leaves_nothing_behind(tmp_path: Path) -> None:
    port = free_port()
    result, pgid = run_demo(tmp_path, "--exit", "--pace", "0.2", "--port", str(port))
    out, err = result.stdout, result.stderr
    try:
        assert result.returncode == 0, (out, err)
        assert "Traceback" not in out + err
        # The plan, as a table of the work steps and their roles.
        assert re.search(r"analysis\s+│\s+analyst", out) and re.search(r"report\s+│\s+writer", out)
        # Steps in parallel on both workers.
        for worker in ("demo-worker-1", "demo-worker-2"):
            assert re.search(rf"{worker} took \w+ \(", out), worker
            assert re.search(rf"{worker} ran: \w", out), worker
        first_claims = [m.group(1) for m in re.finditer(r"(demo-worker-\d) took", out)][:3]
        assert set(first_claims) == {"demo-worker-1", "demo-worker-2"}
        # The failed audit with its finding, the rework, the passing audit, the answer.
        assert "audit #1 failed (score 0.55): rework analysis" in out
        assert "analysis: The output states its main points" in out
        assert "Add two concrete examples" in out
        assert "rework analysis" in out
        assert "audit #2 passed (score 0.90)" in out
        assert "final answer" in out and "Scripted answer" in out
        assert re.search(r"task [0-9a-f-]{36} completed", out)
        assert "scripted model" in out and "not an LLM" in out
        assert f"Dashboard: http://127.0.0.1:{port}/" in out
        assert "AM_LLM_MODEL" in out and "OPENAI_API_KEY" in out
        # Order: plan, failed audit, rework, passed audit, answer.
        marks = [
            "planned:",
            "audit #1 failed",
            "rework analysis",
            "audit #2 passed",
            "final answer",
        ]
        positions = [out.index(m) for m in marks]
        assert positions == sorted(positions), positions
    finally:
        assert group_is_empty(pgid), "a server or worker of the demo is still running"
    assert not list(tmp_path.glob("am-demo-*")), "the demo's temporary directory is left over"


def test_a_port_in_use_and_a_model_without_key_are_clear_errors(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy, pgid = run_demo(tmp_path, "--exit", "--port", str(port))
    assert busy.returncode == 1 and f"port {port} is in use" in busy.stderr
    assert "Traceback" not in busy.stderr and group_is_empty(pgid)

    keyless, pgid = run_demo(tmp_path, "--exit", AM_LLM_MODEL="gpt-4o-mini")
    assert keyless.returncode == 1, keyless.stderr
    assert "the model is not configured" in keyless.stderr and "OPENAI_API_KEY" in keyless.stderr
    assert "Traceback" not in keyless.stderr and group_is_empty(pgid)
    assert not list(tmp_path.glob("am-demo-*"))


def fake_model(body: dict[str, Any]) -> dict[str, Any]:
    """A fake OpenAI-compatible model: a two-step plan, one-turn answers, a passing audit."""
    schema = body["response_format"]["json_schema"]["name"]
    if schema == "TaskGraph":
        steps = [
            {"id": "look", "role": "analyst", "instruction": "Look into it"},
            {"id": "tell", "role": "writer", "instruction": "Say it", "depends_on": ["look"]},
        ]
        return {"goal": "the goal", "steps": steps}
    if schema == "ThoughtAction":
        return {"thought": "easy", "action": "final_answer", "action_input": "checked"}
    if schema == "AuditReport":
        return {"passed": True, "score": 1.0, "summary": "all good", "findings": []}
    return {"answer": "# The fake model's answer", "unresolved": []}


def test_a_configured_model_is_used_and_named(tmp_path: Path) -> None:
    with FakeOpenAIServer(responder=fake_model, api_key="sk-fake") as llm:
        result, pgid = run_demo(
            tmp_path,
            "--exit",
            "--port",
            str(free_port()),
            AM_LLM_BASE_URL=llm.base_url,
            AM_LLM_MODEL="fake-model",
            OPENAI_API_KEY="sk-fake",
        )
        served = {b["model"] for b in llm.bodies}
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert f"model    fake-model at {llm.base_url}" in result.stdout
    assert "scripted" not in result.stdout
    assert "audit #1 passed" in result.stdout and "The fake model's answer" in result.stdout
    assert re.search(r"demo-worker-\d took look", result.stdout)
    assert served == {"fake-model"}
    assert group_is_empty(pgid)


def test_workers_take_the_demo_pace_from_the_environment() -> None:
    # The demo paces its workers' scripted model with AM_LLM_SCRIPTED_LATENCY.
    from agent_manager.client import load_config
    from agent_manager.client.app import build_llm
    from agent_manager.llm import ScriptedModel

    env = {"AM_WORKER_AUTH_TOKEN": "am_t", "AM_LLM_SCRIPTED_LATENCY": "0.4"}
    config = load_config(None, env=env)
    assert config.llm.scripted_latency == 0.4
    llm = build_llm(config.llm)
    assert isinstance(llm, ScriptedModel) and llm.latency == 0.4
