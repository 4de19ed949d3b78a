"""In-process wake-ups for long-polling claimers.

A claimer subscribes to its roles *before* it tries to claim, so a step that becomes
ready between its empty claim and its wait still wakes it. ``notify(role, n)`` wakes
the ``n`` oldest waiters of that role; a woken waiter that leaves without claiming
passes the wake on (see :meth:`Waiter.close`), so a client that hangs up never
strands a ready step.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Iterable


class Waiter:
    """One long-polling claimer's subscription."""

    __slots__ = ("_event", "_hub", "idle", "roles", "woken")

    def __init__(self, hub: Notifier, roles: tuple[str, ...]) -> None:
        self._hub = hub
        self._event = asyncio.Event()
        self.roles = roles
        self.woken = False
        self.idle = False  # inside wait(), as opposed to busy claiming

    def wake(self) -> None:
        self.woken = True
        self._event.set()

    async def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds; True if woken."""
        self.idle = True
        try:
            async with asyncio.timeout(max(0.0, timeout)):
                await self._event.wait()
        except TimeoutError:
            return False
        finally:
            self.idle = False
        self._event.clear()
        return True

    def consume(self) -> None:
        """The wake was used (a claim was tried after it); do not pass it on."""
        self.woken = False

    def close(self) -> None:
        """Unsubscribe. A wake that came after the last claim attempt began may be for
        a step that attempt did not see: it goes to the next waiter."""
        self._hub._remove(self)
        if self.woken:
            self._hub.notify(self.roles, 1)


class Notifier:
    """Wakes waiters by role, oldest first."""

    def __init__(self) -> None:
        # role -> waiters in arrival order (dict as an ordered set)
        self._waiters: dict[str, OrderedDict[Waiter, None]] = {}

    def subscribe(self, roles: Iterable[str]) -> Waiter:
        waiter = Waiter(self, tuple(roles))
        for role in waiter.roles:
            self._waiters.setdefault(role, OrderedDict())[waiter] = None
        return waiter

    def _remove(self, waiter: Waiter) -> None:
        for role in waiter.roles:
            queue = self._waiters.get(role)
            if queue is not None:
                queue.pop(waiter, None)
                if not queue:
                    del self._waiters[role]

    def notify(self, roles: Iterable[str], count: int = 1) -> None:
        """Wake up to ``count`` not-yet-woken waiters for each of ``roles``."""
        for role in roles:
            queue = self._waiters.get(role)
            if not queue:
                continue
            # Waiters parked in wait() first: one busy claiming may already be
            # finishing with another step and leave this one behind.
            candidates = sorted(
                (w for w in queue if not w._event.is_set()), key=lambda w: not w.idle
            )
            for waiter in candidates[:count]:
                waiter.wake()

    def wake_all(self) -> None:
        for queue in list(self._waiters.values()):
            for waiter in list(queue):
                waiter.wake()

    def waiting(self, role: str) -> int:
        return len(self._waiters.get(role, ()))


class TaskSignals:
    """Wakes event streams when their task has new events.

    A stream subscribes before it reads, then waits; ``fire`` after a commit wakes
    every stream of those tasks (they read the new events from the database).
    """

    def __init__(self) -> None:
        self._streams: dict[str, set[asyncio.Event]] = {}

    def subscribe(self, task_id: str) -> asyncio.Event:
        signal = asyncio.Event()
        self._streams.setdefault(task_id, set()).add(signal)
        return signal

    def unsubscribe(self, task_id: str, signal: asyncio.Event) -> None:
        streams = self._streams.get(task_id)
        if streams is not None:
            streams.discard(signal)
            if not streams:
                del self._streams[task_id]

    def fire(self, task_ids: Iterable[str]) -> None:
        for task_id in task_ids:
            for signal in self._streams.get(task_id, ()):
                signal.set()

    def fire_all(self) -> None:
        self.fire(list(self._streams))
