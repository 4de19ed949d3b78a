"""GET /v1/tasks/{id}/events as server-sent events: complete, in order, resumable."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from tests.helpers import claim, flat_plan, get_task, report, submit
from tests.server import LiveServer

SSE = {"Accept": "text/event-stream"}
NO_FILLER = {"audit": False, "synthesize": False}


async def read_stream(
    client: httpx.AsyncClient,
    task_id: str,
    *,
    headers: dict[str, str] | None = None,
    stop_after: int | None = None,
) -> list[dict[str, Any]]:
    """Messages of one stream until it ends (or ``stop_after`` events: then hang up)."""
    messages: list[dict[str, Any]] = []
    async with client.stream(
        "GET", f"/v1/tasks/{task_id}/events", headers={**SSE, **(headers or {})}
    ) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        fields: dict[str, str] = {}
        async for line in response.aiter_lines():
            if line == "":
                if "data" in fields:
                    messages.append(
                        {
                            "id": int(fields["id"]),
                            "event": fields["event"],
                            **json.loads(fields["data"]),
                        }
                    )
                    if stop_after is not None and len(messages) >= stop_after:
                        break
                fields = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
    return messages


async def all_events(client: httpx.AsyncClient, task_id: str) -> list[dict[str, Any]]:
    r = await client.get(f"/v1/tasks/{task_id}/events", params={"limit": 10_000})
    assert r.status_code == 200, r.text
    return list(r.json())


async def work_until_done(client: httpx.AsyncClient, task_id: str, agent: str) -> None:
    """Claim and report steps of the task until none is left for this worker."""
    while True:
        c = await claim(client, agent=agent, wait=0.5)
        if c is None:
            if (await get_task(client, task_id))["status"] != "running":
                return
            continue
        r = await report(client, c, output={"by": agent})
        assert r.status_code in (200, 201), r.text


async def test_stream_carries_every_transition_in_order(server: LiveServer) -> None:
    async with server.client() as client:
        task_id = await submit(client, flat_plan(6, **NO_FILLER))
        streamed = asyncio.create_task(read_stream(client, task_id))
        # A step that fails once and is retried adds more kinds of transition.
        c = await claim(client)
        assert c is not None
        r = await report(client, c, "failure", error="flaky", retryable=True)
        assert r.status_code in (200, 201), r.text
        await work_until_done(client, task_id, "w1")
        messages = await asyncio.wait_for(streamed, 30)
        stored = await all_events(client, task_id)

    assert [m["id"] for m in messages] == [e["id"] for e in stored]
    assert [m["event"] for m in messages] == [e["type"] for e in stored]
    assert messages == [{"event": e["type"], **e} for e in stored]
    types = {m["event"] for m in messages}
    assert {"step.claimed", "step.done"} <= types
    assert messages[-1]["event"] == "task.completed", messages[-1]


async def test_reconnect_with_last_event_id_loses_and_repeats_nothing(server: LiveServer) -> None:
    async with server.client() as client:
        task_id = await submit(client, flat_plan(8, **NO_FILLER))
        first = await read_stream(client, task_id, stop_after=3)
        assert len(first) == 3
        worker = asyncio.create_task(work_until_done(client, task_id, "w1"))
        # Hang up again mid-run, then resume from the last id seen each time.
        second = await read_stream(
            client, task_id, headers={"Last-Event-ID": str(first[-1]["id"])}, stop_after=4
        )
        rest = await read_stream(client, task_id, headers={"Last-Event-ID": str(second[-1]["id"])})
        await worker
        stored = await all_events(client, task_id)

    got = [m["id"] for m in first + second + rest]
    assert got == [e["id"] for e in stored]
    assert len(set(got)) == len(got)


async def test_after_query_resumes_like_last_event_id(server: LiveServer) -> None:
    async with server.client() as client:
        task_id = await submit(client, flat_plan(2, **NO_FILLER))
        await work_until_done(client, task_id, "w1")
        stored = await all_events(client, task_id)
        r = await client.get(
            f"/v1/tasks/{task_id}/events", params={"after": stored[1]["id"]}, headers=SSE
        )
        # A finished task's stream sends what is left and ends.
        assert r.status_code == 200
        ids = [int(line[4:]) for line in r.text.splitlines() if line.startswith("id: ")]
        assert ids == [e["id"] for e in stored[2:]]


@pytest.mark.parametrize("value", ["abc", "-1", "1.5", "", "99999999999999999999"])
async def test_bad_last_event_id_is_refused(server: LiveServer, value: str) -> None:
    async with server.client() as client:
        task_id = await submit(client, flat_plan(1, **NO_FILLER))
        r = await client.get(f"/v1/tasks/{task_id}/events", headers={**SSE, "Last-Event-ID": value})
    assert r.status_code == 422
    assert "Last-Event-ID" in r.json()["message"]


async def test_stream_of_unknown_task_and_without_token(server: LiveServer) -> None:
    async with server.client() as client:
        r = await client.get("/v1/tasks/nope/events", headers=SSE)
        assert r.status_code == 404
    async with server.client(token=None) as anonymous:
        r = await anonymous.get("/v1/tasks/nope/events", headers=SSE)
        assert r.status_code == 401


async def test_many_concurrent_writers_stream_stays_complete(server: LiveServer) -> None:
    """Eight workers finish 160 parallel steps of one task while a stream follows it:
    on PostgreSQL their transactions commit out of id order, and the stream must still
    send every event once, in id order."""
    async with server.client() as client:
        task_id = await submit(client, flat_plan(160, **NO_FILLER))
        streamed = asyncio.create_task(read_stream(client, task_id))
        await asyncio.gather(*(work_until_done(client, task_id, f"w{n}") for n in range(8)))
        messages = await asyncio.wait_for(streamed, 60)
        stored = await all_events(client, task_id)
    assert [m["id"] for m in messages] == [e["id"] for e in stored]
    assert len(stored) >= 160 * 2


async def test_the_stream_ends_when_the_server_shuts_down(server: LiveServer) -> None:
    async with server.client() as client:
        task_id = await submit(client, flat_plan(1, **NO_FILLER))
        streamed = asyncio.create_task(read_stream(client, task_id))
        await asyncio.sleep(0.2)
        server.manager.begin_shutdown()
        messages = await asyncio.wait_for(streamed, 10)
    assert messages  # what had happened was sent before the stream ended


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_reader_waits_for_an_earlier_id_committed_later(manager: Any) -> None:
    """The race the stream guards against, made deterministic: transaction A draws an
    event id, B draws the next one and commits first. The reader must not send B's
    event until A has ended, or a client resuming after B would never see A's."""
    from sqlalchemy import insert

    from agent_manager.core.event_stream import EventReader
    from agent_manager.core.events import EVENTS
    from agent_manager.db.tables import utcnow

    def row(kind: str) -> dict[str, Any]:
        return {"task_id": "t1", "step_id": None, "type": kind, "data": {}, "created_at": utcnow()}

    reader = EventReader(task_id="t1", after=0, postgres=True)
    async with manager.db.sessions() as a:
        await a.execute(insert(EVENTS), [row("first")])  # drawn, not committed
        async with manager.db.transaction() as b:
            await b.execute(insert(EVENTS), [row("second")])
        async with manager.db.sessions() as session:
            assert await reader.read(session) == []
            assert await reader.read(session) == []
            assert reader.settling
        await a.commit()
    async with manager.db.sessions() as session:
        events = await reader.read(session)
    assert [e.type for e in events] == ["first", "second"]
    assert not reader.settling


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_the_json_list_also_waits_for_an_earlier_id(manager: Any) -> None:
    """``?after=`` polling (the CLI, the dashboard's fallback) gets the same guarantee."""
    from sqlalchemy import insert

    from agent_manager.core.event_stream import settled_list
    from agent_manager.core.events import EVENTS
    from agent_manager.db.tables import utcnow

    def row(kind: str) -> dict[str, Any]:
        return {"task_id": "t1", "step_id": None, "type": kind, "data": {}, "created_at": utcnow()}

    async with manager.db.sessions() as a:
        await a.execute(insert(EVENTS), [row("first")])
        async with manager.db.transaction() as b:
            await b.execute(insert(EVENTS), [row("second")])
        listed = asyncio.create_task(settled_list(manager, task_id="t1", after=0, limit=100))
        await asyncio.sleep(0.3)
        assert not listed.done()  # waiting for A to end
        await a.commit()
    assert [e.type for e in await listed] == ["first", "second"]


