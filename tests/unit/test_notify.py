"""Notifier and Waiter: wake-ups by role, oldest first, never lost to a hang-up."""

from __future__ import annotations

import asyncio

from agent_manager.core.notify import Notifier, Waiter

SHORT = 0.02  # long enough for a woken waiter to see it, short enough to keep tests fast


async def woken(waiter: Waiter, timeout: float = SHORT) -> bool:
    return await waiter.wait(timeout)


async def test_notify_before_wait_still_wakes() -> None:
    hub = Notifier()
    # The claimer subscribes, then tries to claim (finds nothing), then waits; a step
    # made ready in between must not be missed.
    waiter = hub.subscribe(["analyst"])
    hub.notify(["analyst"])
    assert await waiter.wait(1.0) is True
    assert waiter.woken


async def test_notify_before_subscribe_is_not_remembered() -> None:
    hub = Notifier()
    hub.notify(["analyst"])
    waiter = hub.subscribe(["analyst"])
    assert await woken(waiter) is False


async def test_timeout_returns_false() -> None:
    hub = Notifier()
    waiter = hub.subscribe(["analyst"])
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await waiter.wait(0.05) is False
    assert loop.time() - started >= 0.04
    assert await waiter.wait(0) is False
    assert await waiter.wait(-1) is False
    assert not waiter.woken


async def test_wake_wakes_a_waiter_already_waiting() -> None:
    hub = Notifier()
    waiter = hub.subscribe(["analyst"])
    pending = asyncio.create_task(waiter.wait(5.0))
    await asyncio.sleep(0)
    hub.notify(["analyst"])
    assert await asyncio.wait_for(pending, 1.0) is True


async def test_a_wake_is_used_once() -> None:
    hub = Notifier()
    waiter = hub.subscribe(["analyst"])
    hub.notify(["analyst"])
    assert await woken(waiter) is True
    assert await woken(waiter) is False


async def test_other_roles_are_not_woken() -> None:
    hub = Notifier()
    analyst = hub.subscribe(["analyst"])
    writer = hub.subscribe(["writer"])
    hub.notify(["writer"])
    assert await woken(analyst) is False
    assert await woken(writer) is True
    hub.notify(["nobody-waits-for-this"])  # no waiters: nothing happens


async def test_count_limits_how_many_wake() -> None:
    hub = Notifier()
    waiters = [hub.subscribe(["analyst"]) for _ in range(5)]
    hub.notify(["analyst"], 3)
    results = [await woken(w) for w in waiters]
    assert results == [True, True, True, False, False]


async def test_count_larger_than_the_waiters_wakes_them_all() -> None:
    hub = Notifier()
    waiters = [hub.subscribe(["analyst"]) for _ in range(2)]
    hub.notify(["analyst"], 10)
    assert [await woken(w) for w in waiters] == [True, True]


async def test_waiters_are_woken_oldest_first() -> None:
    hub = Notifier()
    first, second, third = (hub.subscribe(["analyst"]) for _ in range(3))
    hub.notify(["analyst"])
    assert (first.woken, second.woken, third.woken) == (True, False, False)
    # An already-woken waiter is skipped: the next wake goes to the next in line.
    hub.notify(["analyst"])
    assert (first.woken, second.woken, third.woken) == (True, True, False)
    hub.notify(["analyst"])
    assert (first.woken, second.woken, third.woken) == (True, True, True)


async def test_waiters_wake_in_arrival_order_while_waiting() -> None:
    hub = Notifier()
    order: list[int] = []

    async def claimer(n: int) -> None:
        waiter = hub.subscribe(["analyst"])
        if await waiter.wait(2.0):
            order.append(n)
        waiter.consume()  # it claimed with that wake
        waiter.close()

    tasks = []
    for n in range(4):
        tasks.append(asyncio.create_task(claimer(n)))
        await asyncio.sleep(0)  # subscribe in this order
    for _ in range(4):
        hub.notify(["analyst"])
        await asyncio.sleep(0.01)
    await asyncio.wait_for(asyncio.gather(*tasks), 3.0)
    assert order == [0, 1, 2, 3]


async def test_a_waiter_of_several_roles_is_woken_by_any() -> None:
    hub = Notifier()
    both = hub.subscribe(["analyst", "writer"])
    hub.notify(["writer"])
    assert await woken(both) is True
    assert hub.waiting("analyst") == hub.waiting("writer") == 1


async def test_woken_waiter_that_leaves_without_claiming_passes_the_wake_on() -> None:
    hub = Notifier()
    first = hub.subscribe(["analyst"])
    second = hub.subscribe(["analyst"])
    hub.notify(["analyst"])
    assert await woken(first) is True
    # The client hung up before claiming: the ready step must not be stranded.
    first.close()
    assert await woken(second) is True
    assert hub.waiting("analyst") == 1


async def test_woken_waiter_that_claimed_does_not_pass_the_wake_on() -> None:
    hub = Notifier()
    first = hub.subscribe(["analyst"])
    second = hub.subscribe(["analyst"])
    hub.notify(["analyst"])
    first.consume()  # a claim attempt began after the wake: it saw that step
    first.close()
    assert await woken(second) is False


async def test_a_wake_during_a_claim_goes_to_a_parked_waiter_or_is_passed_on() -> None:
    hub = Notifier()
    busy = hub.subscribe(["analyst"])
    parked = hub.subscribe(["analyst"])
    parked_wait = asyncio.create_task(parked.wait(2.0))
    await asyncio.sleep(0)  # parked is inside wait()
    busy.consume()  # busy is claiming (not in wait) when a second step becomes ready
    hub.notify(["analyst"])
    assert await asyncio.wait_for(parked_wait, 1.0) is True  # the parked one, though younger
    assert not busy.woken
    # With nobody parked, the busy claimer is marked; if its claim already began, it
    # cannot have seen the new step, so leaving passes the wake on.
    hub.notify(["analyst"])
    assert busy.woken
    busy.close()
    assert parked._event.is_set()


async def test_unwoken_waiter_that_leaves_passes_nothing_on() -> None:
    hub = Notifier()
    first = hub.subscribe(["analyst"])
    second = hub.subscribe(["analyst"])
    first.close()
    assert await woken(second) is False


async def test_close_unsubscribes_from_every_role() -> None:
    hub = Notifier()
    waiter = hub.subscribe(["analyst", "writer"])
    other = hub.subscribe(["writer"])
    assert (hub.waiting("analyst"), hub.waiting("writer")) == (1, 2)
    waiter.close()
    assert (hub.waiting("analyst"), hub.waiting("writer")) == (0, 1)
    hub.notify(["writer"])
    assert not waiter.woken
    assert await woken(other) is True
    other.consume()
    other.close()
    assert hub.waiting("writer") == 0
    assert hub._waiters == {}  # no empty queues left behind
