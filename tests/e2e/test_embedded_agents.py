"""The server's own agents: safe on several processes at once, and replaceable by
external workers with AM_EMBEDDED_AGENTS=false."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

from tests.helpers import claim, get_task, report
from tests.processes import ServerProcess

SCRIPTED = {"AM_LLM_PROVIDER": "scripted", "AM_EMBEDDED_WORK_ROLES": "analyst,researcher,writer"}


async def wait_final(client, task_id: str, timeout: float = 60) -> dict:  # type: ignore[no-untyped-def]
    for _ in range(int(timeout / 0.2)):
        task = await get_task(client, task_id, history="true")
        if task["status"] in ("completed", "failed", "cancelled"):
            return task
        await asyncio.sleep(0.2)
    raise AssertionError(f"task still {task['status']}")


async def test_two_servers_run_the_cycle_without_running_a_step_twice(
    db_url: str, tmp_path: Path
) -> None:
    servers = [ServerProcess(db_url, tmp_path / n, **SCRIPTED).start() for n in "ab"]
    try:
        async with servers[0].client() as a, servers[1].client() as b:
            ids = []
            for n in range(4):
                r = await (a if n % 2 else b).post("/v1/tasks", json={"goal": f"goal {n}"})
                ids.append(r.json()["id"])
            tasks = [await wait_final(a, task_id) for task_id in ids]
    finally:
        for server in servers:
            server.kill()
    agents = set()
    for task in tasks:
        assert task["status"] == "completed", task["error"]
        for step in task["steps"]:
            # One run per rework round: nothing ran twice.
            rounds = Counter(a["rework_round"] for a in step["attempts"])
            assert set(rounds.values()) == {1}, (step["id"], step["attempts"])
            agents |= {a["agent_id"] for a in step["attempts"]}
    # Usually both processes take part (each task's first step is woken where it was
    # submitted), but which one runs what is up to the race: only "never twice" is
    # guaranteed.
    assert agents


async def test_external_workers_can_serve_the_reserved_roles(db_url: str, tmp_path: Path) -> None:
    with ServerProcess(db_url, tmp_path, AM_EMBEDDED_AGENTS="false") as server:
        async with server.client() as client:
            r = await client.post("/v1/tasks", json={"goal": "plan it yourself"})
            task_id = r.json()["id"]
            planner = await claim(client, "planner", agent="ext-planner", wait=5)
            assert planner is not None and planner["step"]["id"] == "_plan"
            plan = {"goal": "plan it yourself", "steps": [{"id": "only", "role": "analyst"}]}
            assert (await report(client, planner, output=plan)).status_code == 200
            work = await claim(client, "analyst")
            assert work is not None and work["step"]["id"] == "only"
            assert (await report(client, work, output="done")).status_code == 200
            auditor = await claim(client, "auditor", wait=5)
            assert auditor is not None
            assert auditor["context"]["dependencies"] == {"only": "done"}
            verdict = {"passed": True, "score": 1.0, "summary": "fine", "findings": []}
            assert (await report(client, auditor, output=verdict)).status_code == 200
            synthesizer = await claim(client, "synthesizer", wait=5)
            assert synthesizer is not None
            answer = {"answer": "# Done", "unresolved": []}
            assert (await report(client, synthesizer, output=answer)).status_code == 200
            task = await get_task(client, task_id)
    assert task["status"] == "completed"
    assert task["final_result"]["answer"] == "# Done"
    assert task["audits"][0]["report"]["passed"] is True
