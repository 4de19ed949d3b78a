"""``am worker`` processes against an ``am serve`` process on PostgreSQL.

Workers run the no-op/sleep handler of :mod:`tests.e2e.handlers`, which logs every
start and finish to a file per process; the tests read those logs and the server's
view of each task. Synchronisation is by polling logs and task states, never by sleeping.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent_manager.client import AgentManagerClient, StaleClaim
from agent_manager.schemas import ResultCreate, TaskPublic
from tests.databases import postgres_database
from tests.processes import ServerProcess
from tests.server import ADMIN_TOKEN

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[2]
HANDLER = "tests.e2e.handlers:run"


class WorkerProcess:
    """One ``am worker`` process with its handler log (stdout/stderr in ``<name>.err``)."""

    def __init__(self, name: str, config: Path, workdir: Path, *flags: str) -> None:
        self.name = name
        self.steps_log = workdir / f"{name}.steps"
        self.err_log = workdir / f"{name}.err"
        self.steps_log.touch()
        env = {
            **os.environ,
            "AM_TEST_HANDLER_LOG": str(self.steps_log),
            "PYTHONPATH": str(ROOT),
        }
        with self.err_log.open("ab") as err:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "agent_manager",
                    "worker",
                    "--config",
                    str(config),
                    "--client-id",
                    name,
                    *flags,
                ],
                env=env,
                cwd=workdir,
                stdout=err,
                stderr=subprocess.STDOUT,
            )

    def events(self) -> list[list[str]]:
        text = self.steps_log.read_text()
        return [line.split() for line in text.splitlines(keepends=True) if line.endswith("\n")]

    def started(self, step_id: str) -> list[list[str]]:
        return [e for e in self.events() if e[0] == "start" and e[2] == step_id]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def output(self) -> str:
        return self.err_log.read_text()


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    async with postgres_database() as url:
        yield url


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(name: str, server_url: str, *flags: str, **settings: Any) -> WorkerProcess:
        config = tmp_path / f"{name}.json"
        config.write_text(
            json.dumps(
                {
                    "server_url": server_url,
                    "auth_token": ADMIN_TOKEN,
                    "polling_interval_sec": 5,
                    "roles": ["noop"],
                    "workspace": str(tmp_path / "workspace"),
                    "handler": HANDLER,
                    **settings,
                }
            )
        )
        worker = WorkerProcess(name, config, tmp_path, *flags)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        if worker.proc.poll() is None:
            worker.proc.kill()
            worker.proc.wait()


def stop_all(crew: list[WorkerProcess], timeout: float = 30) -> list[int]:
    """SIGTERM every worker at once, then collect their exit codes."""
    for worker in crew:
        worker.proc.send_signal(signal.SIGTERM)
    return [worker.proc.wait(timeout) for worker in crew]


async def until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll ``check`` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def submit_noops(
    client: AgentManagerClient, tasks: int, steps: int, **options: Any
) -> list[str]:
    ids = []
    for t in range(tasks):
        plan = [{"id": f"s{i}", "role": "noop", "instruction": "noop"} for i in range(steps)]
        ids.append((await client.submit(f"no-ops {t}", steps=plan, options=options)).id)
    return ids


def accepted_once(task: TaskPublic) -> None:
    """Every step done, with exactly one successful result on the server."""
    for step in task.steps:
        assert step.status == "done", (step.id, step.status)
        successes = [r for r in step.attempts if r.status == "success"]
        assert len(successes) == 1, (step.id, step.attempts)


async def test_eight_workers_run_a_thousand_steps_exactly_once(
    pg_url: str, tmp_path: Path, workers: Callable[..., WorkerProcess]
) -> None:
    with ServerProcess(pg_url, tmp_path / "server") as server:
        async with AgentManagerClient(server.url, ADMIN_TOKEN) as client:
            task_ids = await submit_noops(client, tasks=10, steps=100)
            crew = [workers(f"w{n}", server.url, "--concurrency", "4") for n in range(8)]
            for task_id in task_ids:
                assert (await client.wait(task_id, timeout=90, poll=0.2)).status == "completed"
            assert stop_all(crew) == [0] * 8

            starts = Counter((e[1], e[2]) for w in crew for e in w.events() if e[0] == "start")
            dones = Counter((e[1], e[2]) for w in crew for e in w.events() if e[0] == "done")
            expected = {(t, f"s{i}") for t in task_ids for i in range(100)}
            assert set(starts) == set(dones) == expected
            assert max(starts.values()) == max(dones.values()) == 1  # executed exactly once
            for task_id in task_ids:
                task = await client.get(task_id, history=True)
                accepted_once(task)
                assert all(len(s.attempts) == 1 for s in task.steps)
            assert sum(1 for w in crew if w.events()) > 1  # the work was shared


async def test_a_killed_worker_s_step_goes_to_another_after_the_lease(
    pg_url: str, tmp_path: Path, workers: Callable[..., WorkerProcess]
) -> None:
    with ServerProcess(pg_url, tmp_path / "server") as server:
        async with AgentManagerClient(server.url, ADMIN_TOKEN) as client:
            created = await client.submit(
                "survive a crash",
                steps=[{"id": "slow", "role": "noop", "instruction": "sleep 3"}],
                options={"lease_seconds": 2},
            )
            crew = [workers(name, server.url) for name in ("wa", "wb")]
            first = await until(
                lambda: next((w for w in crew if w.started("slow")), None), 30, "a start"
            )
            [[_, _, _, attempt, dead_token]] = first.started("slow")
            assert attempt == "1"
            first.stop(signal.SIGKILL)

            done = await client.wait(created.id, timeout=30, poll=0.2)
            assert done.status == "completed"
            [other] = [w for w in crew if w is not first]
            assert [e[3] for e in other.started("slow")] == ["2"]
            task = await client.get(created.id, history=True)
            accepted_once(task)
            assert task.steps[0].result is not None and task.steps[0].result.agent_id == other.name

            late = ResultCreate(
                task_id=created.id,
                step_id="slow",
                claim_token=dead_token,
                agent_id=first.name,
                status="success",
                output="too late",
            )
            with pytest.raises(StaleClaim) as refused:
                await client.report(late)
            assert refused.value.status == 409
            assert other.stop() == 0


async def test_workers_ride_out_a_server_restart(
    pg_url: str, tmp_path: Path, workers: Callable[..., WorkerProcess]
) -> None:
    server = ServerProcess(pg_url, tmp_path / "server").start()
    try:
        async with AgentManagerClient(server.url, ADMIN_TOKEN) as client:
            task_ids = await submit_noops(client, tasks=4, steps=100, lease_seconds=5)
            crew = [workers(f"w{n}", server.url, "--concurrency", "4") for n in range(4)]
            # Kill the server once the work is well under way.
            await until(
                lambda: sum(len(w.events()) for w in crew) > 200, 60, "a fifth of the steps"
            )
            server.kill()
            await asyncio.sleep(1)  # the outage itself: workers find no server for a while
            server.start()
            for task_id in task_ids:
                assert (await client.wait(task_id, timeout=60, poll=0.2)).status == "completed"
            assert all(w.proc.poll() is None for w in crew)  # nobody had to restart them
            assert stop_all(crew) == [0] * 4
            for task_id in task_ids:
                accepted_once(await client.get(task_id, history=True))
            ran = {(e[1], e[2]) for w in crew for e in w.events() if e[0] == "done"}
            assert ran == {(t, f"s{i}") for t in task_ids for i in range(100)}
            assert any("reachable again" in w.output() for w in crew)
    finally:
        server.kill()


async def test_sigterm_finishes_the_step_within_the_grace_period_or_hands_it_back(
    pg_url: str, tmp_path: Path, workers: Callable[..., WorkerProcess]
) -> None:
    with ServerProcess(pg_url, tmp_path / "server") as server:
        async with AgentManagerClient(server.url, ADMIN_TOKEN) as client:
            quick = await client.submit(
                "finishes", steps=[{"id": "q", "role": "quick", "instruction": "sleep 1.5"}]
            )
            slow = await client.submit(
                "outlasts the grace", steps=[{"id": "s", "role": "slow", "instruction": "sleep 60"}]
            )
            patient = workers("patient", server.url, "--role", "quick", "--grace-seconds", "20")
            hasty = workers("hasty", server.url, "--role", "slow", "--grace-seconds", "0.5")
            await until(lambda: patient.started("q") and hasty.started("s"), 30, "both steps")
            stopped_at = time.monotonic()
            patient.proc.send_signal(signal.SIGTERM)
            hasty.proc.send_signal(signal.SIGTERM)
            assert hasty.proc.wait(timeout=15) == 0
            assert patient.proc.wait(timeout=25) == 0
            assert time.monotonic() - stopped_at < 15

            finished = await client.get(quick.id, history=True)
            assert finished.status == "completed"
            [result] = finished.steps[0].attempts
            assert result.status == "success" and result.agent_id == "patient"

            handed_back = (await client.get(slow.id, history=True)).steps[0]
            assert handed_back.attempts == []  # released, not failed: no attempt spent
            assert handed_back.status == "ready" and handed_back.attempt == 1
            assert [e[0] for e in hasty.events()] == ["start"]

            log = patient.output()
            assert f"step {quick.id}/q started" in log and f"step {quick.id}/q finished" in log
            assert "Traceback" not in log + hasty.output()
            await client.cancel(slow.id)
