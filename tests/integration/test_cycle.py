"""The whole Parallel → Audit → Rework → Synthesis cycle, run by the server's agents.

Through the real ``openai`` SDK against a fake OpenAI-compatible server on localhost,
and with the scripted model without any network.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx

from agent_manager.testing.fake_openai import FakeOpenAIServer
from tests.helpers import get_task
from tests.server import running_server

PLAN = {
    "goal": "Recommend a queue design",
    "steps": [
        {"id": "facts", "role": "researcher", "instruction": "[facts] Gather the facts."},
        {"id": "numbers", "role": "analyst", "instruction": "[numbers] Measure throughput."},
        {"id": "risks", "role": "analyst", "instruction": "[risks] List the risks."},
        {
            "id": "report",
            "role": "writer",
            "instruction": "[report] Write the recommendation.",
            "depends_on": ["facts", "numbers", "risks"],
        },
    ],
}


class Model:
    """Answers like a model would, by which schema is asked for and which step runs."""

    def __init__(self, *, audits_fail: int = 1) -> None:
        self.audits_fail = audits_fail
        self.audits = 0

    def __call__(self, body: dict[str, Any]) -> str:
        schema = body["response_format"]["json_schema"]["name"]
        text = "\n".join(str(m["content"]) for m in body["messages"])
        if schema == "TaskGraph":
            return json.dumps(PLAN)
        if schema == "ThoughtAction":
            step = next(s["id"] for s in PLAN["steps"] if f"[{s['id']}]" in text)
            answer = f"{step}: done"
            if step == "numbers":
                answer = "Throughput: 1,000 steps/s"
                if "Cite the benchmark" in text:  # the auditor's note reached the worker
                    answer += " (bench/claim_throughput.py, 8 clients)"
            return json.dumps(
                {"thought": "I can answer.", "action": "final_answer", "action_input": answer}
            )
        if schema == "AuditReport":
            self.audits += 1
            if self.audits <= self.audits_fail:
                return json.dumps(
                    {
                        "passed": False,
                        "score": 0.4,
                        "summary": "numbers lack a source",
                        "findings": [
                            {
                                "step_id": "numbers",
                                "problem": "no source given",
                                "rework_suggestions": ["Cite the benchmark"],
                            }
                        ],
                    }
                )
            return json.dumps({"passed": True, "score": 0.9, "summary": "good", "findings": []})
        if schema == "Synthesis":
            return json.dumps(
                {"answer": "# Recommendation\nUse the database queue.", "unresolved": []}
            )
        raise AssertionError(f"unexpected schema {schema}")


async def wait_final(client: httpx.AsyncClient, task_id: str, timeout: float = 60) -> dict:
    for _ in range(int(timeout / 0.1)):
        task = await get_task(client, task_id, history="true")
        if task["status"] in ("completed", "failed", "cancelled"):
            return task
        await asyncio.sleep(0.1)
    raise AssertionError(f"task still {task['status']}")


def openai_settings(fake: FakeOpenAIServer) -> dict[str, Any]:
    return {
        "llm_provider": "openai",
        "llm_base_url": fake.base_url,
        "llm_model": "fake-model",
        "llm_api_key": "sk-test",
        "llm_structured_mode": "json_schema",
        "embedded_work_roles": "analyst,researcher,writer",
    }


async def test_goal_runs_plan_parallel_audit_rework_synthesis(db_url: str, tmp_path: Path) -> None:
    model = Model(audits_fail=1)
    with FakeOpenAIServer(responder=model) as fake:
        async with (
            running_server(db_url, tmp_path, **openai_settings(fake)) as server,
            server.client() as client,
        ):
            r = await client.post("/v1/tasks", json={"goal": PLAN["goal"]})
            assert r.status_code == 201 and r.json()["status"] == "planning"
            task = await wait_final(client, r.json()["id"])
    assert task["status"] == "completed", task["error"]
    assert task["rework_round"] == 1
    steps = {s["id"]: s for s in task["steps"]}
    # Listed as planned: planning, the work in plan order, then audits and synthesis.
    assert list(steps) == [
        "_plan",
        "facts",
        "numbers",
        "risks",
        "report",
        "_audit-1",
        "_audit-2",
        "_synthesis",
    ]
    # Only the flagged step and what depends on it ran again; the others kept theirs.
    runs = {sid: len(s["attempts"]) for sid, s in steps.items()}
    assert runs["facts"] == runs["risks"] == 1
    assert runs["numbers"] == runs["report"] == 2
    assert [a["rework_round"] for a in steps["numbers"]["attempts"]] == [0, 1]
    assert "bench/claim_throughput.py" in steps["numbers"]["result"]["output"]
    assert steps["numbers"]["rework_notes"][:2] == ["no source given", "Cite the benchmark"]
    # Every attempt keeps its reasoning–acting history.
    for s in steps.values():
        for attempt in s["attempts"]:
            if s["role"] in ("analyst", "researcher", "writer"):
                assert attempt["ra_history"][-1]["action"] == "final_answer"
    assert [(a["round"], a["report"]["passed"]) for a in task["audits"]] == [(0, False), (1, True)]
    assert task["final_result"]["answer"].startswith("# Recommendation")
    assert task["final_result"]["unresolved"] == []
    total = sum(a["usage"]["total_tokens"] for s in steps.values() for a in s["attempts"])
    assert task["usage"]["total_tokens"] == total > 0
    assert model.audits == 2


async def test_spent_rework_budget_records_unresolved_findings(db_url: str, tmp_path: Path) -> None:
    with FakeOpenAIServer(responder=Model(audits_fail=99)) as fake:
        async with (
            running_server(db_url, tmp_path, **openai_settings(fake)) as server,
            server.client() as client,
        ):
            r = await client.post(
                "/v1/tasks", json={"goal": PLAN["goal"], "options": {"max_rework_rounds": 1}}
            )
            task = await wait_final(client, r.json()["id"])
    assert task["status"] == "completed"
    assert len(task["audits"]) == 2 and not any(a["report"]["passed"] for a in task["audits"])
    assert task["final_result"]["unresolved"][0]["step_id"] == "numbers"


async def test_the_scripted_model_runs_the_same_cycle_offline(db_url: str, tmp_path: Path) -> None:
    settings = {"llm_provider": "scripted", "embedded_work_roles": "analyst,researcher,writer"}
    async with running_server(db_url, tmp_path, **settings) as server, server.client() as client:
        r = await client.post("/v1/tasks", json={"goal": "Compare three queueing designs"})
        task = await wait_final(client, r.json()["id"])
    assert task["status"] == "completed", task["error"]
    assert [a["report"]["passed"] for a in task["audits"]] == [False, True]
    assert task["rework_round"] == 1
    assert task["final_result"]["answer"]
    assert len([s for s in task["steps"] if not s["id"].startswith("_")]) >= 3


async def test_an_unreachable_model_fails_the_task_with_the_cause(
    db_url: str, tmp_path: Path
) -> None:
    settings = {
        "llm_provider": "openai",
        "llm_base_url": "http://127.0.0.1:9/v1",  # nothing listens on the discard port
        "llm_model": "m",
        "llm_api_key": "sk-test",
        "llm_timeout": 1.0,
    }
    async with running_server(db_url, tmp_path, **settings) as server, server.client() as client:
        r = await client.post(
            "/v1/tasks", json={"goal": "anything", "options": {"max_attempts": 1}}
        )
        task = await wait_final(client, r.json()["id"], timeout=90)
    assert task["status"] == "failed"
    assert "planner" in task["error"] and "connect" in task["error"].lower()
