"""Resilience of the shipped topology: the processes ``am stack`` runs
(:mod:`agent_manager.deploy`), here with two server replicas, four workers, a private
PostgreSQL cluster and a private Redis on free ports.

Each test submits explicit plans of small steps (the no-op/sleep handler of
:mod:`tests.e2e.handlers`), breaks one part of the topology once the run is under
way, and checks that every task completes with exactly one accepted result per step,
and that work submitted after the fault completes too. Synchronisation is by polling
the server's view, never by sleeping.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from agent_manager.client import AgentManagerClient
from agent_manager.deploy import topology
from agent_manager.deploy.stack import Stack, StackOptions
from agent_manager.schemas import TaskPublic
from tests.server import ADMIN_TOKEN
from tests.services import (
    free_ports,
    require_postgres_binaries,
    require_redis_server,
    scratch_dir,
)

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[2]
TASKS = 2
STEPS = 100
#: Long enough that a fault lands while steps are running; short enough to be quick.
INSTRUCTION = "sleep 0.1"
LEASE_SECONDS = 5  # a claim lost with a killed replica comes back this soon


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    require_postgres_binaries()
    require_redis_server()
    with scratch_dir("am-failover-") as state:
        port, _ = free_ports(2, consecutive=True)
        postgres_port, redis_port = free_ports(2)
        options = StackOptions(
            state_dir=state,
            replicas=2,
            workers=4,
            port=port,
            postgres_port=postgres_port,
            redis_port=redis_port,
            env_file=None,
            follow=False,
            values={
                topology.ADMIN_TOKEN.name: ADMIN_TOKEN,
                topology.WORKER_ROLES.name: "noop",
                topology.WORKER_HANDLER.name: "tests.e2e.handlers:run",
                topology.WORKER_CONCURRENCY.name: "4",
                topology.LOG_LEVEL.name: "warning",
            },
        )
        environ = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "AM_TEST_HANDLER_LOG": str(tmp_path / "steps.log"),
            "AM_REAPER_INTERVAL": "0.2",
            "AM_RETRY_BASE_SECONDS": "0",
        }
        running = Stack(options, environ=environ, write=lambda _line: None)
        try:
            running.start()
            yield running
        finally:
            running.stop()
            # The state directory goes; its logs stay with the test's for a post-mortem.
            shutil.copytree(state / "logs", tmp_path / "logs", dirs_exist_ok=True)


def client(stack: Stack) -> AgentManagerClient:
    return AgentManagerClient(stack.server_urls, ADMIN_TOKEN)


async def submit(am: AgentManagerClient, tasks: int = TASKS, steps: int = STEPS) -> list[str]:
    plan = [{"id": f"s{i}", "role": "noop", "instruction": INSTRUCTION} for i in range(steps)]
    options = {"audit": False, "synthesize": False, "lease_seconds": LEASE_SECONDS}
    return [
        (await am.submit(f"failover {t}", steps=plan, options=options)).id for t in range(tasks)
    ]


async def steps_done(am: AgentManagerClient, task_ids: list[str]) -> int:
    tasks = [await am.get(task_id) for task_id in task_ids]
    return sum(1 for task in tasks for step in task.steps if step.status == "done")


async def until_under_way(am: AgentManagerClient, task_ids: list[str], at_least: int = 20) -> int:
    """Until ``at_least`` steps are done; the fault must land before all of them are."""
    deadline = time.monotonic() + 60
    while (done := await steps_done(am, task_ids)) < at_least:
        assert time.monotonic() < deadline, f"only {done} steps done after 60s"
        await asyncio.sleep(0.05)
    assert done < len(task_ids) * STEPS, "the run ended before the fault: nothing was tested"
    return done


async def all_complete(am: AgentManagerClient, task_ids: list[str]) -> list[TaskPublic]:
    """Every task completed, each step done with exactly one successful result."""
    finished = [await am.wait(task_id, timeout=90, poll=0.2) for task_id in task_ids]
    assert [task.status for task in finished] == ["completed"] * len(task_ids)
    tasks = [await am.get(task_id, history=True) for task_id in task_ids]
    for task in tasks:
        for step in task.steps:
            assert step.status == "done", (task.id, step.id, step.status)
            successes = [r for r in step.attempts if r.status == "success"]
            assert len(successes) == 1, (task.id, step.id, step.attempts)
    return tasks


async def test_workers_fail_over_when_a_replica_is_killed(stack: Stack) -> None:
    first, second = stack.server_urls
    async with client(stack) as am:
        task_ids = await submit(am)
        await until_under_way(am, task_ids)
        stack.servers[0].kill()  # SIGKILL: no goodbye to anyone

        await all_complete(am, task_ids)
        # The workers that talked to the dead replica moved on to the other one.
        moved = [w.name for w in stack.workers if f"trying {second}" in w.log.read_text()]
        assert moved, "no worker reports failing over"
        assert all(w.alive for w in stack.workers)
        async with httpx.AsyncClient() as http:
            with pytest.raises(httpx.ConnectError):
                await http.get(first + "/healthz")
        # New work still flows, through the surviving replica alone.
        assert am.base_url == second
        await all_complete(am, await submit(am, tasks=1, steps=20))


async def test_servers_answer_503_while_postgres_restarts_then_recover(stack: Stack) -> None:
    assert stack.postgres is not None
    async with client(stack) as am:
        task_ids = await submit(am)
        await until_under_way(am, task_ids)
        stack.postgres.stop("fast")  # pg_ctl stop -m fast: every connection is cut

        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        async with httpx.AsyncClient(headers=headers, timeout=10) as http:
            for url in stack.server_urls:
                ready = await http.get(url + "/readyz")
                assert ready.status_code == 503, (url, ready.text)
                task = await http.get(f"{url}/v1/tasks/{task_ids[0]}")
                assert task.status_code == 503, (url, task.text)
                assert task.json()["code"] == "unavailable"
            stack.postgres.start()

            await all_complete(am, task_ids)
            for url in stack.server_urls:
                assert (await http.get(url + "/readyz")).status_code == 200
        assert all(server.alive for server in stack.servers)
        assert all(worker.alive for worker in stack.workers)
        await all_complete(am, await submit(am, tasks=1, steps=20))
    # The outage was answered as one (503), never as a server bug (500).
    for server in stack.servers:
        text = server.log.read_text()
        for bug in ("database error", "internal_error", "Exception in ASGI"):
            assert bug not in text, text[-3000:]


async def test_tasks_complete_when_redis_stops(stack: Stack) -> None:
    assert stack.redis is not None
    assert all(
        stack.env_of(s)["AM_REDIS_URL"] == stack.redis.url
        for s in stack.plan().values()
        if s.kind == "server"
    )
    async with client(stack) as am:
        task_ids = await submit(am)
        await until_under_way(am, task_ids)
        stack.redis.stop()
        assert not stack.redis.ping()

        await all_complete(am, task_ids)
        # Work submitted with Redis gone: the replicas find it in the database.
        await all_complete(am, await submit(am, tasks=1, steps=20))
        assert all(server.alive for server in stack.servers)
