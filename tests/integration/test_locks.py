"""File locks: granted with the claim by the compatibility matrix, race-free, released
with the step; ad-hoc locks for paths found while running."""

from __future__ import annotations

import asyncio

from tests.helpers import claim, get_task, report, step_of, submit
from tests.server import LiveServer


def step(step_id: str, *files: tuple[str, str], role: str = "w") -> dict:
    return {"id": step_id, "role": role, "files": [{"path": p, "mode": m} for p, m in files]}


async def claim_ids(client, n: int = 1) -> list[str]:  # type: ignore[no-untyped-def]
    r = await client.post("/v1/claims", json={"agent_id": "w", "roles": ["w"], "max": n})
    return [] if r.status_code == 204 else [c["step"]["id"] for c in r.json()["claims"]]


async def test_claims_follow_the_compatibility_matrix(server: LiveServer) -> None:
    plan = {
        "goal": "locks",
        "steps": [
            step("w1", ("f", "write")),
            step("w2", ("f", "write")),  # write beside write: no
            step("r1", ("f", "read")),  # read beside a write: yes
            step("x1", ("g", "exclusive")),
            step("r2", ("g", "read")),  # anything beside exclusive: no
            step("free"),  # no files at all
        ],
    }
    async with server.client() as client:
        task_id = await submit(client, plan)
        got = [c for _ in range(6) if (c := await claim(client, "w")) is not None]
        assert [c["step"]["id"] for c in got] == ["w1", "r1", "x1", "free"]
        task = await get_task(client, task_id)
        held = {s["id"]: [(lk["path"], lk["mode"]) for lk in s["locks"]] for s in task["steps"]}
        assert held == {
            "w1": [("f", "write")],
            "w2": [],
            "r1": [("f", "read")],
            "x1": [("g", "exclusive")],
            "r2": [],
            "free": [],
        }
        assert step_of(task, "w2")["status"] == step_of(task, "r2")["status"] == "ready"
        # Finishing the holders frees the paths for the steps that waited.
        by_id = {c["step"]["id"]: c for c in got}
        assert (await report(client, by_id["w1"])).status_code == 200
        assert await claim_ids(client) == ["w2"]
        assert await claim_ids(client) == []  # r2 still waits for x1
        assert (await report(client, by_id["x1"])).status_code == 200
        assert await claim_ids(client) == ["r2"]
        task = await get_task(client, task_id)
        assert step_of(task, "w1")["locks"] == [] and step_of(task, "x1")["locks"] == []


async def test_concurrent_claimers_never_share_a_write_lock(server: LiveServer) -> None:
    plan = {"goal": "race", "steps": [step(f"s{i}", ("shared.txt", "write")) for i in range(30)]}
    async with server.client() as client:
        await submit(client, plan)

    async def one(n: int) -> list[str]:
        async with server.client() as c:
            r = await c.post("/v1/claims", json={"agent_id": f"w{n}", "roles": ["w"], "max": 3})
            return [] if r.status_code == 204 else [x["step"]["id"] for x in r.json()["claims"]]

    for _ in range(3):
        winners = [s for got in await asyncio.gather(*(one(n) for n in range(20))) for s in got]
        assert len(winners) <= 1, winners
        if winners:
            break


async def test_a_lapsed_lease_releases_its_locks(server: LiveServer) -> None:
    plan = {
        "goal": "expiry",
        "steps": [step("a", ("f", "exclusive")), step("b", ("f", "read"))],
        "options": {"lease_seconds": 1},
    }
    async with server.client() as client:
        await submit(client, plan)
        assert await claim_ids(client) == ["a"]
        assert await claim_ids(client) == []
        c = await claim(client, "w", wait=5)  # handed b once a's lease lapses
        assert c is not None and c["step"]["id"] in ("a", "b")


async def test_cancelling_a_task_releases_its_locks(server: LiveServer) -> None:
    async with server.client() as client:
        first = await submit(client, {"goal": "1", "steps": [step("a", ("f", "write"))]})
        await submit(client, {"goal": "2", "steps": [step("b", ("f", "write"))]})
        assert await claim_ids(client) == ["a"]
        assert await claim_ids(client) == []
        await client.post(f"/v1/tasks/{first}/cancel")
        assert await claim_ids(client) == ["b"]


