"""``GET /metrics`` after a known run, checked exactly; ``GET /readyz`` up and down."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agent_manager import metrics as metrics_module
from agent_manager.api.routes import health
from agent_manager.metrics import Metrics
from tests.databases import admin_dsn, postgres_database
from tests.helpers import claim, get_task, report, submit
from tests.server import free_port, running_server

Samples = list[tuple[str, dict[str, str], float]]


async def scrape(client: httpx.AsyncClient) -> Samples:
    r = await client.get("/metrics", headers={"Authorization": ""})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return [
        (s.name, dict(s.labels), s.value)
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    ]


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels``."""
    return sum(v for n, ls, v in samples if n == name and labels.items() <= ls.items())


async def wait_for(
    client: httpx.AsyncClient, ready: Callable[[Samples], bool], timeout: float = 30
) -> Samples:
    """Scrape until ``ready`` holds (something counted just after its commit)."""
    for _ in range(int(timeout / 0.1)):
        samples = await scrape(client)
        if ready(samples):
            return samples
        await asyncio.sleep(0.1)
    raise AssertionError("the metrics never got there")


async def test_an_explicit_plan_run_is_counted_exactly(db_url: str, tmp_path: Path) -> None:
    # No embedded agents: every claim and result below is one of ours.
    async with (
        running_server(db_url, tmp_path, embedded_agents=False) as server,
        server.client() as client,
    ):
        assert await claim(client) is None  # nothing yet: an empty claim
        a = await submit(
            client,
            {
                "goal": "three steps",
                "steps": [{"id": f"s{i}", "role": "worker"} for i in range(3)],
                "options": {"max_attempts": 3},
            },
        )
        first = await claim(client, wait=5)
        assert first is not None
        assert (await report(client, first, output="one")).status_code == 200
        failing = await claim(client, wait=5)
        assert failing is not None
        r = await report(client, failing, "failure", error="flaky", retryable=True)
        assert r.json()["outcome"] == "retry_scheduled"
        for _ in range(2):  # the retried step and the third one
            c = await claim(client, wait=5)
            assert c is not None
            assert (await report(client, c, output="ok")).status_code == 200
        assert await claim(client) is None
        # The retried attempt's claim is stale now: a report with it is refused.
        assert (await report(client, failing, output="late")).status_code == 409
        assert (await get_task(client, a))["status"] == "completed"

        # A one-attempt step whose lease lapses: the reaper fails it, and its task.
        b = await submit(
            client,
            {
                "goal": "abandoned",
                "steps": [{"id": "lost", "role": "slow"}],
                "options": {"lease_seconds": 1, "max_attempts": 1},
            },
        )
        assert await claim(client, "slow") is not None
        assert (await client.get("/no/such/page")).status_code == 404
        samples = await wait_for(client, lambda s: value(s, "am_lease_expiries_total") >= 1)
        assert (await get_task(client, b))["status"] == "failed"
        samples = await scrape(client)

    assert value(samples, "am_lease_expiries_total") == 1
    assert value(samples, "am_claims_total", role="worker", outcome="claimed") == 4
    # The first empty claim came before any step had the role: a name workers may
    # make up gets no series of its own.
    assert value(samples, "am_claims_total", role="worker", outcome="empty") == 1
    assert value(samples, "am_claims_total", role="other", outcome="empty") == 1
    assert value(samples, "am_claims_total", role="slow", outcome="claimed") == 1
    assert value(samples, "am_claim_wait_seconds_count", outcome="claimed") == 5
    assert value(samples, "am_claim_wait_seconds_count", outcome="empty") == 2
    assert value(samples, "am_results_total", status="success", outcome="done") == 3
    assert value(samples, "am_results_total", status="failure", outcome="retry_scheduled") == 1
    assert value(samples, "am_results_total", status="success", outcome="rejected") == 1
    assert value(samples, "am_results_total") == 5
    # Steps and tasks as the database has them, zeros included.
    assert value(samples, "am_steps", status="done", role="worker") == 3
    assert value(samples, "am_steps", status="failed", role="slow") == 1
    assert value(samples, "am_steps", status="ready", role="worker") == 0
    assert value(samples, "am_steps") == 4
    assert value(samples, "am_tasks", status="completed") == 1
    assert value(samples, "am_tasks", status="failed") == 1
    assert value(samples, "am_database_up") == 1
    # No audit ran, no LLM was called.
    assert value(samples, "am_audits_total") == value(samples, "am_rework_rounds_total") == 0
    # HTTP latency by route template, never by raw path.
    http = "am_http_request_duration_seconds_count"
    assert value(samples, http, method="GET", route="/v1/tasks/ready", status="200") == 5
    assert value(samples, http, method="GET", route="/v1/tasks/ready", status="204") == 2
    assert value(samples, http, method="POST", route="/v1/results", status="200") == 4
    assert value(samples, http, method="POST", route="/v1/results", status="409") == 1
    assert value(samples, http, method="POST", route="/v1/tasks", status="201") == 2
    assert value(samples, http, method="GET", route="/v1/tasks/{task_id}", status="200") >= 2
    assert value(samples, http, method="GET", route="unmatched", status="404") == 1
    assert value(samples, http, route="/metrics", status="200") >= 1
    labels = {v for _, ls, _ in samples for v in ls.values()}
    assert not any(a in v or b in v for v in labels)
    assert value(samples, "am_build_info") == 1