async def test_hanging_up_mid_stream_leaves_the_server_serving(server: LiveServer) -> None:
    """A client that stops reading and hangs up must not take a database connection
    with it (SQLite has a single one)."""
    async with server.client() as client:
        task_id = await submit(client, flat_plan(40, **NO_FILLER))
        worker = asyncio.create_task(work_until_done(client, task_id, "w1"))
        for _ in range(5):
            assert len(await read_stream(client, task_id, stop_after=2)) == 2
        await asyncio.wait_for(worker, 60)
        task = await asyncio.wait_for(get_task(client, task_id), 10)
    assert task["status"] == "completed"


async def test_an_after_beyond_any_event_id_is_refused(server: LiveServer) -> None:
    async with server.client() as client:
        task_id = await submit(client, flat_plan(1, **NO_FILLER))
        r = await client.get(f"/v1/tasks/{task_id}/events", params={"after": 10**20})
    assert r.status_code == 422 and r.json()["code"] == "validation_error"


async def test_a_revoked_token_ends_its_stream(server: LiveServer) -> None:
    """A stream outlives the check at its start; revoking the token still ends it."""
    from agent_manager.core import auth

    async with server.manager.db.transaction() as session:
        info, secret = await auth.create_token(session, name="viewer", scopes=["read"])
    async with server.client() as admin, server.client(token=secret) as viewer:
        task_id = await submit(admin, flat_plan(1, **NO_FILLER))  # nobody works on it
        streamed = asyncio.create_task(read_stream(viewer, task_id))
        await asyncio.sleep(0.3)
        async with server.manager.db.transaction() as session:
            await auth.revoke_token(session, token_id=info.id)
        # The stream ends (its token is checked every few seconds, through a cache
        # of a few seconds), although the task is still running.
        await asyncio.wait_for(streamed, 30)
        r = await viewer.get(f"/v1/tasks/{task_id}/events", headers=SSE)
        assert r.status_code == 401
        assert (await get_task(admin, task_id))["status"] == "running"
