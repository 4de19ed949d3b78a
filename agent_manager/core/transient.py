"""Transactions PostgreSQL aborted as deadlock victims (or serialization failures) are
simply run again: they were rolled back as a whole."""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

#: PostgreSQL's "deadlock detected" and "could not serialize": the transaction was
#: rolled back as a whole and may simply be run again.
TRANSIENT_SQLSTATES = frozenset({"40P01", "40001"})


#: The server is going away or not taking connections: "admin shutdown", "crash
#: shutdown", "cannot connect now" (starting or stopping), "too many connections".
#: Like the whole class 08 (connection exceptions), these mean: unavailable, retry.
UNAVAILABLE_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "53300"})


def _sqlstates(exc: BaseException) -> list[str]:
    """The SQLSTATEs along ``exc``'s chain (SQLAlchemy wraps the driver's error)."""
    states = []
    seen: BaseException | None = exc
    while seen is not None:
        state = getattr(seen, "sqlstate", None) or getattr(seen, "pgcode", None)
        if isinstance(state, str):
            states.append(state)
        seen = getattr(seen, "orig", None) or seen.__cause__
    return states


def is_transient(exc: BaseException) -> bool:
    return any(s in TRANSIENT_SQLSTATES for s in _sqlstates(exc))


def is_unavailable(exc: BaseException) -> bool:
    """The database is restarting or unreachable, as opposed to a bug in a query."""
    return any(s in UNAVAILABLE_SQLSTATES or s.startswith("08") for s in _sqlstates(exc))


def retry_transient(
    fn: Callable[P, Awaitable[R]],
) -> Callable[P, Coroutine[Any, Any, R]]:
    """Run a unit of work again when PostgreSQL aborted it as a deadlock victim.

    A report locks its step, then its task; a cancel or a final failure locks the
    task, then its open steps. When the two cross, PostgreSQL aborts one of them; the
    rolled-back one is simply run again.
    """

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        for attempt in range(1, 4):
            try:
                return await fn(*args, **kwargs)
            except Exception as exc:
                if attempt == 3 or not is_transient(exc):
                    raise
                log.info("transaction aborted (%s); running it again", exc)
                await asyncio.sleep(0.01 * attempt)
        raise AssertionError("unreachable")

    return wrapper
