"""GET /v1/agents: the workers the server has seen and what they hold."""

from __future__ import annotations

from tests.helpers import claim, flat_plan, report, submit
from tests.server import LiveServer


async def test_agents_are_listed_with_their_current_steps(server: LiveServer) -> None:
    async with server.client() as client:
        await submit(client, flat_plan(3, ["analyst", "writer", "analyst"]))
        a = await claim(client, ["analyst"], agent="alpha")
        b = await claim(client, ["writer"], agent="beta")
        assert a and b
        agents = {x["id"]: x for x in (await client.get("/v1/agents")).json()}
        assert agents["alpha"]["roles"] == ["analyst"]
        assert [s["step_id"] for s in agents["alpha"]["current_steps"]] == [a["step"]["id"]]
        assert [s["step_id"] for s in agents["beta"]["current_steps"]] == [b["step"]["id"]]
        assert (await report(client, a)).status_code == 200
        agents = {x["id"]: x for x in (await client.get("/v1/agents")).json()}
        assert agents["alpha"]["current_steps"] == []
        assert agents["alpha"]["last_seen_at"] >= agents["alpha"]["first_seen_at"]
        token = await server.token("work", roles=["analyst"])
    async with server.client(token) as worker:
        assert (await worker.get("/v1/agents")).status_code == 403  # read scope needed
    async with server.client(None) as anonymous:
        assert (await anonymous.get("/v1/agents")).status_code == 401


async def test_a_worker_asking_for_other_roles_is_shown_with_them_at_once(
    server: LiveServer,
) -> None:
    async with server.client() as client:
        await submit(client, flat_plan(2, ["analyst", "writer"]))
        assert await claim(client, ["analyst"], agent="w1")
        assert await claim(client, ["writer"], agent="w1")  # within the same few seconds
        agents = {x["id"]: x for x in (await client.get("/v1/agents")).json()}
        assert agents["w1"]["roles"] == ["writer"]
        assert len(agents["w1"]["current_steps"]) == 2
