"""Which database errors mean "retry" (503) and which are bugs (500)."""

from __future__ import annotations

import asyncpg
import pytest
from sqlalchemy.exc import DBAPIError

from agent_manager.core.transient import is_transient, is_unavailable


def wrapped(exc: BaseException) -> DBAPIError:
    """As SQLAlchemy hands the driver's error up."""
    return DBAPIError("SELECT 1", None, exc)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "exc",
    [
        asyncpg.CannotConnectNowError("the database system is shutting down"),
        asyncpg.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.CrashShutdownError("crash"),
        asyncpg.TooManyConnectionsError("too many clients"),
        asyncpg.ConnectionDoesNotExistError("connection was closed"),
    ],
)
def test_a_restarting_or_unreachable_server_is_unavailable(exc: BaseException) -> None:
    assert is_unavailable(exc)
    assert is_unavailable(wrapped(exc))
    assert not is_transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        asyncpg.UndefinedColumnError("column x does not exist"),
        asyncpg.UniqueViolationError("duplicate key"),
        ValueError("not a database error"),
    ],
)
def test_query_bugs_are_not_unavailable(exc: BaseException) -> None:
    assert not is_unavailable(exc)
    assert not is_unavailable(wrapped(exc))


def test_deadlock_victims_are_transient() -> None:
    victim = asyncpg.DeadlockDetectedError("deadlock detected")
    assert is_transient(wrapped(victim)) and not is_unavailable(victim)
