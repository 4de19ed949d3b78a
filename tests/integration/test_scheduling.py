"""Claiming under concurrency, leases, retries, failures and cancellation — both databases."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx
import pytest

from tests.helpers import (
    chain_plan,
    claim,
    flat_plan,
    get_task,
    report,
    step_of,
    submit,
)
from tests.server import LiveServer


async def test_sixteen_claimers_take_five_hundred_steps_exactly_once(server: LiveServer) -> None:
    roles = ["analyst", "researcher", "writer", "critic"]
    async with server.client() as client:
        task_id = await submit(client, flat_plan(500, roles))
    claims: list[tuple[int, dict]] = []

    async def claimer(n: int) -> None:
        asked = [roles[n % 4], roles[(n + 1) % 4]]
        async with server.client() as client:
            while True:
                c = await claim(client, asked, agent=f"w{n}")
                if c is None:
                    return
                assert c["step"]["role"] in asked, "handed a role it did not ask for"
                claims.append((n, c))

    await asyncio.gather(*(claimer(n) for n in range(16)))
    ids = Counter(c["step"]["id"] for _, c in claims)
    assert len(ids) == 500 and set(ids.values()) == {1}
    async with server.client() as client:
        task = await get_task(client, task_id)
    assert Counter(s["status"] for s in task["steps"]) == {"claimed": 500}
    # Each claimer got work: the load spread (no claimer starved).
    assert len({n for n, _ in claims}) == 16


async def test_priority_then_readiness_order(server: LiveServer) -> None:
    async with server.client() as client:
        low = await submit(client, {"goal": "low", "steps": [{"id": "a", "role": "w"}]})
        high = await submit(
            client,
            {"goal": "high", "steps": [{"id": "b", "role": "w"}], "options": {"priority": 5}},
        )
        later = await submit(client, {"goal": "low later", "steps": [{"id": "c", "role": "w"}]})
        order = [(await claim(client, "w"))["task_id"] for _ in range(3)]  # type: ignore[index]
    assert order == [high, low, later]


async def test_lapsed_lease_goes_back_to_ready_and_the_late_report_is_refused(
    server: LiveServer,
) -> None:
    async with server.client() as client:
        task_id = await submit(client, chain_plan(1, lease_seconds=1))
        first = await claim(client, agent="slow")
        assert first is not None and first["step"]["attempt"] == 1
        second = await claim(client, agent="fast", wait=5)  # handed over when the lease lapses
        assert second is not None
        assert second["step"]["id"] == first["step"]["id"]
        assert second["step"]["attempt"] == 2
        late = await report(client, first, output="late")
        assert late.status_code == 409 and late.json()["code"] == "stale_claim"
        hb = await client.post(
            f"/v1/steps/{first['step']['id']}/heartbeat",
            json={"task_id": task_id, "claim_token": first["claim_token"]},
        )
        assert hb.status_code == 409
        task = await get_task(client, task_id, history="true")
        step = step_of(task, "s0")
        assert step["status"] == "claimed" and step["agent_id"] == "fast"
        assert step["attempts"] == []  # the late report stored nothing
        assert (await report(client, second, output="ok")).status_code == 200
        task = await get_task(client, task_id)
        assert task["status"] == "completed"
        events = (await client.get(f"/v1/tasks/{task_id}/events")).json()
        assert "step.lease_expired" in [e["type"] for e in events]


async def test_heartbeats_keep_a_claim_alive(server: LiveServer) -> None:
    async with server.client() as client:
        task_id = await submit(client, chain_plan(1, lease_seconds=1))
        c = await claim(client)
        assert c is not None
        for _ in range(4):
            await asyncio.sleep(0.5)
            hb = await client.post(
                "/v1/steps/s0/heartbeat",
                json={"task_id": task_id, "claim_token": c["claim_token"]},
            )
            assert hb.status_code == 200, hb.text
            assert hb.json()["cancelled"] is False
        assert await claim(client, agent="other") is None
        assert (await report(client, c)).status_code == 200


async def test_retryable_failure_is_retried_then_fails_the_task(server: LiveServer) -> None:
    async with server.client() as client:
        task_id = await submit(client, chain_plan(3, max_attempts=3))
        outcomes = []
        for attempt in (1, 2, 3):
            c = await claim(client, wait=2)
            assert c is not None and c["step"]["id"] == "s0"
            assert c["step"]["attempt"] == attempt
            r = await report(client, c, status="failure", error=f"boom {attempt}", retryable=True)
            outcomes.append(r.json()["outcome"])
        assert outcomes == ["retry_scheduled", "retry_scheduled", "failed"]
        task = await get_task(client, task_id, history="true")
        assert task["status"] == "failed"
        assert "s0" in task["error"] and "boom 3" in task["error"]
        assert [s["status"] for s in task["steps"]] == ["failed", "cancelled", "cancelled"]
        assert [a["error"] for a in step_of(task, "s0")["attempts"]] == [
            "boom 1",
            "boom 2",
            "boom 3",
        ]
        assert await claim(client) is None


async def test_non_retryable_failure_fails_at_once(server: LiveServer) -> None:
    async with server.client() as client:
        task_id = await submit(client, chain_plan(2, max_attempts=5))
        c = await claim(client)
        assert c is not None
        r = await report(client, c, status="failure", error="bad input", retryable=False)
        assert r.json()["outcome"] == "failed"
        task = await get_task(client, task_id)
        assert task["status"] == "failed"
        assert step_of(task, "s1")["status"] == "cancelled"


async def test_retry_waits_for_its_backoff(server: LiveServer) -> None:
    server.manager.retry_policy = type(server.manager.retry_policy)(base=0.6, jitter=0.0)
    async with server.client() as client:
        await submit(client, chain_plan(1))
        c = await claim(client)
        assert c is not None
        await report(client, c, status="failure", error="flaky")
        assert await claim(client) is None  # still backing off
        loop = asyncio.get_running_loop()
        start = loop.time()
        again = await claim(client, wait=5)
        assert again is not None and again["step"]["attempt"] == 2
        assert loop.time() - start < 3  # woken when due, not at the end of the wait


async def test_cancel_stops_the_task_and_tells_the_worker(server: LiveServer) -> None:
    async with server.client() as client:
        task_id = await submit(client, chain_plan(3))
        c = await claim(client)
        assert c is not None
        r = await client.post(f"/v1/tasks/{task_id}/cancel")
        assert r.status_code == 200 and r.json()["status"] == "cancelled"
        assert {s["status"] for s in r.json()["steps"]} == {"cancelled"}
        hb = await client.post(
            "/v1/steps/s0/heartbeat", json={"task_id": task_id, "claim_token": c["claim_token"]}
        )
        assert hb.status_code == 200 and hb.json()["cancelled"] is True
        late = await report(client, c)
        assert late.status_code == 409
        again = await client.post(f"/v1/tasks/{task_id}/cancel")  # idempotent
        assert again.status_code == 200 and again.json()["status"] == "cancelled"


async def test_long_poll_is_handed_a_step_the_moment_it_is_ready(server: LiveServer) -> None:
    async with server.client() as client, server.client() as other:
        task_id = await submit(client, chain_plan(2))
        first = await claim(client)
        assert first is not None
        waiting = asyncio.create_task(claim(other, agent="w2", wait=20))
        await asyncio.sleep(0.3)
        assert not waiting.done()
        loop = asyncio.get_running_loop()
        assert (await report(client, first)).status_code == 200
        reported = loop.time()
        second = await waiting
        assert second is not None and second["step"]["id"] == "s1"
        assert loop.time() - reported < 2.0  # not the 20 s wait
        assert second["context"]["dependencies"] == {"s0": None}
        _ = task_id


async def test_an_empty_wait_ends_with_204(server: LiveServer) -> None:
    async with server.client() as client:
        loop = asyncio.get_running_loop()
        start = loop.time()
        assert await claim(client, "nobody", wait=0.5) is None
        assert loop.time() - start >= 0.45


async def test_a_released_step_goes_back_with_the_same_attempt(server: LiveServer) -> None:
    async with server.client() as client:
        task_id = await submit(client, chain_plan(1))
        c = await claim(client, agent="leaving")
        assert c is not None
        body = {"task_id": task_id, "claim_token": c["claim_token"], "agent_id": "leaving"}
        r = await client.post("/v1/steps/s0/release", json=body)
        assert r.status_code == 200 and r.json() == {"released": True}
        again = await claim(client, agent="next")
        assert again is not None and again["step"]["attempt"] == 1
        assert (await client.post("/v1/steps/s0/release", json=body)).status_code == 409
        assert (await report(client, c)).status_code == 409  # the old claim is gone


async def test_a_step_claimed_for_a_client_that_hung_up_is_handed_back(
    server: LiveServer,
) -> None:
    async with server.client() as client:
        # A long-poll whose client gives up (its read timeout) before a step is ready.
        async with server.client(timeout=0.5) as impatient:
            with pytest.raises(httpx.ReadTimeout):
                await impatient.get(
                    "/v1/tasks/ready", params={"agent_id": "gone", "role": "late", "wait": 5}
                )
        await submit(client, {"goal": "late", "steps": [{"id": "x", "role": "late"}]})
        # The server may have claimed it for the vanished waiter; it must come back.
        c = await claim(client, "late", agent="present", wait=5)
        assert c is not None and c["step"]["attempt"] == 1
