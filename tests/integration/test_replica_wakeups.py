"""Two server replicas on one PostgreSQL: wake-ups and events cross between them.

With Redis the replicas hear each other; the re-check interval is set far beyond the
test's patience, so only a notice over Redis can deliver in time. Without Redis the
same must happen through the short database re-check.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.databases import postgres_database
from tests.helpers import claim, flat_plan, report, submit
from tests.integration.test_event_stream import read_stream
from tests.server import LiveServer, running_server

pytestmark = pytest.mark.postgres

REDIS_URL = "redis://127.0.0.1:6379/0"
PATIENCE = 8.0  # seconds; a wake-up that waited for the re-check (10 s) would miss it


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    async with postgres_database() as url:
        yield url


async def pair(
    pg_url: str, tmp_path: Path, **settings: Any
) -> AsyncIterator[tuple[LiveServer, LiveServer]]:
    async with (
        running_server(pg_url, tmp_path / "a", **settings) as a,
        running_server(pg_url, tmp_path / "b", **settings) as b,
    ):
        yield a, b


@pytest.fixture
async def with_redis(pg_url: str, tmp_path: Path) -> AsyncIterator[tuple[LiveServer, LiveServer]]:
    settings = {
        "redis_url": REDIS_URL,
        "redis_channel": f"test:{uuid.uuid4().hex}",
        "recheck_interval": 10.0,  # the bus's healthy re-check is longer still
    }
    async for servers in pair(pg_url, tmp_path, **settings):
        for server in servers:
            async with asyncio.timeout(5):
                while not server.app.state.bus.healthy:  # noqa: ASYNC110 - no event for it
                    await asyncio.sleep(0.01)
        yield servers


@pytest.fixture
async def without_redis(
    pg_url: str, tmp_path: Path
) -> AsyncIterator[tuple[LiveServer, LiveServer]]:
    async for servers in pair(pg_url, tmp_path, recheck_interval=0.2):
        yield servers


async def handed_across(a: LiveServer, b: LiveServer) -> None:
    """A claimer long-polls B; a step becomes ready on A; the claimer gets it."""
    async with a.client() as on_a, b.client() as on_b:
        waiting = asyncio.create_task(claim(on_b, agent="wb", wait=PATIENCE + 30))
        await asyncio.sleep(0.3)  # let it park in B's wait
        task_id = await submit(on_a, {**flat_plan(1), "options": {"audit": False}})
        got = await asyncio.wait_for(waiting, PATIENCE)
        assert got is not None and got["task_id"] == task_id

        # And the other way round: a report on B readies the next step, waited for on A.
        waiting = asyncio.create_task(claim(on_a, agent="wa", wait=PATIENCE + 30))
        chain = {
            "goal": "two steps",
            "steps": [
                {"id": "one", "role": "worker"},
                {"id": "two", "role": "worker", "depends_on": ["one"]},
            ],
            "options": {"audit": False, "synthesize": False},
        }
        second = await submit(on_b, chain)
        first = await asyncio.wait_for(waiting, PATIENCE)
        assert first is not None and first["step"]["id"] == "one"
        waiting = asyncio.create_task(claim(on_a, agent="wa", wait=PATIENCE + 30))
        await asyncio.sleep(0.3)
        assert (await report(on_b, first)).status_code in (200, 201)
        nxt = await asyncio.wait_for(waiting, PATIENCE)
        assert nxt is not None and (nxt["task_id"], nxt["step"]["id"]) == (second, "two")


async def test_a_step_made_ready_on_one_replica_wakes_a_claimer_on_the_other(
    with_redis: tuple[LiveServer, LiveServer],
) -> None:
    await handed_across(*with_redis)


async def test_without_redis_the_database_re_check_finds_it(
    without_redis: tuple[LiveServer, LiveServer],
) -> None:
    await handed_across(*without_redis)


async def test_events_caused_on_one_replica_stream_from_the_other(
    with_redis: tuple[LiveServer, LiveServer],
) -> None:
    a, b = with_redis
    async with a.client() as on_a, b.client() as on_b:
        task_id = await submit(on_a, flat_plan(3, audit=False, synthesize=False))
        streamed = asyncio.create_task(read_stream(on_b, task_id))
        await asyncio.sleep(0.3)
        for _ in range(3):
            c = await claim(on_a, agent="wa")
            assert c is not None
            assert (await report(on_a, c)).status_code in (200, 201)
        messages = await asyncio.wait_for(streamed, PATIENCE)
        stored = (await on_a.get(f"/v1/tasks/{task_id}/events")).json()
    assert [m["id"] for m in messages] == [e["id"] for e in stored]
    assert messages[-1]["event"] == "task.completed"
    assert {m["agent_id"] for m in (x["data"] for x in messages) if "agent_id" in m} == {"wa"}
