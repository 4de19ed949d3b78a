"""The built-in agent's file tools under a real server's locks: a path the step did not
declare is locked on the server first, and a conflict comes back as an observation."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from agent_manager.agents import WorkerAgent
from agent_manager.client import AgentManagerClient
from agent_manager.client.worker import agent_handler
from agent_manager.llm import ScriptedModel
from agent_manager.llm.scripted import Rule, Scenario
from tests.helpers import claim, get_task, report, step_of, submit
from tests.server import ADMIN_TOKEN, LiveServer, running_server


def final_with_last_observation(context: Any, messages: list[dict], schema: Any) -> dict:
    return {
        "thought": "report what happened",
        "action": "final_answer",
        "action_input": messages[-1]["content"],
    }


def writes(path: str) -> list[Rule]:
    return [
        Rule(
            role="analyst",
            iteration=0,
            response={
                "thought": "write it",
                "action": "write_file",
                "action_input": {"path": path, "content": "new text"},
            },
        ),
        Rule(role="analyst", iteration=1, response=final_with_last_observation),
    ]


async def test_undeclared_paths_are_locked_first_and_conflicts_observed(
    server: LiveServer,
) -> None:
    workspace = server.settings.workspace
    workspace.mkdir(parents=True, exist_ok=True)
    async with server.client() as http:
        task_id = await submit(
            http,
            {
                "goal": "locks",
                "steps": [
                    {
                        "id": "holder",
                        "role": "holder",
                        "files": [{"path": "held.txt", "mode": "exclusive"}],
                    },
                    {"id": "free", "role": "analyst"},
                    {"id": "blocked", "role": "analyst"},
                ],
            },
        )
        assert await claim(http, "holder") is not None  # holds held.txt, exclusively
        async with AgentManagerClient(server.base_url, ADMIN_TOKEN) as client:
            for step_id, path in (("free", "found.txt"), ("blocked", "held.txt")):
                (c,) = await client.claim("agent", ["analyst"])
                assert c.step.id == step_id
                agent = WorkerAgent(ScriptedModel(Scenario(rules=writes(path))))
                handler = agent_handler(agent, workspace=workspace, client=client, lock_wait=0.3)
                outcome = await handler(c)
                assert outcome.status == "success", outcome.error
                if step_id == "free":
                    observed = outcome.ra_history[0].observation or ""
                    assert "error" not in observed.lower(), observed
                    assert (workspace / "found.txt").read_text() == "new text"
                    task = await get_task(http, task_id)
                    assert [lk["path"] for lk in step_of(task, "free")["locks"]] == ["found.txt"]
                else:
                    observed = outcome.ra_history[0].observation or ""
                    assert observed.startswith("error:") and "held.txt" in observed
                    assert "'holder'" in observed  # names the holder
                    assert not (workspace / "held.txt").exists()  # nothing written


async def test_the_server_s_embedded_work_roles_lock_like_a_worker(
    db_url: str, tmp_path: Path
) -> None:
    """AM_EMBEDDED_WORK_ROLES runs the same agent in the server: an undeclared path is
    locked first, and a path another step holds is refused as an observation."""
    scenario = tmp_path / "scenario.json"
    rules = []
    for step_id, path in (("free", "found.txt"), ("blocked", "held.txt")):
        rules.append(
            {
                "role": "analyst",
                "step_id": step_id,
                "iteration": 0,
                "response": {
                    "thought": "write it",
                    "action": "write_file",
                    "action_input": {"path": path, "content": "new text"},
                },
            }
        )
    scenario.write_text(json.dumps({"rules": rules}))
    async with (
        running_server(
            db_url,
            tmp_path,
            embedded_work_roles="analyst",
            llm_scenario=scenario,
            agent_lock_wait=0.3,
        ) as server,
        server.client() as http,
    ):
        holding = await submit(
            http,
            {
                "goal": "hold a file",
                "steps": [
                    {
                        "id": "holder",
                        "role": "holder",
                        "files": [{"path": "held.txt", "mode": "exclusive"}],
                    }
                ],
                "options": {"audit": False, "synthesize": False},
            },
        )
        held = await claim(http, "holder")
        assert held is not None and held["task_id"] == holding
        task_id = await submit(
            http,
            {
                "goal": "locks",
                "steps": [{"id": "free", "role": "analyst"}, {"id": "blocked", "role": "analyst"}],
                "options": {"audit": False, "synthesize": False},
            },
        )
        async with asyncio.timeout(30):
            while (task := await get_task(http, task_id, history="true"))["status"] == "running":  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        assert (await report(http, held)).status_code in (200, 201)
        events = (await http.get(f"/v1/tasks/{task_id}/events")).json()
    assert task["status"] == "completed", task["status"]
    observed = step_of(task, "blocked")["attempts"][0]["ra_history"][0]["observation"]
    assert observed.startswith("error:") and "'holder'" in observed
    workspace = server.settings.workspace
    assert not (workspace / "held.txt").exists()
    assert (workspace / "found.txt").read_text() == "new text"
    granted = [(e["step_id"], e["data"]["path"]) for e in events if e["type"] == "lock.granted"]
    assert ("free", "found.txt") in granted