async def test_the_cycle_counts_audits_rework_and_llm_tokens(db_url: str, tmp_path: Path) -> None:
    settings = {"llm_provider": "scripted", "embedded_work_roles": "analyst,researcher,writer"}
    async with running_server(db_url, tmp_path, **settings) as server, server.client() as client:
        task_id = await submit(client, {"goal": "Compare three queueing designs"})
        for _ in range(600):
            task = await get_task(client, task_id, history="true")
            if task["status"] in ("completed", "failed", "cancelled"):
                break
            await asyncio.sleep(0.1)
        assert task["status"] == "completed", task.get("error")
        attempts = [a for s in task["steps"] for a in s["attempts"]]
        # The runner counts each result once its report returns: wait for the last.
        samples = await wait_for(client, lambda s: value(s, "am_results_total") >= len(attempts))
        calls = len(server.app.state.runner.llm.calls)

    steps = {s["id"]: s for s in task["steps"]}
    reworked = [
        sid
        for sid, s in steps.items()
        if not sid.startswith("_") and any(a["rework_round"] == 1 for a in s["attempts"])
    ]
    assert [a["report"]["passed"] for a in task["audits"]] == [False, True]
    assert value(samples, "am_audits_total", outcome="failed") == 1
    assert value(samples, "am_audits_total", outcome="passed") == 1
    assert value(samples, "am_rework_rounds_total") == 1
    assert value(samples, "am_reworked_steps_total") == len(reworked) >= 1
    assert value(samples, "am_results_total", status="success", outcome="done") == len(attempts)
    assert value(samples, "am_results_total") == len(attempts)
    for role in ("planner", "auditor", "synthesizer", "analyst", "researcher", "writer"):
        runs = sum(len(s["attempts"]) for s in steps.values() if s["role"] == role)
        assert value(samples, "am_claims_total", role=role, outcome="claimed") == runs, role
        assert value(samples, "am_steps", status="done", role=role) == sum(
            1 for s in steps.values() if s["role"] == role
        )
    # The agents' LLM calls: every token the task reports, and one latency per call.
    model = "scripted (not an LLM)"
    usage = task["usage"]
    assert (
        value(samples, "am_llm_tokens_total", model=model, kind="prompt") == usage["prompt_tokens"]
    )
    assert (
        value(samples, "am_llm_tokens_total", model=model, kind="completion")
        == usage["completion_tokens"]
    )
    assert value(samples, "am_llm_call_seconds_count", model=model, outcome="ok") == calls > 0


async def test_event_streams_pass_through_the_timing_unbuffered(
    db_url: str, tmp_path: Path
) -> None:
    async with (
        running_server(db_url, tmp_path, embedded_agents=False) as server,
        server.client() as client,
        server.client() as worker,
    ):
        task_id = await submit(client, {"goal": "g", "steps": [{"id": "a", "role": "worker"}]})
        headers = {"Accept": "text/event-stream"}
        seen = []
        async with client.stream("GET", f"/v1/tasks/{task_id}/events", headers=headers) as r:
            assert r.status_code == 200
            async for line in r.aiter_lines():
                seen.append(line)
                if line == "event: step.ready":
                    # The stream is open and this event already here: the body is not
                    # held back. Finishing the task ends the stream.
                    c = await claim(worker)
                    assert c is not None
                    assert (await report(worker, c)).status_code == 200
        samples = await scrape(client)
    assert "event: task.completed" in seen
    route = "/v1/tasks/{task_id}/events"
    assert value(samples, "am_http_request_duration_seconds_count", route=route, status="200") == 1


