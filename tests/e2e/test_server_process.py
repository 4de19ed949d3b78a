"""The server as a real process: restarts lose nothing, two processes share one database."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from pathlib import Path

from tests.helpers import claim, flat_plan, get_task, report, submit
from tests.processes import ServerProcess


async def test_restart_while_steps_are_claimed_loses_nothing(db_url: str, tmp_path: Path) -> None:
    server = ServerProcess(db_url, tmp_path, AM_LEASE_SECONDS=5).start()
    try:
        async with server.client() as client:
            task_ids = [
                await submit(
                    client,
                    {
                        "goal": "restart",
                        "steps": [
                            {"id": "a", "role": "w"},
                            {"id": "b", "role": "w"},
                            {"id": "c", "role": "w", "depends_on": ["a", "b"]},
                        ],
                    },
                )
                for _ in range(3)
            ]
            held = [await claim(client, "w", agent="before") for _ in range(4)]
        assert all(held)
        # Graceful (uvicorn re-raises the signal once it has shut down cleanly).
        assert server.stop(signal.SIGTERM, timeout=15) in (0, -signal.SIGTERM)
        server.start()
        async with server.client() as client:
            # Claims made before the restart are still valid: two report now...
            for c in held[:2]:
                assert (await report(client, c, output="kept")).status_code == 200
            # ...the other two were abandoned; their leases lapse and they come back.
            finished = 2
            while finished < 9:
                c = await claim(client, "w", agent="after", wait=8)
                assert c is not None, f"only {finished} of 9 steps came back"
                assert (await report(client, c)).status_code == 200
                finished += 1
            assert await claim(client, "w") is None
            for task_id in task_ids:
                assert (await get_task(client, task_id))["status"] == "completed"
    finally:
        server.kill()


async def test_a_killed_server_comes_back_with_everything(db_url: str, tmp_path: Path) -> None:
    server = ServerProcess(db_url, tmp_path).start()
    try:
        async with server.client() as client:
            task_id = await submit(client, flat_plan(5))
            c = await claim(client)
        server.kill()  # SIGKILL: no shutdown code runs
        server.start()
        async with server.client() as client:
            assert (await report(client, c)).status_code == 200
            while (c := await claim(client)) is not None:
                await report(client, c)
            assert (await get_task(client, task_id))["status"] == "completed"
    finally:
        server.kill()


async def test_two_server_processes_never_hand_out_a_step_twice(
    db_url: str, tmp_path: Path
) -> None:
    first = ServerProcess(db_url, tmp_path / "a").start()
    second = ServerProcess(db_url, tmp_path / "b").start()
    try:
        async with first.client() as client:
            task_id = await submit(client, flat_plan(300))
        seen: list[str] = []

        async def claimer(server: ServerProcess, n: int) -> None:
            async with server.client() as client:
                while (c := await claim(client, agent=f"w{n}")) is not None:
                    seen.append(c["step"]["id"])
                    assert (await report(client, c)).status_code == 200

        await asyncio.gather(*(claimer(s, n) for n, s in enumerate([first, second] * 4)))
        counts = Counter(seen)
        assert len(counts) == 300 and set(counts.values()) == {1}
        async with second.client() as client:
            task = await get_task(client, task_id)
        assert task["status"] == "completed"
    finally:
        first.kill()
        second.kill()


async def test_sigterm_ends_long_polls_promptly(db_url: str, tmp_path: Path) -> None:
    server = ServerProcess(db_url, tmp_path).start()
    async with server.client() as client:
        waiting = asyncio.create_task(claim(client, "nobody", wait=60))
        await asyncio.sleep(0.5)
        start = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        assert await waiting is None  # a 204, not a dropped connection
        await asyncio.to_thread(server.proc.wait, 20)  # type: ignore[union-attr]
    assert time.monotonic() - start < 10


async def test_two_server_processes_never_grant_conflicting_locks(
    db_url: str, tmp_path: Path
) -> None:
    first = ServerProcess(db_url, tmp_path / "a").start()
    second = ServerProcess(db_url, tmp_path / "b").start()
    try:
        plan = {
            "goal": "contention",
            "steps": [
                {"id": f"w{i}", "role": "w", "files": [{"path": "shared.txt", "mode": "write"}]}
                for i in range(8)
            ],
        }
        async with first.client() as client:
            task_id = await submit(client, plan)

        async def grab(server: ServerProcess, n: int) -> list[dict]:
            async with server.client() as client:
                r = await client.post(
                    "/v1/claims", json={"agent_id": f"c{n}", "roles": ["w"], "max": 2}
                )
                return [] if r.status_code == 204 else r.json()["claims"]

        finished = 0
        while finished < 8:
            rounds = await asyncio.gather(*(grab(s, n) for n, s in enumerate([first, second] * 4)))
            winners = [c for got in rounds for c in got]
            assert len(winners) <= 1, [c["step"]["id"] for c in winners]  # one writer at a time
            for c in winners:
                async with first.client() as client:
                    assert (await report(client, c)).status_code == 200
                finished += 1
        async with second.client() as client:
            assert (await get_task(client, task_id))["status"] == "completed"
    finally:
        first.kill()
        second.kill()
