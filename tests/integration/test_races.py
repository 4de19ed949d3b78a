"""Races the review found: reaper vs. a failing task, reports vs. a cancel, batch repeats."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select

from agent_manager.db.tables import ResultORM
from tests.helpers import claim, flat_plan, get_task, report, report_body, submit
from tests.server import LiveServer


async def test_a_reaped_step_that_fails_the_task_does_not_revive_its_sibling(
    server: LiveServer,
) -> None:
    async with server.client() as client:
        task_id = await submit(client, flat_plan(2, max_attempts=1, lease_seconds=1))
        assert await claim(client) and await claim(client)
        for _ in range(100):  # both leases lapse; the reaper takes them in one batch
            task = await get_task(client, task_id)
            if task["status"] == "failed":
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)  # a few more reaper passes
        task = await get_task(client, task_id)
        assert task["status"] == "failed"
        assert sorted(s["status"] for s in task["steps"]) == ["cancelled", "failed"]
        events = (await client.get(f"/v1/tasks/{task_id}/events")).json()
        assert [e["type"] for e in events].count("task.failed") == 1
        assert await claim(client) is None


async def test_reports_racing_a_cancel_all_get_a_clean_answer(server: LiveServer) -> None:
    async with server.client() as client:
        task_id = await submit(client, flat_plan(40))
        claims = [await claim(client, agent=f"w{n}") for n in range(40)]
        answers = await asyncio.gather(
            *(report(client, c) for c in claims[:20]),
            client.post(f"/v1/tasks/{task_id}/cancel"),
            *(report(client, c) for c in claims[20:]),
        )
        cancel = answers[20]
        assert cancel.status_code == 200
        reports = answers[:20] + answers[21:]
        assert {r.status_code for r in reports} <= {200, 409}, [r.text for r in reports]
        task = await get_task(client, task_id)
        # Whichever came first: the cancel, or the last report completing the task.
        assert task["status"] in ("cancelled", "completed")
        assert cancel.json()["status"] == task["status"]
        accepted = sum(r.status_code == 200 for r in reports)
        assert sum(s["status"] == "done" for s in task["steps"]) == accepted
        assert all(s["status"] in ("done", "cancelled") for s in task["steps"])


async def test_a_batch_may_repeat_a_report(server: LiveServer) -> None:
    async with server.client() as client:
        await submit(client, flat_plan(2))
        c, other = await claim(client), await claim(client)
        body = {"results": [report_body(c), report_body(other), report_body(c)]}
        r = await client.post("/v1/results/batch", json=body)
        assert r.status_code == 200, r.text
        first, second, again = r.json()["results"]
        assert first == again and first["outcome"] == second["outcome"] == "done"
    async with server.manager.db.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(ResultORM)) == 2
