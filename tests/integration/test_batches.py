"""Claiming and reporting several steps per request."""

from __future__ import annotations

import asyncio
from collections import Counter

from tests.helpers import flat_plan, get_task, report_body, submit
from tests.server import LiveServer


async def test_batch_claim_and_report_finish_a_diamond_in_two_rounds(server: LiveServer) -> None:
    plan = {
        "goal": "diamond",
        "steps": [
            {"id": "a", "role": "w"},
            {"id": "b", "role": "w"},
            {"id": "c", "role": "w"},
            # d waits for all three, which finish in the same batch report.
            {"id": "d", "role": "w", "depends_on": ["a", "b", "c"]},
        ],
    }
    async with server.client() as client:
        task_id = await submit(client, plan)
        r = await client.post("/v1/claims", json={"agent_id": "w1", "roles": ["w"], "max": 10})
        assert r.status_code == 200
        claims = r.json()["claims"]
        assert sorted(c["step"]["id"] for c in claims) == ["a", "b", "c"]
        assert len({c["claim_token"] for c in claims}) == 3
        r = await client.post(
            "/v1/results/batch",
            json={"results": [report_body(c, output=c["step"]["id"]) for c in claims]},
        )
        assert r.status_code == 200
        assert [a["outcome"] for a in r.json()["results"]] == ["done"] * 3
        task = await get_task(client, task_id)
        assert {s["id"]: s["status"] for s in task["steps"]}["d"] == "ready"
        r = await client.post("/v1/claims", json={"agent_id": "w1", "roles": ["w"], "max": 10})
        (last,) = r.json()["claims"]
        assert last["step"]["id"] == "d"
        assert last["context"]["dependencies"] == {"a": "a", "b": "b", "c": "c"}
        r = await client.post("/v1/results/batch", json={"results": [report_body(last)]})
        assert r.json()["results"][0]["outcome"] == "done"
        assert (await get_task(client, task_id))["status"] == "completed"
        empty = await client.post("/v1/claims", json={"agent_id": "w1", "roles": ["w"]})
        assert empty.status_code == 204


async def test_a_batch_answers_each_report_on_its_own(server: LiveServer) -> None:
    async with server.client() as client:
        await submit(client, flat_plan(3))
        claims = (
            await client.post("/v1/claims", json={"agent_id": "w1", "roles": ["worker"], "max": 3})
        ).json()["claims"]
        good, failing, stale = claims
        first = await client.post("/v1/results/batch", json={"results": [report_body(good)]})
        results = [
            report_body(good),  # the same report again: the same answer
            report_body(failing, status="failure", error="boom", retryable=False),
            {**report_body(stale), "claim_token": "not-a-token"},
        ]
        r = await client.post("/v1/results/batch", json={"results": results})
        assert r.status_code == 200
        again, failed, refused = r.json()["results"]
        assert again == first.json()["results"][0]
        assert failed["outcome"] == "failed"
        assert refused["code"] == "stale_claim"


async def test_concurrent_batch_claimers_never_share_a_step(server: LiveServer) -> None:
    async with server.client() as client:
        await submit(client, flat_plan(400))
    seen: list[str] = []

    async def claimer(n: int) -> None:
        async with server.client() as client:
            while True:
                r = await client.post(
                    "/v1/claims", json={"agent_id": f"w{n}", "roles": ["worker"], "max": 7}
                )
                if r.status_code == 204:
                    return
                claims = r.json()["claims"]
                seen.extend(c["step"]["id"] for c in claims)
                r = await client.post(
                    "/v1/results/batch", json={"results": [report_body(c) for c in claims]}
                )
                assert all(a.get("outcome") == "done" for a in r.json()["results"])

    await asyncio.gather(*(claimer(n) for n in range(8)))
    counts = Counter(seen)
    assert len(counts) == 400 and set(counts.values()) == {1}


async def test_batch_requests_are_checked(server: LiveServer) -> None:
    async with server.client() as client:
        too_many = await client.post("/v1/claims", json={"agent_id": "w", "roles": ["x"], "max": 0})
        assert too_many.status_code == 422 and "max" in too_many.json()["message"]
        empty = await client.post("/v1/results/batch", json={"results": []})
        assert empty.status_code == 422 and "results" in empty.json()["message"]
        token = await server.token("work", roles=["analyst"])
    async with server.client(token) as worker:
        refused = await worker.post("/v1/claims", json={"agent_id": "w", "roles": ["writer"]})
        assert refused.status_code == 403 and "writer" in refused.json()["message"]
