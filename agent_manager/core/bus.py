"""Wake-ups and event notices between server replicas, over Redis pub/sub.

Each replica wakes its own long-polls and event streams directly (see
:mod:`agent_manager.core.notify`). What another replica needs to hear — "a step of role
X became ready", "task T has new events" — goes out on one Redis channel, batched: the
publisher sends whatever gathered while its previous message was in flight, so a burst
of completions costs a few messages, and a lone one goes out at once.

Redis only makes replicas hear each other sooner. The database decides every claim, and
a replica that hears nothing finds the work anyway when its waiters re-check the
database (every ``recheck`` seconds; rarely while the subscription is healthy). So a
lost message, a Redis restart or no Redis at all costs latency, never correctness.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import redis.asyncio as redis
from redis.exceptions import RedisError

log = logging.getLogger(__name__)

#: One channel per deployment (AM_REDIS_CHANNEL), so deployments can share a Redis.
CHANNEL = "agent_manager:notices"
#: While the subscription is up, waiters still look at the database this often, in case
#: a message was lost (e.g. published while this replica was reconnecting).
HEALTHY_RECHECK_SECONDS = 5.0
RECONNECT_MAX_SECONDS = 5.0
#: A publish that takes longer is given up (the re-checks cover it), so a hung
#: connection cannot stall every later notice.
PUBLISH_TIMEOUT_SECONDS = 2.0

#: ``on_notice(roles, task_ids)``: a remote replica made steps of ``roles`` ready (role ->
#: how many) and wrote events for ``task_ids``.
NoticeHandler = Callable[[Mapping[str, int], Iterable[str]], None]


class RedisBus:
    """Publishes this replica's notices and hands other replicas' notices to ``on_notice``."""

    def __init__(self, url: str, *, channel: str = CHANNEL, recheck: float = 0.5) -> None:
        self.url = url
        self.channel = channel
        self.replica_id = uuid.uuid4().hex[:12]
        self._recheck = recheck
        # TCP keepalive and the periodic health-check PING let a connection whose peer
        # vanished without a word be noticed and replaced.
        self._client: redis.Redis = redis.from_url(
            url,
            socket_connect_timeout=2,
            socket_timeout=None,
            socket_keepalive=True,
            health_check_interval=10,
        )
        self._roles: Counter[str] = Counter()
        self._tasks: set[str] = set()
        self._pending = asyncio.Event()
        self._subscribed = False
        self._tasks_running: list[asyncio.Task[None]] = []
        self._last_warning = 0.0

    # -- life cycle ---------------------------------------------------------------

    def start(self, on_notice: NoticeHandler) -> None:
        self._tasks_running = [
            asyncio.create_task(self._listen(on_notice), name="redis-bus-listen"),
            asyncio.create_task(self._publish_forever(), name="redis-bus-publish"),
        ]

    async def stop(self) -> None:
        """Stop listening and publishing; what is still queued goes out (briefly) last."""
        for task in self._tasks_running:
            task.cancel()
        for task in self._tasks_running:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._roles or self._tasks:  # e.g. the steps this replica just handed back
            await self._send(self._take(), timeout=1.0)
        await self._client.aclose()

    async def ping(self) -> None:
        """Raise if Redis does not answer (for the readiness check)."""
        async with asyncio.timeout(2):
            await self._client.ping()

    @property
    def healthy(self) -> bool:
        """Subscribed and listening: remote notices reach this replica."""
        return self._subscribed

    @property
    def recheck_interval(self) -> float:
        """How long a waiter may trust the bus before looking at the database itself."""
        return max(HEALTHY_RECHECK_SECONDS, self._recheck) if self._subscribed else self._recheck

    # -- sending ------------------------------------------------------------------

    def publish(self, *, roles: Mapping[str, int] | None = None, tasks: Iterable[str] = ()) -> None:
        """Queue a notice for the other replicas; never blocks, never raises."""
        if roles:
            self._roles.update(roles)
        self._tasks.update(tasks)
        if self._roles or self._tasks:
            self._pending.set()

    async def _publish_forever(self) -> None:
        while True:
            await self._pending.wait()
            self._pending.clear()
            await self._send(self._take(), timeout=PUBLISH_TIMEOUT_SECONDS)

    def _take(self) -> dict[str, Any]:
        """Everything queued, as one message; the queue starts afresh."""
        message = {"from": self.replica_id, "roles": dict(self._roles), "tasks": [*self._tasks]}
        self._roles.clear()
        self._tasks.clear()
        return message

    async def _send(self, message: dict[str, Any], *, timeout: float) -> None:
        try:
            async with asyncio.timeout(timeout):
                await self._client.publish(self.channel, json.dumps(message))
        except (RedisError, OSError, TimeoutError) as exc:
            # Dropped: the other replicas' re-checks find the work anyway.
            self._warn(f"cannot publish to Redis ({exc}); replicas fall back to re-checks")

    # -- receiving ----------------------------------------------------------------

    async def _listen(self, on_notice: NoticeHandler) -> None:
        delay = 0.1
        while True:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.channel)
                self._subscribed = True
                delay = 0.1
                log.info("listening for other replicas on Redis %s", _safe(self.url))
                async for message in pubsub.listen():
                    self._deliver(message, on_notice)
            except (RedisError, OSError) as exc:
                self._warn(f"Redis subscription lost ({exc}); reconnecting, re-checking meanwhile")
            finally:
                self._subscribed = False
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_SECONDS)

    def _deliver(self, message: dict[str, Any], on_notice: NoticeHandler) -> None:
        try:
            notice = json.loads(message["data"])
            if notice.get("from") == self.replica_id:
                return  # this replica already woke its own waiters
            roles = {str(r): int(n) for r, n in notice.get("roles", {}).items()}
            tasks = [str(t) for t in notice.get("tasks", [])]
        except (ValueError, TypeError, KeyError, AttributeError):
            log.warning("ignored a malformed notice on %s", self.channel)
            return
        on_notice(roles, tasks)

    def _warn(self, text: str) -> None:
        now = time.monotonic()
        if now - self._last_warning > 10:  # an outage logs a line every 10 s, not per message
            self._last_warning = now
            log.warning(text)


def _safe(url: str) -> str:
    """The URL without a password, for logs."""
    if "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"


__all__ = ["CHANNEL", "NoticeHandler", "RedisBus"]
