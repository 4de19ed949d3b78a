"""Appending to the event log: every state change is recorded in its transaction."""

from __future__ import annotations

from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, insert
from sqlalchemy.ext.asyncio import AsyncSession

from agent_manager.db.tables import EventORM

EVENTS = cast(Table, EventORM.__table__)
#: ``session.info`` key: the tasks this transaction wrote events for.
EVENT_TASKS = "event_tasks"


class EventBuffer:
    """Events of one transaction, written together with one multi-row INSERT."""

    def __init__(self, now: datetime) -> None:
        self.now = now
        self.rows: list[dict[str, Any]] = []

    def add(self, task_id: str, type_: str, step_id: str | None = None, **data: Any) -> None:
        self.rows.append(
            {
                "task_id": task_id,
                "step_id": step_id,
                "type": type_,
                "data": data,
                "created_at": self.now,
            }
        )

    async def flush(self, session: AsyncSession) -> None:
        if self.rows:
            await session.execute(insert(EVENTS), self.rows)
            # Database.transaction announces these tasks once the commit succeeds.
            session.info.setdefault(EVENT_TASKS, set()).update(r["task_id"] for r in self.rows)
            self.rows = []
