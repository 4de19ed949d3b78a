"""The Redis bus between replicas, against the real Redis on 127.0.0.1:6379."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping

import pytest
import redis.asyncio as redis

from agent_manager.core.bus import RedisBus

REDIS_URL = "redis://127.0.0.1:6379/0"


class Inbox:
    def __init__(self) -> None:
        self.notices: list[tuple[dict[str, int], list[str]]] = []
        self.arrived = asyncio.Event()

    def __call__(self, roles: Mapping[str, int], tasks: Iterable[str]) -> None:
        self.notices.append((dict(roles), sorted(tasks)))
        self.arrived.set()

    async def next(self) -> tuple[dict[str, int], list[str]]:
        await asyncio.wait_for(self.arrived.wait(), 5)
        self.arrived.clear()
        return self.notices.pop(0)


async def started(channel: str) -> tuple[RedisBus, Inbox]:
    bus, inbox = RedisBus(REDIS_URL, channel=channel, recheck=0.5), Inbox()
    bus.start(inbox)
    async with asyncio.timeout(5):
        while not bus.healthy:  # noqa: ASYNC110 - the bus has no event for this
            await asyncio.sleep(0.01)
    return bus, inbox


@pytest.fixture
def channel() -> str:
    """A channel of this test's own: other tests' servers may share the Redis."""
    return f"test:{uuid.uuid4().hex}"


@pytest.fixture
async def two_buses(channel: str) -> AsyncIterator[tuple[RedisBus, Inbox, RedisBus, Inbox]]:
    a, inbox_a = await started(channel)
    b, inbox_b = await started(channel)
    yield a, inbox_a, b, inbox_b
    await a.stop()
    await b.stop()


async def test_a_notice_reaches_the_other_replica_not_the_sender(
    two_buses: tuple[RedisBus, Inbox, RedisBus, Inbox],
) -> None:
    a, inbox_a, _, inbox_b = two_buses
    a.publish(roles={"writer": 2}, tasks=["t1"])
    assert await inbox_b.next() == ({"writer": 2}, ["t1"])
    await asyncio.sleep(0.1)
    assert inbox_a.notices == []  # a replica wakes its own waiters directly


async def test_a_burst_is_batched_and_counts_add_up(
    two_buses: tuple[RedisBus, Inbox, RedisBus, Inbox],
) -> None:
    a, _, _, inbox_b = two_buses
    for n in range(50):
        a.publish(roles={"writer": 1}, tasks=[f"t{n % 5}"])
    total: dict[str, int] = {}
    tasks: set[str] = set()
    while total.get("writer", 0) < 50:
        roles, some = await inbox_b.next()
        total["writer"] = total.get("writer", 0) + roles.get("writer", 0)
        tasks.update(some)
    assert total == {"writer": 50}
    assert tasks == {f"t{n}" for n in range(5)}
    assert len(inbox_b.notices) == 0


async def test_malformed_messages_are_ignored(
    two_buses: tuple[RedisBus, Inbox, RedisBus, Inbox], channel: str
) -> None:
    _, _, b, inbox_b = two_buses
    client = redis.from_url(REDIS_URL)
    try:
        for junk in ("not json", '{"roles": {"x": "many"}}', "[1, 2]"):
            await client.publish(channel, junk)
        await client.publish(channel, '{"from": "elsewhere", "roles": {"x": 1}, "tasks": []}')
    finally:
        await client.aclose()
    assert await inbox_b.next() == ({"x": 1}, [])
    assert b.healthy


async def test_unreachable_redis_costs_nothing_but_latency() -> None:
    bus, inbox = RedisBus("redis://127.0.0.1:1/0", recheck=0.25), Inbox()
    bus.start(inbox)
    try:
        bus.publish(roles={"writer": 1})  # must neither raise nor block
        await asyncio.sleep(0.3)
        assert not bus.healthy
        assert bus.recheck_interval == 0.25  # waiters fall back to re-checking often
        with pytest.raises(Exception):  # noqa: B017 - any connection error will do
            await bus.ping()
    finally:
        await bus.stop()


async def test_healthy_bus_rechecks_rarely(
    two_buses: tuple[RedisBus, Inbox, RedisBus, Inbox],
) -> None:
    a, *_ = two_buses
    assert a.recheck_interval >= 5.0
    await a.ping()


async def test_what_is_queued_at_stop_still_goes_out(channel: str) -> None:
    a, _ = await started(channel)
    b, inbox_b = await started(channel)
    try:
        a._pending.set = lambda: None  # type: ignore[method-assign] # keep it queued
        a.publish(roles={"writer": 1}, tasks=["handed-back"])
        await a.stop()
        assert await inbox_b.next() == ({"writer": 1}, ["handed-back"])
    finally:
        await b.stop()