async def test_ad_hoc_locks(server: LiveServer) -> None:
    async with server.client() as client:
        task_id = await submit(
            client, {"goal": "adhoc", "steps": [step("a", ("held.txt", "write")), step("b")]}
        )
        a, b = await claim(client, "w"), await claim(client, "w")
        assert a and b and (a["step"]["id"], b["step"]["id"]) == ("a", "b")

        def body(c: dict, path: str, mode: str, wait: float = 0) -> dict:
            return {
                "task_id": task_id,
                "step_id": c["step"]["id"],
                "claim_token": c["claim_token"],
                "path": path,
                "mode": mode,
                "wait": wait,
            }

        r = await client.post("/v1/locks", json=body(b, "notes/found.md", "write"))
        assert r.status_code == 201, r.text
        lock = r.json()
        assert (lock["path"], lock["mode"], lock["step_id"]) == ("notes/found.md", "write", "b")
        # A path another step holds incompatibly: refused after the wait, naming the holder.
        loop = asyncio.get_running_loop()
        start = loop.time()
        r = await client.post("/v1/locks", json=body(b, "held.txt", "write", wait=0.5))
        assert r.status_code == 409 and r.json()["code"] == "lock_conflict"
        assert "'a'" in r.json()["message"] and loop.time() - start >= 0.45
        # Reading beside a write is allowed.
        assert (await client.post("/v1/locks", json=body(b, "held.txt", "read"))).status_code == 201
        task = await get_task(client, task_id)
        assert {lk["path"] for lk in step_of(task, "b")["locks"]} >= {"notes/found.md"}
        # Releasing: only with the holder's claim token.
        wrong = await client.delete(f"/v1/locks/{lock['id']}", params={"claim_token": "nope"})
        assert wrong.status_code == 404
        ok = await client.delete(
            f"/v1/locks/{lock['id']}", params={"claim_token": b["claim_token"]}
        )
        assert ok.status_code == 204
        # Bad input: a path out of the workspace; a stale claim.
        r = await client.post("/v1/locks", json=body(b, "../etc/passwd", "read"))
        assert r.status_code == 422 and "escapes" in r.json()["message"]
        assert (await report(client, b)).status_code == 200
        r = await client.post("/v1/locks", json=body(b, "late.txt", "read"))
        assert r.status_code == 409 and r.json()["code"] == "stale_claim"
        task = await get_task(client, task_id)
        assert step_of(task, "b")["locks"] == []  # the step's end released the rest


async def test_a_lock_waiter_gets_the_lock_when_the_holder_finishes(server: LiveServer) -> None:
    async with server.client() as client:
        task_id = await submit(
            client, {"goal": "wait", "steps": [step("a", ("f", "exclusive")), step("b")]}
        )
        a, b = await claim(client, "w"), await claim(client, "w")
        assert a and b
        waiting = asyncio.create_task(
            client.post(
                "/v1/locks",
                json={
                    "task_id": task_id,
                    "step_id": "b",
                    "claim_token": b["claim_token"],
                    "path": "f",
                    "mode": "write",
                    "wait": 10,
                },
            )
        )
        await asyncio.sleep(0.3)
        assert not waiting.done()
        assert (await report(client, a)).status_code == 200
        r = await asyncio.wait_for(waiting, 5)
        assert r.status_code == 201 and r.json()["path"] == "f"


async def test_a_declared_read_is_upgraded_to_a_write_when_nobody_is_in_the_way(
    server: LiveServer,
) -> None:
    async with server.client() as client:
        task_id = await submit(
            client,
            {
                "goal": "upgrade",
                "steps": [step("r", ("shared.txt", "read")), step("other", ("shared.txt", "read"))],
            },
        )
        r, other = await claim(client, "w"), await claim(client, "w")
        assert r and other and (r["step"]["id"], other["step"]["id"]) == ("r", "other")

        def body(c: dict, mode: str) -> dict:
            return {
                "task_id": task_id,
                "step_id": c["step"]["id"],
                "claim_token": c["claim_token"],
                "path": "shared.txt",
                "mode": mode,
                "wait": 0,
            }

        # The declared read covers a read: the same lock comes back.
        same = await client.post("/v1/locks", json=body(r, "read"))
        assert same.status_code == 201 and same.json()["mode"] == "read"
        # A write beside another claim's read is compatible: granted as a second lock.
        up = await client.post("/v1/locks", json=body(r, "write"))
        assert up.status_code == 201, up.text
        assert up.json()["mode"] == "write"
        # Now the other reader may not write: one writer at a time.
        refused = await client.post("/v1/locks", json=body(other, "write"))
        assert refused.status_code == 409 and "'r'" in refused.json()["message"]
        # Releasing the upgrade leaves the declared read in place.
        gone = await client.delete(
            f"/v1/locks/{up.json()['id']}", params={"claim_token": r["claim_token"]}
        )
        assert gone.status_code == 204
        modes = [lk["mode"] for lk in step_of(await get_task(client, task_id), "r")["locks"]]
        assert modes == ["read"]
        assert (await client.post("/v1/locks", json=body(other, "write"))).status_code == 201
