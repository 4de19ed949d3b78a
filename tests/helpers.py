"""Small HTTP helpers shared by the tests."""

from __future__ import annotations

from typing import Any

import httpx


def chain_plan(n: int, role: str = "worker", **options: Any) -> dict[str, Any]:
    steps = [
        {"id": f"s{i}", "role": role, "depends_on": [f"s{i - 1}"] if i else []} for i in range(n)
    ]
    return {"goal": "a chain", "steps": steps, "options": options}


def flat_plan(n: int, roles: list[str] | None = None, **options: Any) -> dict[str, Any]:
    roles = roles or ["worker"]
    steps = [{"id": f"s{i}", "role": roles[i % len(roles)]} for i in range(n)]
    return {"goal": "independent steps", "steps": steps, "options": options}


async def submit(client: httpx.AsyncClient, body: dict[str, Any]) -> str:
    r = await client.post("/v1/tasks", json=body)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def claim(
    client: httpx.AsyncClient,
    roles: list[str] | str = "worker",
    agent: str = "w1",
    wait: float = 0,
) -> dict[str, Any] | None:
    roles = [roles] if isinstance(roles, str) else roles
    r = await client.get("/v1/tasks/ready", params={"agent_id": agent, "role": roles, "wait": wait})
    if r.status_code == 204:
        return None
    assert r.status_code == 200, r.text
    return dict(r.json())


def report_body(c: dict[str, Any], status: str = "success", **fields: Any) -> dict[str, Any]:
    return {
        "task_id": c["task_id"],
        "step_id": c["step"]["id"],
        "claim_token": c["claim_token"],
        "status": status,
        **fields,
    }


async def report(
    client: httpx.AsyncClient, c: dict[str, Any], status: str = "success", **fields: Any
) -> httpx.Response:
    return await client.post("/v1/results", json=report_body(c, status, **fields))


async def get_task(client: httpx.AsyncClient, task_id: str, **params: Any) -> dict[str, Any]:
    r = await client.get(f"/v1/tasks/{task_id}", params=params)
    assert r.status_code == 200, r.text
    return dict(r.json())


def step_of(task: dict[str, Any], step_id: str) -> dict[str, Any]:
    return next(s for s in task["steps"] if s["id"] == step_id)
