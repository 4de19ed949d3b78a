"""Benchmark: N no-op steps claimed and reported over HTTP by K concurrent clients.

Starts ``am serve`` as a separate process on a fresh PostgreSQL database (or SQLite
with --sqlite), submits the steps as a few flat tasks, then K clients loop
claim → report until nothing is left. Prints steps/s and claim / report latency
percentiles, and the hand-off latency: how long a client already long-polling waits
after the result that made its step ready was accepted.

    python bench/claim_throughput.py --steps 5000 --clients 8
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.databases import postgres_database
from tests.server import free_port

TOKEN = "am_bench_admin_token_0123456789"


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


async def wait_ready(url: str, proc: subprocess.Popen[bytes]) -> None:
    async with httpx.AsyncClient() as client:
        for _ in range(300):
            if proc.poll() is not None:
                raise SystemExit("server exited during start-up")
            try:
                if (await client.get(url + "/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit("server did not become ready")


async def run_clients(
    url: str, clients: int, batch: int
) -> tuple[int, float, list[float], list[float]]:
    """K clients claim and report until nothing is left. With ``batch`` > 1 they use
    ``POST /v1/claims`` (max=batch) and ``POST /v1/results/batch``."""
    claim_ms: list[float] = []
    report_ms: list[float] = []
    done = 0

    def result(c: dict) -> dict:
        return {
            "task_id": c["task_id"],
            "step_id": c["step"]["id"],
            "claim_token": c["claim_token"],
            "status": "success",
            "output": None,
        }

    async def worker(n: int) -> None:
        nonlocal done
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as client:
            while True:
                t0 = time.perf_counter()
                if batch > 1:
                    r = await client.post(
                        "/v1/claims", json={"agent_id": f"b{n}", "roles": ["noop"], "max": batch}
                    )
                else:
                    r = await client.get(
                        "/v1/tasks/ready", params={"agent_id": f"b{n}", "role": "noop"}
                    )
                t1 = time.perf_counter()
                if r.status_code == 204:
                    return
                assert r.status_code == 200, r.text
                claim_ms.append((t1 - t0) * 1000)
                if batch > 1:
                    claims = r.json()["claims"]
                    r = await client.post(
                        "/v1/results/batch", json={"results": [result(c) for c in claims]}
                    )
                    assert all("outcome" in a for a in r.json()["results"]), r.text
                    done += len(claims)
                else:
                    r = await client.post("/v1/results", json=result(r.json()))
                    assert r.status_code == 200, r.text
                    done += 1
                report_ms.append((time.perf_counter() - t1) * 1000)

    start = time.perf_counter()
    await asyncio.gather(*(worker(n) for n in range(clients)))
    return done, time.perf_counter() - start, claim_ms, report_ms


async def handoff(url: str, rounds: int, waiter_url: str | None = None) -> list[float]:
    """A waiter long-polls role 'next' (on ``waiter_url``, by default the same server);
    the reporter finishes the step it depends on.

    Measured from the server's clock when it took the report (the ``step.done``
    event's time, stamped before the commit, so this errs long) to the moment the
    waiting client has the claim in hand; both clocks are this machine's.
    """
    headers = {"Authorization": f"Bearer {TOKEN}"}
    samples = []
    async with (
        httpx.AsyncClient(base_url=url, headers=headers, timeout=60) as a,
        httpx.AsyncClient(base_url=waiter_url or url, headers=headers, timeout=60) as b,
    ):
        for _ in range(rounds):
            plan = {
                "goal": "hand-off",
                "steps": [
                    {"id": "first", "role": "first"},
                    {"id": "second", "role": "next", "depends_on": ["first"]},
                ],
            }
            (await a.post("/v1/tasks", json=plan)).raise_for_status()
            c = (await a.get("/v1/tasks/ready", params={"agent_id": "a", "role": "first"})).json()
            waiting = asyncio.create_task(
                b.get("/v1/tasks/ready", params={"agent_id": "b", "role": "next", "wait": 10})
            )
            await asyncio.sleep(0.02)  # let the waiter park
            body = {
                "task_id": c["task_id"],
                "step_id": "first",
                "claim_token": c["claim_token"],
                "status": "success",
            }
            (await a.post("/v1/results", json=body)).raise_for_status()
            got = await waiting
            received = time.time()
            assert got.status_code == 200
            events = (await a.get(f"/v1/tasks/{c['task_id']}/events")).json()
            done = next(e for e in events if e["type"] == "step.done")
            accepted = datetime.fromisoformat(done["created_at"]).timestamp()
            samples.append((received - accepted) * 1000)
            c2 = got.json()
            await b.post(
                "/v1/results",
                json={**body, "step_id": "second", "claim_token": c2["claim_token"]},
            )
    return samples


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--tasks", type=int, default=10)
    parser.add_argument("--sqlite", action="store_true", help="use SQLite instead of PostgreSQL")
    parser.add_argument("--handoff-rounds", type=int, default=200)
    parser.add_argument(
        "--batch", type=int, default=1, help="steps per claim and per report request"
    )
    args = parser.parse_args()

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        if args.sqlite:
            db_cm = None
            db_url = f"sqlite+aiosqlite:///{tmp}/bench.db"
        else:
            db_cm = postgres_database()
            db_url = await db_cm.__aenter__()
        env = {
            **os.environ,
            "AM_DATABASE_URL": db_url,
            "AM_ADMIN_TOKEN": TOKEN,
            "AM_AUTO_MIGRATE": "true",
            "AM_PORT": str(port),
            "AM_LOG_LEVEL": "warning",
            "AM_DB_POOL_SIZE": "10",
            "AM_EMBEDDED_AGENTS": "false",
        }
        proc = subprocess.Popen(  # noqa: ASYNC220 - started once, before any timing
            [sys.executable, "-m", "agent_manager", "serve"], env=env, cwd=tmp
        )
        try:
            await wait_ready(url, proc)
            headers = {"Authorization": f"Bearer {TOKEN}"}
            async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120) as client:
                per_task = args.steps // args.tasks
                for t in range(args.tasks):
                    steps = [{"id": f"s{i}", "role": "noop"} for i in range(per_task)]
                    r = await client.post("/v1/tasks", json={"goal": f"bench {t}", "steps": steps})
                    r.raise_for_status()
            done, seconds, claim_ms, report_ms = await run_clients(url, args.clients, args.batch)
            hand = await handoff(url, args.handoff_rounds)
        finally:
            proc.terminate()
            proc.wait(30)
            if db_cm is not None:
                await db_cm.__aexit__(None, None, None)

    backend = "sqlite" if args.sqlite else "postgresql"
    print(f"backend            {backend}")
    print(
        f"steps              {done} by {args.clients} clients in {seconds:.2f} s"
        f" ({args.batch} per request)"
    )
    print(f"throughput         {done / seconds:,.0f} steps/s (claim + report over HTTP)")
    for name, xs in (("claim", claim_ms), ("report", report_ms)):
        print(
            f"{name:<8} request   p50 {percentile(xs, 50):.2f} ms  p95 {percentile(xs, 95):.2f} ms"
            f"  p99 {percentile(xs, 99):.2f} ms"
        )
    print(
        f"hand-off           median {statistics.median(hand):.2f} ms  "
        f"p95 {percentile(hand, 95):.2f} ms  ({len(hand)} rounds)"
    )


if __name__ == "__main__":
    asyncio.run(main())
