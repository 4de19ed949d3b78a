"""The client's exception tree: every HTTP or transport problem becomes one of these.

    ClientError              something went wrong talking to the server
    ├── ServerUnavailable    cannot connect, timed out, or 502/503/504: retry later
    ├── ServerError          the server failed (500): a bug on its side
    ├── AuthError            401/403: the token is missing, unknown or not allowed
    ├── NotFound             404: no such task or step
    ├── InvalidRequest       400/413/422: the server refused what was sent
    ├── Conflict             409: the request contradicts the current state
    │   └── StaleClaim       409 on a heartbeat or report: the claim is no longer ours
    └── WaitTimeout          ``wait()`` ran out of time (also a ``TimeoutError``)

:class:`NonRetryable` is not a client error: a role handler raises it to fail a step
for good (no further attempts).

The first line of each docstring is the default message. Every error carries the
HTTP ``status`` (``None`` when no answer came), the server's ``code`` and ``details``.
"""

from __future__ import annotations

from typing import Any


class ClientError(Exception):
    """The request to the AgentManager server failed."""

    def __init__(
        self,
        message: str | None = None,
        *,
        status: int | None = None,
        code: str | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        self.message = message or (self.__doc__ or "").strip().splitlines()[0]
        self.status = status
        self.code = code
        self.details = details or {}
        super().__init__(self.message)


class ServerUnavailable(ClientError):
    """The server cannot be reached right now; retry shortly."""


class ServerError(ClientError):
    """The server failed to handle the request."""


class AuthError(ClientError):
    """The server refused the token."""


class NotFound(ClientError):
    """The task or step does not exist."""


class InvalidRequest(ClientError):
    """The server refused the request as invalid."""


class Conflict(ClientError):
    """The request conflicts with the server's current state."""


class StaleClaim(Conflict):
    """The claim is no longer valid: the step was handed on, finished or cancelled."""


class WaitTimeout(ClientError, TimeoutError):
    """The task did not reach a final status in time."""


class NonRetryable(Exception):
    """Raised by a role handler: the step failed and retrying it cannot help."""


__all__ = [
    "AuthError",
    "ClientError",
    "Conflict",
    "InvalidRequest",
    "NonRetryable",
    "NotFound",
    "ServerError",
    "ServerUnavailable",
    "StaleClaim",
    "WaitTimeout",
]
