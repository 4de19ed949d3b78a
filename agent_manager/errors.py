"""The exception tree of AgentManager.

Every error the core raises derives from :class:`AgentManagerError`. The API maps
each class to an HTTP status and a stable ``code`` in one registry
(``agent_manager.api.errors``); the core never raises HTTP exceptions itself.

    AgentManagerError
    ├── NotFound            (404) a task, step, token or lock that does not exist
    ├── InvalidRequest      (422) input that is well-formed JSON but makes no sense
    │   └── InvalidPlan     (422) a plan that is cyclic, refers to unknown steps, …
    ├── Conflict            (409) the request contradicts the current state
    │   ├── StaleClaim      (409) a claim token that is no longer (or never was) valid
    │   └── LockConflict    (409) a file lock that cannot be granted in time
    ├── Unauthorized        (401) no token, or a token we do not know
    ├── Forbidden           (403) a known token without the needed scope or role
    └── Unavailable         (503) the database cannot be reached right now

The first line of each docstring is the default message.
"""

from __future__ import annotations

from typing import Any, ClassVar


class AgentManagerError(Exception):
    """Something went wrong in AgentManager."""

    code: ClassVar[str] = "error"

    def __init__(self, message: str | None = None, **details: Any) -> None:
        self.message = message or (self.__doc__ or self.code).strip().splitlines()[0]
        self.details = details
        super().__init__(self.message)


class NotFound(AgentManagerError):
    """The requested object does not exist."""

    code = "not_found"


class InvalidRequest(AgentManagerError):
    """The request is not valid."""

    code = "invalid_request"


class InvalidPlan(InvalidRequest):
    """The plan is not a valid task graph."""

    code = "invalid_plan"

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid plan: " + "; ".join(problems), problems=problems)


class Conflict(AgentManagerError):
    """The request conflicts with the current state."""

    code = "conflict"


class StaleClaim(Conflict):
    """The claim token is not the current claim of this step."""

    code = "stale_claim"


class LockConflict(Conflict):
    """The file lock could not be granted."""

    code = "lock_conflict"


class Unauthorized(AgentManagerError):
    """Missing or unknown bearer token; send 'Authorization: Bearer <token>'."""

    code = "unauthorized"


class Forbidden(AgentManagerError):
    """This token is not allowed to do that."""

    code = "forbidden"


class Unavailable(AgentManagerError):
    """The database is unavailable; retry shortly."""

    code = "unavailable"


__all__ = [
    "AgentManagerError",
    "Conflict",
    "Forbidden",
    "InvalidPlan",
    "InvalidRequest",
    "LockConflict",
    "NotFound",
    "StaleClaim",
    "Unauthorized",
    "Unavailable",
]
