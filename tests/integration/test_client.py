"""The client library and an in-process ``Worker`` against a live server (both backends).

Workers run with ``burst=True`` (they return once no work is left) and without
signal handlers; handlers signal the test through events, not sleeps.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agent_manager.agents import StepOutcome
from agent_manager.client import (
    AgentManagerClient,
    AuthError,
    InvalidRequest,
    NonRetryable,
    NotFound,
    ServerUnavailable,
    StaleClaim,
    WaitTimeout,
    Worker,
    WorkerConfig,
    WorkerStats,
    run_worker,
)
from agent_manager.client.worker import SHUTTING_DOWN
from agent_manager.schemas import ClaimPublic, ResultCreate, StepPublic, TaskPublic
from tests.server import ADMIN_TOKEN, LiveServer, free_port


@pytest.fixture
async def client(server: LiveServer) -> AsyncIterator[AgentManagerClient]:
    async with AgentManagerClient(server.base_url, ADMIN_TOKEN, timeout=10) as c:
        yield c


def make_worker(client: AgentManagerClient, tmp_path: Path, **kwargs: Any) -> Worker:
    options: dict[str, Any] = {
        "workspace": tmp_path / "ws",
        "poll_wait": 0.5,
        "burst": True,
        "install_signal_handlers": False,
        **kwargs,
    }
    return Worker(client, kwargs.pop("agent_id", "w1"), **options)


def step(task: TaskPublic, step_id: str) -> StepPublic:
    return next(s for s in task.steps if s.id == step_id)


# -- the client --------------------------------------------------------------------


async def test_submit_get_list_wait_and_cancel(client: AgentManagerClient) -> None:
    steps: list[dict[str, Any]] = [
        {"id": "a", "role": "analyst"},
        {"id": "b", "role": "analyst", "depends_on": ["a"]},
    ]
    created = await client.submit("compare designs", steps=steps, idempotency_key="k-1")
    assert created.created
    again = await client.submit("compare designs", steps=steps, idempotency_key="k-1")
    assert again.id == created.id and not again.created

    task = await client.get(created.id)
    assert task.goal == "compare designs" and task.status == "running"
    assert [s.status for s in task.steps] == ["ready", "pending"]
    page = await client.list(status="running", limit=10)
    assert created.id in [t.id for t in page.items]
    assert (await client.list(status=["completed"])).items == []

    with pytest.raises(WaitTimeout):
        await client.wait(created.id, timeout=0.3, poll=0.1)
    cancelled = await client.cancel(created.id)
    assert cancelled.status == "cancelled"
    assert (await client.wait(created.id, timeout=5)).status == "cancelled"


async def test_errors_come_back_as_the_client_exception_tree(
    client: AgentManagerClient, server: LiveServer
) -> None:
    with pytest.raises(NotFound) as missing:
        await client.get("no-such-task")
    assert missing.value.status == 404 and missing.value.code == "not_found"

    with pytest.raises(InvalidRequest) as bad_plan:
        await client.submit("g", steps=[{"id": "a", "role": "x", "depends_on": ["nope"]}])
    assert bad_plan.value.status == 422 and "nope" in bad_plan.value.message

    async with AgentManagerClient(server.base_url, "am_not_a_token") as stranger:
        with pytest.raises(AuthError) as refused:
            await stranger.get("anything")
    assert refused.value.status == 401

    reader = await server.token("read")
    async with AgentManagerClient(server.base_url, reader) as read_only:
        with pytest.raises(AuthError) as forbidden:
            await read_only.claim("w1", ["analyst"])
    assert forbidden.value.status == 403


async def test_claim_heartbeat_report_and_stale_claims(client: AgentManagerClient) -> None:
    task = await client.submit("g", steps=[{"id": "a", "role": "analyst"}])
    assert await client.claim("w1", ["writer"]) == []
    [claim] = await client.claim("w1", ["analyst"], max=5, wait=1)
    assert claim.task_id == task.id and claim.step.id == "a"

    beat = await client.heartbeat(
        task_id=task.id, step_id="a", claim_token=claim.claim_token, agent_id="w1"
    )
    assert not beat.cancelled and beat.lease_expires_at is not None
    with pytest.raises(StaleClaim):
        await client.heartbeat(task_id=task.id, step_id="a", claim_token="forged")

    result = ResultCreate(
        task_id=task.id,
        step_id="a",
        claim_token=claim.claim_token,
        agent_id="w1",
        status="success",
        output={"x": 1},
    )
    first = await client.report(result)
    assert first.outcome == "done"
    assert await client.report(result) == first  # the same report twice: the same answer
    with pytest.raises(StaleClaim) as stale:
        await client.report(result.model_copy(update={"claim_token": "forged"}))
    assert stale.value.status == 409
    assert (await client.wait(task.id, timeout=5)).status == "completed"


async def test_a_connection_failure_moves_to_the_next_url(server: LiveServer) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    async with AgentManagerClient([dead, server.base_url], ADMIN_TOKEN) as client:
        created = await client.submit("g", steps=[{"id": "a", "role": "analyst"}])
        assert client.base_url == server.base_url
        assert (await client.get(created.id)).id == created.id


# -- the worker --------------------------------------------------------------------


async def test_role_handlers_run_the_graph(client: AgentManagerClient, tmp_path: Path) -> None:
    task = await client.submit(
        "a report",
        steps=[
            {"id": "facts", "role": "researcher", "instruction": "find facts"},
            {"id": "text", "role": "writer", "instruction": "write", "depends_on": ["facts"]},
        ],
    )
    worker = make_worker(client, tmp_path)
    seen: dict[str, Any] = {}

    @worker.role("researcher")
    async def research(claim: ClaimPublic) -> Any:
        return {"facts": [claim.step.instruction]}

    @worker.role("writer")
    async def write(claim: ClaimPublic) -> StepOutcome:
        seen["dependencies"] = claim.context.dependencies
        return StepOutcome(status="success", output="the text")

    await asyncio.wait_for(worker.run(), 30)
    done = await client.get(task.id)
    assert done.status == "completed"
    assert seen["dependencies"] == {"facts": {"facts": ["find facts"]}}
    assert step(done, "text").result is not None
    assert step(done, "text").result.output == "the text"  # type: ignore[union-attr]
    assert (worker.stats.claimed, worker.stats.succeeded) == (2, 2)


async def test_an_exception_is_a_retryable_failure(
    client: AgentManagerClient, tmp_path: Path
) -> None:
    task = await client.submit(
        "g", steps=[{"id": "a", "role": "analyst"}], options={"max_attempts": 3}
    )
    worker = make_worker(client, tmp_path)
    attempts: list[int] = []

    @worker.role("analyst")
    async def flaky(claim: ClaimPublic) -> str:
        attempts.append(claim.step.attempt)
        if len(attempts) == 1:
            raise RuntimeError("the first try breaks")
        return "fine"

    await asyncio.wait_for(worker.run(), 30)
    done = await client.get(task.id, history=True)
    assert done.status == "completed" and attempts == [1, 2]
    first, second = step(done, "a").attempts
    assert first.status == "failure" and first.retryable
    assert first.error == "RuntimeError: the first try breaks"
    assert second.status == "success" and second.output == "fine"


async def test_non_retryable_fails_the_step_at_once(
    client: AgentManagerClient, tmp_path: Path
) -> None:
    task = await client.submit(
        "g", steps=[{"id": "a", "role": "analyst"}], options={"max_attempts": 5}
    )
    worker = make_worker(client, tmp_path)
    calls = 0

    @worker.role("analyst")
    async def refuse(claim: ClaimPublic) -> str:
        nonlocal calls
        calls += 1
        raise NonRetryable("the input is unusable")

    await asyncio.wait_for(worker.run(), 30)
    done = await client.get(task.id, history=True)
    assert done.status == "failed" and calls == 1
    [only] = step(done, "a").attempts
    assert not only.retryable and only.error == "NonRetryable: the input is unusable"


async def test_heartbeats_keep_a_short_lease_alive(
    client: AgentManagerClient, tmp_path: Path
) -> None:
    task = await client.submit(
        "g", steps=[{"id": "slow", "role": "analyst"}], options={"lease_seconds": 1}
    )
    worker = make_worker(client, tmp_path)
    runs: list[int] = []

    @worker.role("analyst")
    async def slow(claim: ClaimPublic) -> str:
        runs.append(claim.step.attempt)
        await asyncio.sleep(3)  # the work itself: three leases long
        return "done slowly"

    await asyncio.wait_for(worker.run(), 30)
    done = await client.get(task.id, history=True)
    assert done.status == "completed" and runs == [1]
    [only] = step(done, "slow").attempts
    assert only.attempt == 1 and only.output == "done slowly"


async def test_cancelling_the_task_cancels_the_running_handler(
    client: AgentManagerClient, tmp_path: Path
) -> None:
    task = await client.submit(
        "g", steps=[{"id": "long", "role": "analyst"}], options={"lease_seconds": 1}
    )
    worker = make_worker(client, tmp_path)
    started, cancelled = asyncio.Event(), asyncio.Event()

    @worker.role("analyst")
    async def forever(claim: ClaimPublic) -> str:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    running = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), 10)
    await client.cancel(task.id)
    await asyncio.wait_for(cancelled.wait(), 10)  # within a heartbeat (lease / 3)
    await asyncio.wait_for(running, 30)
    assert worker.stats.dropped == 1 and worker.stats.succeeded == worker.stats.failed == 0
    done = await client.get(task.id, history=True)
    assert done.status == "cancelled" and step(done, "long").attempts == []


async def test_four_steps_run_at_once_with_concurrency_four(
    client: AgentManagerClient, tmp_path: Path
) -> None:
    task = await client.submit("g", steps=[{"id": f"s{i}", "role": "analyst"} for i in range(4)])
    worker = make_worker(client, tmp_path, concurrency=4)
    all_in = asyncio.Barrier(4)
    spans: dict[str, tuple[float, float]] = {}

    @worker.role("analyst")
    async def together(claim: ClaimPublic) -> str:
        began = time.monotonic()
        async with asyncio.timeout(10):  # fewer than four at once would hang here
            await all_in.wait()
        spans[claim.step.id] = (began, time.monotonic())
        return "ok"

    await asyncio.wait_for(worker.run(), 30)
    assert (await client.get(task.id)).status == "completed"
    assert len(spans) == 4
    assert max(b for b, _ in spans.values()) < min(e for _, e in spans.values())  # overlap


async def stop_a_worker_mid_step(
    client: AgentManagerClient, tmp_path: Path
) -> tuple[TaskPublic, WorkerStats]:
    """A worker whose step never ends is stopped; its grace period is short."""
    task = await client.submit("g", steps=[{"id": "a", "role": "analyst"}])
    worker = make_worker(client, tmp_path, burst=False, grace_seconds=0.3)
    started = asyncio.Event()

    @worker.role("analyst")
    async def stuck(claim: ClaimPublic) -> str:
        started.set()
        await asyncio.Event().wait()
        return "never"

    running = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), 10)
    worker.stop()
    await asyncio.wait_for(running, 10)
    return await client.get(task.id, history=True), worker.stats


async def test_stop_waits_for_the_grace_period_then_hands_the_step_back(
    client: AgentManagerClient, tmp_path: Path
) -> None:
    done, stats = await stop_a_worker_mid_step(client, tmp_path)
    assert step(done, "a").attempts == []  # nothing reported: the attempt is not spent
    assert (step(done, "a").status, step(done, "a").attempt) == ("ready", 1)
    assert (stats.released, stats.failed) == (1, 0)
    events = [e.type for e in await client.events(done.id) if e.step_id == "a"]
    assert events[-2:] == ["step.claimed", "step.released"]


async def test_a_step_that_cannot_be_handed_back_is_reported_as_a_retry(
    client: AgentManagerClient, tmp_path: Path
) -> None:
    async def refuse(**_: Any) -> bool:
        raise ServerUnavailable("the server is going away")

    client.release = refuse  # type: ignore[method-assign]
    done, stats = await stop_a_worker_mid_step(client, tmp_path)
    [only] = step(done, "a").attempts
    assert only.status == "failure" and only.retryable and only.error == SHUTTING_DOWN
    assert step(done, "a").status == "ready"
    assert (stats.released, stats.failed) == (0, 1)


async def test_run_worker_serves_roles_with_the_built_in_agent(
    client: AgentManagerClient, server: LiveServer, tmp_path: Path
) -> None:
    token = await server.token("work", roles=["analyst"])
    task = await client.submit(
        "list three queueing designs",
        steps=[{"id": "a", "role": "analyst", "instruction": "List three designs"}],
    )
    config = WorkerConfig(
        server_url=[server.base_url],
        auth_token=token,  # type: ignore[arg-type]
        client_id="agent-1",
        polling_interval_sec=0.5,
        workspace=tmp_path / "ws",
        llm={"provider": "scripted"},  # type: ignore[arg-type]
    )
    stats = await asyncio.wait_for(
        run_worker(config, burst=True, install_signal_handlers=False), 30
    )
    done = await client.get(task.id, history=True)
    assert done.status == "completed" and stats.succeeded == 1
    [only] = step(done, "a").attempts
    assert only.agent_id == "agent-1" and only.ra_history  # the RA loop's history came back


async def test_a_refused_token_stops_the_worker_with_the_error(
    server: LiveServer, tmp_path: Path
) -> None:
    async with AgentManagerClient(server.base_url, "am_revoked_or_wrong") as stranger:
        worker = make_worker(stranger, tmp_path, burst=False)
        worker.role("analyst")(lambda claim: "never")
        with pytest.raises(AuthError) as refused:
            await asyncio.wait_for(worker.run(), 10)
    assert refused.value.status == 401


async def test_run_worker_s_built_in_agent_locks_undeclared_paths_on_the_server(
    client: AgentManagerClient, server: LiveServer, tmp_path: Path
) -> None:
    scenario = tmp_path / "scenario.json"
    scenario.write_text(
        json.dumps(
            {
                "rules": [
                    {
                        "role": "analyst",
                        "iteration": 0,
                        "response": {
                            "thought": "keep notes",
                            "action": "write_file",
                            "action_input": {"path": "found.txt", "content": "notes"},
                        },
                    }
                ]
            }
        )
    )
    task = await client.submit(
        "take notes", steps=[{"id": "a", "role": "analyst", "instruction": "Take notes"}]
    )
    config = WorkerConfig(
        server_url=[server.base_url],
        auth_token=ADMIN_TOKEN,  # type: ignore[arg-type]
        client_id="agent-1",
        roles=["analyst"],
        polling_interval_sec=0.5,
        workspace=tmp_path / "ws",
        llm={"provider": "scripted", "scenario": str(scenario)},  # type: ignore[arg-type]
    )
    await asyncio.wait_for(run_worker(config, burst=True, install_signal_handlers=False), 30)
    done = await client.get(task.id, history=True)
    [only] = step(done, "a").attempts
    assert "error" not in (only.ra_history[0].observation or "").lower(), only.ra_history[0]
    assert (tmp_path / "ws" / "found.txt").read_text() == "notes"
    granted = [e for e in await client.events(task.id) if e.type == "lock.granted"]
    assert [(e.step_id, e.data["path"]) for e in granted] == [("a", "found.txt")]
