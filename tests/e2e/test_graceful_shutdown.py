"""``am serve`` stopped by SIGTERM: long-polls answer 204 at once, a request in flight
still gets its answer, the process exits 0 — and its JSON log lines name the steps."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import claim, get_task, report_body, submit
from tests.processes import ServerProcess


async def in_flight(client: httpx.AsyncClient) -> float:
    """Requests the server is handling now (this scrape included)."""
    text = (await client.get("/metrics")).text
    for family in text_string_to_metric_families(text):
        if family.name == "am_http_requests_in_flight":
            return float(family.samples[0].value)
    raise AssertionError("no am_http_requests_in_flight")


async def wait_until(condition: Any, what: str, timeout: float = 30) -> None:
    for _ in range(int(timeout / 0.05)):
        if await condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


async def test_sigterm_ends_long_polls_finishes_requests_and_exits_0(
    db_url: str, tmp_path: Path
) -> None:
    server = ServerProcess(
        db_url, tmp_path, AM_LOG_FORMAT="json", AM_LOG_LEVEL="debug", AM_SHUTDOWN_GRACE="20"
    ).start()
    try:
        async with server.client() as client, server.client() as poller, server.client() as slow:
            task_id = await submit(
                client, {"goal": "stop gently", "steps": [{"id": "only", "role": "w"}]}
            )
            c = await claim(client, "w", agent="w-1")
            assert c is not None
            beat = await client.post(
                "/v1/steps/only/heartbeat",
                json={"task_id": task_id, "claim_token": c["claim_token"], "agent_id": "w-1"},
            )
            assert beat.status_code == 200

            # A long-poll for a role with no work, and a report whose body is still on
            # its way: both in flight when the signal comes.
            long_poll = asyncio.create_task(
                poller.get(
                    "/v1/tasks/ready",
                    params={"agent_id": "w-2", "role": "idle", "wait": 60},
                    timeout=45,
                )
            )
            body = json.dumps(report_body(c, output="finished after the signal")).encode()
            signalled = asyncio.Event()

            async def trickle() -> AsyncIterator[bytes]:
                yield body[:20]
                await signalled.wait()
                yield body[20:]

            reporting = asyncio.create_task(
                slow.post(
                    "/v1/results",
                    content=trickle(),
                    headers={"Content-Type": "application/json"},
                    timeout=45,
                )
            )
            await wait_until(lambda: _at_least(client, 3), "both requests in flight")

            assert server.proc is not None
            server.proc.send_signal(signal.SIGTERM)
            # The long-poll ends long before its 60 seconds (httpx gives up at 45).
            polled = await long_poll
            assert polled.status_code == 204
            # uvicorn has stopped listening and waits for the open request...
            await wait_until(
                lambda: _logged(server.log, "Waiting for connections to close"),
                "uvicorn waiting for the report",
            )
            assert not reporting.done()
            signalled.set()  # ...whose body only now arrives in full
            reported = await reporting
            assert reported.status_code == 200, reported.text
            assert reported.json()["outcome"] == "done"
        assert await asyncio.to_thread(server.proc.wait, 30) == 0
    finally:
        server.kill()

    lines = [json.loads(line) for line in server.log.read_text().splitlines() if line.strip()]
    assert all({"time", "level", "logger", "message"} <= line.keys() for line in lines)
    for_step = [
        line for line in lines if line.get("task_id") == task_id and line.get("step_id") == "only"
    ]
    messages = {(line["logger"], line.get("path", "").split("?")[0]) for line in for_step}
    # The claim, its heartbeat and the report are logged with the step's ids: the
    # server's own lines and uvicorn's access lines alike.
    assert ("uvicorn.access", "/v1/tasks/ready") in messages
    assert ("uvicorn.access", "/v1/steps/only/heartbeat") in messages
    assert ("uvicorn.access", "/v1/results") in messages
    assert any(line["logger"] == "agent_manager.work" for line in for_step)
    assert all(line.get("agent_id") in (None, "w-1") for line in for_step)
    assert any("SIGTERM" in line["message"] for line in lines)
    assert any(line["logger"] == "uvicorn.error" for line in lines)


async def _at_least(client: httpx.AsyncClient, n: int) -> bool:
    return await in_flight(client) >= n


async def _logged(log: Path, text: str) -> bool:
    return text in await asyncio.to_thread(log.read_text)


async def test_on_sigterm_the_embedded_agents_hand_their_step_back(
    db_url: str, tmp_path: Path
) -> None:
    # Every scripted-model call takes a minute: the planner is mid-step at the signal.
    busy = ServerProcess(
        db_url, tmp_path / "a", AM_LLM_SCRIPTED_LATENCY="60", AM_LOG_LEVEL="info"
    ).start()
    try:
        async with busy.client() as client:
            task_id = await submit(client, {"goal": "plan slowly"})

            async def planning() -> bool:
                task = await get_task(client, task_id)
                return bool(task["steps"]) and task["steps"][0]["status"] == "claimed"

            await wait_until(planning, "the planner step claimed")
        assert busy.stop(signal.SIGTERM, timeout=30) == 0
    finally:
        busy.kill()
    # Ready again at once (same attempt), not after its lease: the next server, here
    # one without agents, hands it to whoever asks.
    with ServerProcess(db_url, tmp_path / "b", AM_EMBEDDED_AGENTS="false") as idle:
        async with idle.client() as client:
            step = (await get_task(client, task_id))["steps"][0]
            assert (step["id"], step["status"], step["attempt"]) == ("_plan", "ready", 1)
            planner = await claim(client, "planner", agent="external")
            assert planner is not None and planner["step"]["id"] == "_plan"
