"""File contention across worker processes: the server's locks keep steps apart, the
workers' OS locks keep file operations apart — with one server and with two."""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path

import pytest

from agent_manager.client import AgentManagerClient
from tests.e2e.test_workers import pg_url, workers  # noqa: F401 - fixtures
from tests.processes import ServerProcess
from tests.server import ADMIN_TOKEN

pytestmark = pytest.mark.postgres

HANDLER = "tests.e2e.contention_handler:run"


def overlap(a: dict, b: dict) -> bool:
    return a["start"] < b["end"] and b["start"] < a["end"]


@pytest.mark.parametrize("servers", [1, 2])
async def test_steps_and_operations_on_one_file_follow_the_matrix(
    pg_url: str,  # noqa: F811
    workers,  # noqa: F811
    tmp_path: Path,
    servers: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AM_TEST_WORKSPACE", str(tmp_path / "workspace"))
    procs = [ServerProcess(pg_url, tmp_path / f"server{n}").start() for n in range(servers)]
    try:
        modes = ["write"] * 20 + ["read"] * 20 + ["exclusive"] * 5
        steps = [
            {"id": f"{mode[0]}{n}", "role": "noop", "files": [{"path": "shared.txt", "mode": mode}]}
            for n, mode in enumerate(modes)
        ]
        async with AgentManagerClient(procs[0].url, ADMIN_TOKEN) as client:
            created = await client.submit("contention", steps=steps)
            crew = [
                workers(
                    f"w{n}",
                    procs[n % servers].url,
                    "--burst",
                    "--handler",
                    HANDLER,
                    roles=["noop"],
                    concurrency=3,
                )
                for n in range(4)
            ]
            task = await client.wait(created.id, timeout=120)
        assert task.status == "completed"
        for worker in crew:
            worker.proc.wait(30)
        records = [json.loads(line) for w in crew for line in w.steps_log.read_text().splitlines()]
    finally:
        for proc in procs:
            proc.kill()
    runs = [r for r in records if r["kind"] == "step"]
    ops = [r for r in records if r["kind"] == "op"]
    assert sorted(r["step"] for r in runs) == sorted(s["id"] for s in steps)  # once each
    by_mode = {m: [r for r in runs if r["mode"] == m] for m in ("read", "write", "exclusive")}
    for a, b in combinations(by_mode["write"], 2):
        assert not overlap(a, b), f"write steps {a['step']} and {b['step']} overlapped"
    for x in by_mode["exclusive"]:
        for other in runs:
            assert other is x or not overlap(x, other), f"{x['step']} beside {other['step']}"
    assert any(overlap(a, b) for a, b in combinations(by_mode["read"], 2)), "reads never shared"
    writes = [o for o in ops if o["mode"] != "read"]
    for w in writes:
        for other in ops:
            assert other is w or not overlap(w, other), f"write op of {w['step']} overlapped"
