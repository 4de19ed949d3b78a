"""Benchmark: cross-replica hand-off — a step made ready on replica A, handed to a
client long-polling replica B.

Starts two ``am serve`` processes on one fresh PostgreSQL database, once with Redis
(AM_REDIS_URL, a channel of its own) and once without (wake-ups then come from B's
database re-check, every AM_RECHECK_INTERVAL seconds). Each round: a client claims
step ``first`` on A; another client long-polls B for step ``second``, which depends on
it; the first client reports ``first`` done on A. Measured as in claim_throughput.py:
from A's acceptance of the report to the moment B's client holds the claim.

    python bench/cross_replica_handoff.py --rounds 300
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.claim_throughput import TOKEN, handoff, percentile, wait_ready
from tests.databases import postgres_database
from tests.server import free_port

REDIS_URL = "redis://127.0.0.1:6379/0"


async def measure(rounds: int, redis_url: str | None, recheck: float) -> list[float]:
    async with postgres_database() as db_url:
        ports = [free_port(), free_port()]
        env = {
            **os.environ,
            "AM_DATABASE_URL": db_url,
            "AM_ADMIN_TOKEN": TOKEN,
            "AM_AUTO_MIGRATE": "true",
            "AM_LOG_LEVEL": "warning",
            "AM_EMBEDDED_AGENTS": "false",
            "AM_RECHECK_INTERVAL": str(recheck),
        }
        if redis_url:
            env |= {"AM_REDIS_URL": redis_url, "AM_REDIS_CHANNEL": f"bench:{uuid.uuid4().hex}"}
        with tempfile.TemporaryDirectory() as tmp:
            procs = [
                subprocess.Popen(  # noqa: ASYNC220 - started before any timing
                    [sys.executable, "-m", "agent_manager", "serve"],
                    env={**env, "AM_PORT": str(port)},
                    cwd=tmp,
                )
                for port in ports
            ]
            try:
                a, b = (f"http://127.0.0.1:{port}" for port in ports)
                for url, proc in zip((a, b), procs, strict=True):
                    await wait_ready(url, proc)
                await asyncio.sleep(0.5)  # both subscribed to Redis
                return await handoff(a, rounds, waiter_url=b)
            finally:
                for proc in procs:
                    proc.terminate()
                for proc in procs:
                    proc.wait(30)


def line(name: str, xs: list[float]) -> str:
    return (
        f"{name:<28} p50 {statistics.median(xs):7.2f} ms  p95 {percentile(xs, 95):7.2f} ms"
        f"  p99 {percentile(xs, 99):7.2f} ms  ({len(xs)} rounds)"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=300)
    parser.add_argument("--redis-url", default=REDIS_URL)
    parser.add_argument(
        "--recheck", type=float, default=0.5, help="AM_RECHECK_INTERVAL of the replicas"
    )
    args = parser.parse_args()
    with_redis = await measure(args.rounds, args.redis_url, args.recheck)
    without = await measure(max(20, args.rounds // 5), None, args.recheck)
    print("cross-replica hand-off (report accepted on A -> claim in hand on B)")
    print(line("with Redis", with_redis))
    print(line(f"without Redis (re-check {args.recheck:g} s)", without))


if __name__ == "__main__":
    asyncio.run(main())
