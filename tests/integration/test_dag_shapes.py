"""Each step becomes ready exactly when its dependencies are done, over real HTTP."""

from __future__ import annotations

import httpx
import pytest

from tests.server import LiveServer

SHAPES = {
    "chain": {"a": [], "b": ["a"], "c": ["b"], "d": ["c"]},
    "fan_out": {"root": [], "x": ["root"], "y": ["root"], "z": ["root"]},
    "fan_in": {"x": [], "y": [], "z": [], "sink": ["x", "y", "z"]},
    "diamond": {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]},
}


def plan(shape: dict[str, list[str]]) -> dict:
    return {
        "goal": "exercise a shape",
        "steps": [
            {"id": sid, "role": "worker", "instruction": f"do {sid}", "depends_on": deps}
            for sid, deps in shape.items()
        ],
    }


async def claim(client: httpx.AsyncClient, role: str = "worker") -> dict | None:
    r = await client.get("/v1/tasks/ready", params={"agent_id": "w1", "role": role})
    if r.status_code == 204:
        return None
    assert r.status_code == 200, r.text
    return r.json()


async def report(client: httpx.AsyncClient, c: dict, output: str = "ok") -> dict:
    r = await client.post(
        "/v1/results",
        json={
            "task_id": c["task_id"],
            "step_id": c["step"]["id"],
            "claim_token": c["claim_token"],
            "agent_id": "w1",
            "status": "success",
            "output": output,
        },
    )
    assert r.status_code == 200, r.text
    return r.json()


@pytest.mark.parametrize("name", list(SHAPES))
async def test_steps_become_ready_exactly_when_dependencies_are_done(
    server: LiveServer, name: str
) -> None:
    shape = SHAPES[name]
    async with server.client() as client:
        r = await client.post("/v1/tasks", json=plan(shape))
        assert r.status_code == 201, r.text
        task_id = r.json()["id"]
        done: set[str] = set()
        while True:
            task = (await client.get(f"/v1/tasks/{task_id}")).json()
            statuses = {s["id"]: s["status"] for s in task["steps"]}
            for sid, deps in shape.items():
                if sid in done:
                    assert statuses[sid] == "done"
                elif set(deps) <= done:
                    assert statuses[sid] == "ready", (sid, statuses)
                else:
                    assert statuses[sid] == "pending", (sid, statuses)
            c = await claim(client)
            if c is None:
                break
            # The claimer is handed its dependencies' outputs.
            assert set(c["context"]["dependencies"]) == set(shape[c["step"]["id"]])
            assert task["status"] == "running"
            await report(client, c, output=f"out-{c['step']['id']}")
            done.add(c["step"]["id"])
        assert done == set(shape)
        task = (await client.get(f"/v1/tasks/{task_id}")).json()
        assert task["status"] == "completed"
        assert task["finished_at"] is not None
        sinks = [s for s in shape if not any(s in d for d in shape.values())]
        assert task["final_result"]["answer"]["outputs"] == {s: f"out-{s}" for s in sinks}