async def test_two_apps_in_one_process_count_apart(tmp_path: Path) -> None:
    """A registry per app: a second app neither fails to register nor shares counts."""
    urls = [f"sqlite+aiosqlite:///{tmp_path / n}.db" for n in "ab"]
    async with (
        running_server(urls[0], tmp_path / "a", embedded_agents=False) as one,
        running_server(urls[1], tmp_path / "b", embedded_agents=False) as two,
        one.client() as c1,
        two.client() as c2,
    ):
        assert await claim(c1) is None
        assert await claim(c1) is None
        assert await claim(c2) is None
        s1, s2 = await scrape(c1), await scrape(c2)
    assert value(s1, "am_claims_total", outcome="empty") == 2
    assert value(s2, "am_claims_total", outcome="empty") == 1
    assert Metrics().registry is not Metrics().registry


async def test_metrics_can_require_a_token(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'am.db'}"
    async with running_server(url, tmp_path, metrics_token="scrape-secret") as server:
        async with server.client(token=None) as anonymous:
            r = await anonymous.get("/metrics")
            assert r.status_code == 401 and r.json()["code"] == "unauthorized"
        async with server.client(token="scrape-secret") as scraper:
            assert (await scraper.get("/metrics")).status_code == 200


# -- readiness ------------------------------------------------------------------------


async def test_readyz_answers_503_naming_the_database_when_it_is_gone(
    backend: str, tmp_path: Path
) -> None:
    if backend == "sqlite":
        data = tmp_path / "data"
        data.mkdir()
        url = f"sqlite+aiosqlite:///{data / 'am.db'}"
        async with (
            running_server(url, tmp_path, embedded_agents=False) as server,
            server.client(token=None) as client,
        ):
            r = await client.get("/readyz")
            assert r.status_code == 200 and r.json()["database"] == "sqlite"
            # The database file goes away. An open SQLite connection would go on
            # reading the deleted file: this one is dropped too, so the next one opens
            # an empty file in its place, without our tables. (Holding it meanwhile
            # keeps the lease reaper out.)
            async with server.manager.db.engine.connect() as held:
                shutil.rmtree(data)
                data.mkdir()
                await held.invalidate()
            r = await client.get("/readyz")
        assert r.status_code == 503
        assert r.json()["status"] == "unavailable" and r.json()["failed"] == ["database"]
        assert "no such table" in r.json()["database"]
        return

    async with (
        postgres_database() as url,
        running_server(url, tmp_path, embedded_agents=False) as server,
        server.client(token=None) as client,
    ):
        r = await client.get("/readyz")
        assert r.status_code == 200 and r.json()["database"] == "postgresql"
        conn = await asyncpg.connect(await admin_dsn())
        try:
            await conn.execute(f'DROP DATABASE "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
        finally:
            await conn.close()
        r = await client.get("/readyz")
        assert r.status_code == 503
        # The pooled connection was terminated, and a new one finds no database.
        assert r.json()["failed"] == ["database"] and r.json()["database"] != "postgresql"


async def test_readyz_gives_up_on_a_busy_database_and_recovers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(health, "READY_TIMEOUT", 0.5)
    monkeypatch.setattr(metrics_module, "DATABASE_TIMEOUT", 0.5)
    url = f"sqlite+aiosqlite:///{tmp_path / 'am.db'}"
    async with (
        running_server(url, tmp_path, embedded_agents=False) as server,
        server.client(token=None) as client,
    ):
        # SQLite's one pooled connection, held: the check waits for it in vain.
        async with server.manager.db.engine.connect():
            r = await client.get("/readyz")
            assert r.status_code == 503
            assert r.json()["database"] == "no answer within 0.5s"
            metrics = await client.get("/metrics")
            assert "am_database_up 0.0" in metrics.text
        # The late checks were left to finish, not cancelled: the pool is whole.
        r = await client.get("/readyz")
        assert r.status_code == 200, r.text


REDIS_URL = "redis://127.0.0.1:6379/0"


async def test_readyz_checks_redis_when_one_is_configured(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'am.db'}"
    async with (
        running_server(url, tmp_path, redis_url=REDIS_URL) as server,
        server.client(token=None) as client,
    ):
        r = await client.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "ok", "database": "sqlite", "redis": "ok"}


async def test_readyz_reports_an_unreachable_redis_but_stays_ready(tmp_path: Path) -> None:
    """Redis is optional: without it replicas only hear each other later. Taking every
    replica out of a load balancer for it would turn a slowdown into an outage."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'am.db'}"
    nowhere = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    async with running_server(url, tmp_path, redis_url=nowhere) as server:
        assert server.app.state.bus is not None
        async with server.client(token=None) as client:
            r = await client.get("/readyz")
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    assert body["status"] == "degraded" and body["degraded"] == ["redis"]
    assert body["database"] == "sqlite" and "Error" in body["redis"]
