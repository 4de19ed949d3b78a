"""Server-sent events: the wire format and the streaming response."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi.responses import StreamingResponse

from agent_manager.errors import InvalidRequest
from agent_manager.schemas import EventPublic

#: Sent first: how long a browser's EventSource waits before it reconnects.
RETRY_MS = 1000
#: Event ids are 64-bit integers in the database.
MAX_EVENT_ID = 2**63 - 1


def parse_last_event_id(value: str) -> int:
    """The ``Last-Event-ID`` a client sends back is an id this server gave it."""
    try:
        event_id = int(value.strip())
    except ValueError:
        event_id = -1
    if not 0 <= event_id <= MAX_EVENT_ID:
        raise InvalidRequest(
            f"Last-Event-ID must be an event id (a whole number >= 0), got {value!r}"
        )
    return event_id


def encode(event: EventPublic | None) -> str:
    """One message; ``None`` is a comment that keeps idle connections open."""
    if event is None:
        return ": keep-alive\n\n"
    return f"id: {event.id}\nevent: {event.type}\ndata: {event.model_dump_json()}\n\n"


def response(events: AsyncIterator[EventPublic | None]) -> StreamingResponse:
    async def body() -> AsyncIterator[str]:
        yield f"retry: {RETRY_MS}\n\n"
        async for event in events:
            yield encode(event)

    return StreamingResponse(
        body(),
        media_type="text/event-stream",
        # Proxies must pass each message on at once, not buffer or cache the stream.
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
