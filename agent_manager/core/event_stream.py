"""A task's events as a live, resumable stream (behind ``GET /v1/tasks/{id}/events``).

Event ids come from one sequence, so they order events — but on PostgreSQL two
transactions can commit in the other order than they drew their ids. A reader that
had already sent id 11 would then never send id 10, and a client resuming after 11
would miss it for good. :class:`EventReader` therefore sends events only up to a
*settled* id: having seen events up to id ``M``, it notes the snapshot's ``xmax`` (the
next transaction id) and sends ``(last, M]`` once every transaction that was running
then has ended (``pg_snapshot_xmin`` has passed that ``xmax``). Anything that drew an
id below ``M`` has then either committed, and is read with the rest, or rolled back.
SQLite has one writer at a time, so there its ids are already in commit order.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy import func, select, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from agent_manager.core import views
from agent_manager.core.manager import AgentManager
from agent_manager.db.tables import EventORM
from agent_manager.errors import AgentManagerError
from agent_manager.models import TaskStatus
from agent_manager.schemas import EventPublic

log = logging.getLogger(__name__)

#: How long a reader waits for slow transactions before it sends what it has (a
#: transaction open this long is not one of the server's own).
MAX_SETTLE_SECONDS = 2.0
#: How soon to look again while events wait to settle.
SETTLE_POLL_SECONDS = 0.005
BATCH = 500

_SNAPSHOT = text(
    "SELECT pg_snapshot_xmin(s)::text::bigint, pg_snapshot_xmax(s)::text::bigint "
    "FROM pg_current_snapshot() AS s"
)


@dataclass
class _Fence:
    max_id: int
    xmax: int
    seen_at: float


class EventReader:
    """Reads one task's events in order, each exactly once, across calls."""

    def __init__(self, *, task_id: str, after: int, postgres: bool) -> None:
        self.task_id = task_id
        self.last = after
        self.postgres = postgres
        self._fence: _Fence | None = None

    @property
    def settling(self) -> bool:
        """Events were seen that are not out yet (waiting for older transactions)."""
        return self._fence is not None

    async def read(self, session: AsyncSession) -> list[EventPublic]:
        if not self.postgres:
            return self._advance(
                await views.list_events(session, task_id=self.task_id, after=self.last, limit=BATCH)
            )
        out: list[EventPublic] = []
        if self._fence is not None:
            xmin, _ = (await session.execute(_SNAPSHOT)).one()
            fence = self._fence
            if xmin >= fence.xmax or time.monotonic() - fence.seen_at > MAX_SETTLE_SECONDS:
                out = await self._upto(session, fence.max_id)
                if len(out) < BATCH:
                    self.last = max(self.last, fence.max_id)
                    self._fence = None
        if self._fence is None:
            newest = await session.scalar(
                select(func.max(EventORM.id)).where(
                    EventORM.task_id == self.task_id, EventORM.id > self.last
                )
            )
            if newest is not None:
                # The snapshot is taken after the read: whoever drew an id below
                # ``newest`` already had its transaction id, so it is below this xmax.
                _, xmax = (await session.execute(_SNAPSHOT)).one()
                self._fence = _Fence(newest, xmax, time.monotonic())
        return out

    async def _upto(self, session: AsyncSession, max_id: int) -> list[EventPublic]:
        rows = await views.list_events(session, task_id=self.task_id, after=self.last, limit=BATCH)
        return self._advance([e for e in rows if e.id <= max_id])

    def _advance(self, events: list[EventPublic]) -> list[EventPublic]:
        if events:
            self.last = events[-1].id
        return events


async def settled_list(
    manager: AgentManager, *, task_id: str, after: int, limit: int
) -> list[EventPublic]:
    """The task's events after ``after`` (at most ``limit``), up to the newest settled
    id — so a client polling with ``?after=`` misses nothing either."""
    if not manager.db.is_postgres:
        async with manager.db.sessions() as session:
            return await views.list_events(session, task_id=task_id, after=after, limit=limit)
    async with manager.db.sessions() as session:
        newest = await session.scalar(
            select(func.max(EventORM.id)).where(EventORM.task_id == task_id, EventORM.id > after)
        )
        if newest is None:
            return []
        _, xmax = (await session.execute(_SNAPSHOT)).one()
    deadline = time.monotonic() + MAX_SETTLE_SECONDS
    pause = SETTLE_POLL_SECONDS
    while time.monotonic() < deadline:
        async with manager.db.sessions() as session:
            xmin, _ = (await session.execute(_SNAPSHOT)).one()
        if xmin >= xmax:
            break
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.1)
    async with manager.db.sessions() as session:
        events = await views.list_events(session, task_id=task_id, after=after, limit=limit)
    return [e for e in events if e.id <= newest]


async def _read(
    manager: AgentManager, reader: EventReader, task_id: str
) -> tuple[bool, list[EventPublic]]:
    """Whether the task is final (read first), and the events the reader may send."""
    async with manager.db.sessions() as session:
        task = await views.get_task_row(session, task_id=task_id)
        return TaskStatus(task.status).is_final, await reader.read(session)


async def follow(
    manager: AgentManager,
    *,
    task_id: str,
    after: int,
    keepalive: float = 15.0,
    still_allowed: Callable[[], Awaitable[bool]] | None = None,
    allowed_every: float = 5.0,
) -> AsyncIterator[EventPublic | None]:
    """Yield the task's events after ``after``, in order, as they commit; ``None`` when
    nothing happened for ``keepalive`` seconds. Ends once the task is final and all
    its events are out, when the server shuts down, or when ``still_allowed`` (asked
    every ``allowed_every`` seconds) says the reader's token was revoked."""
    reader = EventReader(task_id=task_id, after=after, postgres=manager.db.is_postgres)
    signal = manager.task_signals.subscribe(task_id)
    quiet_since = time.monotonic()
    settle_pause = SETTLE_POLL_SECONDS
    allowed_at = time.monotonic()
    try:
        while not manager.closing:
            if still_allowed is not None and time.monotonic() - allowed_at >= allowed_every:
                if not await still_allowed():
                    return
                allowed_at = time.monotonic()
            signal.clear()  # before reading: a commit from now on wakes the wait below
            try:
                # Shielded: a client hanging up cancels this generator, and a cancelled
                # read could lose its pooled connection (SQLite has only one).
                final, events = await asyncio.shield(_read(manager, reader, task_id))
            except (SQLAlchemyError, OSError, AgentManagerError) as exc:
                # The headers went out long ago: no error status can follow. End the
                # stream; the client reconnects with Last-Event-ID and loses nothing.
                log.warning("event stream of task %s ended: %s", task_id, exc)
                return
            for event in events:
                yield event
            if events:
                quiet_since = time.monotonic()
                settle_pause = SETTLE_POLL_SECONDS
                continue  # read again: more may have come meanwhile
            if reader.settling:
                await asyncio.sleep(settle_pause)
                settle_pause = min(settle_pause * 2, 0.1)  # a long transaction: look less often
                continue
            if final:
                return  # the status was read before the events: nothing can follow
            if time.monotonic() - quiet_since >= keepalive:
                quiet_since = time.monotonic()
                yield None
            wait = min(manager.recheck_interval, keepalive)
            try:
                async with asyncio.timeout(wait):
                    await signal.wait()
            except TimeoutError:
                pass
    finally:
        manager.task_signals.unsubscribe(task_id, signal)


__all__ = ["EventReader", "follow", "settled_list"]
