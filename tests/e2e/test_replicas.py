"""Two ``am serve`` replicas on one PostgreSQL with Redis, eight ``am worker``
processes split between them: 2,000 steps, each accepted exactly once, and one
replica's event stream showing what the other replica's workers did."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from agent_manager.client import AgentManagerClient
from tests.e2e.test_workers import (  # noqa: F401 - pg_url and workers are fixtures
    WorkerProcess,
    accepted_once,
    pg_url,
    stop_all,
    workers,
)
from tests.integration.test_event_stream import read_stream
from tests.processes import ServerProcess
from tests.server import ADMIN_TOKEN

pytestmark = pytest.mark.postgres

REDIS_URL = "redis://127.0.0.1:6379/0"
TASKS, STEPS, LANES = 10, 200, 10


def layered_plan() -> list[dict[str, object]]:
    """Ten lanes of twenty steps: each step waits for the one before it in its lane, so
    most steps are made ready by a report — often on the other replica."""
    return [
        {
            "id": f"s{i}",
            "role": "noop",
            "instruction": "noop",
            "depends_on": [f"s{i - LANES}"] if i >= LANES else [],
        }
        for i in range(STEPS)
    ]


async def test_two_replicas_eight_workers_two_thousand_steps(
    pg_url: str,  # noqa: F811
    tmp_path: Path,
    workers: Callable[..., WorkerProcess],  # noqa: F811
) -> None:
    env = {"AM_REDIS_URL": REDIS_URL, "AM_REDIS_CHANNEL": f"test:{uuid.uuid4().hex}"}
    with (
        ServerProcess(pg_url, tmp_path / "a", **env) as a,
        ServerProcess(pg_url, tmp_path / "b", **env) as b,
    ):
        async with (
            AgentManagerClient(a.url, ADMIN_TOKEN) as on_a,
            b.client() as raw_b,
        ):
            task_ids = [
                (
                    await on_a.submit(f"layers {t}", steps=layered_plan(), options={"audit": False})
                ).id
                for t in range(TASKS)
            ]
            watched = asyncio.create_task(read_stream(raw_b, task_ids[0]))
            crew = [
                workers(f"w{n}", (a if n % 2 else b).url, "--concurrency", "4") for n in range(8)
            ]
            for task_id in task_ids:
                done = await on_a.wait(task_id, timeout=240, poll=0.5)
                assert done.status == "completed", (task_id, done.status)
            assert stop_all(crew) == [0] * 8

            starts = Counter((e[1], e[2]) for w in crew for e in w.events() if e[0] == "start")
            expected = {(t, f"s{i}") for t in task_ids for i in range(STEPS)}
            assert set(starts) == expected
            assert max(starts.values()) == 1  # executed exactly once
            for task_id in task_ids:
                accepted_once(await on_a.get(task_id, history=True))

            # B's stream of the first task holds every event, in order — including the
            # claims of the workers that talk only to A.
            messages = await asyncio.wait_for(watched, 60)
            stored = (
                await raw_b.get(f"/v1/tasks/{task_ids[0]}/events", params={"limit": 10_000})
            ).json()
            assert [m["id"] for m in messages] == [e["id"] for e in stored]
            claimers = {m["data"]["agent_id"] for m in messages if m["event"] == "step.claimed"}
            on_a_workers = {f"w{n}" for n in range(8) if n % 2}
            assert claimers & on_a_workers, claimers
