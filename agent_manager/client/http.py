"""An async HTTP client for the AgentManager API, for submitters and workers alike.

It speaks only HTTP: nothing here imports the server. Every transport failure and
every error answer is translated in one place (:meth:`AgentManagerClient._request`)
into the exception tree of :mod:`agent_manager.client.errors`.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

import httpx
from pydantic import BaseModel

from agent_manager import __version__
from agent_manager.client.errors import (
    AuthError,
    ClientError,
    Conflict,
    InvalidRequest,
    NotFound,
    ServerError,
    ServerUnavailable,
    StaleClaim,
    WaitTimeout,
)
from agent_manager.models import TaskStatus
from agent_manager.schemas import (
    AgentPublic,
    ClaimBatch,
    ClaimPublic,
    EventPublic,
    HeartbeatOut,
    LockPublic,
    ReleaseOut,
    ResultAck,
    ResultCreate,
    TaskCreated,
    TaskPage,
    TaskPublic,
)

log = logging.getLogger(__name__)

_UNAVAILABLE = frozenset({502, 503, 504})
_FINAL = frozenset(s.value for s in TaskStatus if s.is_final)


class AgentManagerClient:
    """Talks to one AgentManager server, or to the first reachable of several.

    ``base_url`` is one URL or a list of them (replicas behind no load balancer): a
    connection failure moves on to the next URL and stays there while it answers.
    ``transport`` lets tests plug in ``httpx.ASGITransport`` or a mock transport.
    Use it as ``async with AgentManagerClient(...) as client:`` or call :meth:`aclose`.
    """

    def __init__(
        self,
        base_url: str | Sequence[str],
        token: str | None = None,
        *,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        urls = [base_url] if isinstance(base_url, str) else builtins.list(base_url)
        if not urls or not all(isinstance(u, str) and u.strip() for u in urls):
            raise ValueError("base_url: give at least one server URL")
        self.base_urls = [u.strip().rstrip("/") for u in urls]
        self.timeout = timeout
        self._current = 0
        headers = {"User-Agent": f"agent-manager-client/{__version__}"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.AsyncClient(headers=headers, timeout=timeout, transport=transport)

    @property
    def base_url(self) -> str:
        """The URL requests go to now."""
        return self.base_urls[self._current]

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AgentManagerClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- tasks ------------------------------------------------------------------------

    async def submit(
        self,
        goal: str,
        steps: Sequence[BaseModel | Mapping[str, Any]] | None = None,
        options: BaseModel | Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> TaskCreated:
        """Submit a goal, with an optional explicit plan; returns the task id at once.

        The server validates the plan and answers a bad one with :class:`InvalidRequest`
        naming the step. With ``idempotency_key`` a repeated submit returns the first task.
        """
        body: dict[str, Any] = {"goal": goal}
        if steps is not None:
            body["steps"] = [_jsonable(s) for s in steps]
        if options is not None:
            body["options"] = _jsonable(options)
        if metadata is not None:
            body["metadata"] = dict(metadata)
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else None
        response = await self._request("POST", "/v1/tasks", json=body, headers=headers)
        return TaskCreated.model_validate_json(response.content)

    async def get(self, task_id: str, history: bool = False) -> TaskPublic:
        """The task with its steps and latest results (every attempt with ``history``)."""
        params = {"history": "true"} if history else None
        response = await self._request("GET", f"/v1/tasks/{task_id}", params=params)
        return TaskPublic.model_validate_json(response.content)

    async def list(
        self,
        status: str | Sequence[str] | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> TaskPage:
        """One page of tasks, newest first; pass ``page.next_cursor`` for the next."""
        params: dict[str, Any] = {"limit": limit}
        if status is not None:
            params["status"] = [status] if isinstance(status, str) else builtins.list(status)
        if cursor:
            params["cursor"] = cursor
        response = await self._request("GET", "/v1/tasks", params=params)
        return TaskPage.model_validate_json(response.content)

    async def wait(
        self, task_id: str, timeout: float | None = None, poll: float = 0.5
    ) -> TaskPublic:
        """Poll until the task is completed, failed or cancelled, and return it.

        An unreachable server is retried until ``timeout`` (seconds; ``None``: forever),
        after which :class:`WaitTimeout` is raised.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        last_error: ClientError | None = None
        while True:
            try:
                task = await self.get(task_id)
                if task.status in _FINAL:
                    return task
                last_error = None
            except ServerUnavailable as exc:
                last_error = exc
            if deadline is not None and time.monotonic() + poll > deadline:
                message = f"task '{task_id}' did not finish within {timeout:g}s"
                raise WaitTimeout(message) from last_error
            await asyncio.sleep(poll)

    async def cancel(self, task_id: str) -> TaskPublic:
        """Cancel a task; its workers learn it on their next heartbeat."""
        response = await self._request("POST", f"/v1/tasks/{task_id}/cancel")
        return TaskPublic.model_validate_json(response.content)

    async def events(
        self, task_id: str, after: int = 0, limit: int = 1000
    ) -> builtins.list[EventPublic]:
        """The task's events with an id above ``after``, oldest first (at most ``limit``).

        Pass the last id seen as ``after`` to read on from there: polling this way is
        what ``am watch`` and ``am logs --follow`` do.
        """
        response = await self._request(
            "GET",
            f"/v1/tasks/{task_id}/events",
            params={"after": after, "limit": limit},
            # The same path streams server-sent events for text/event-stream.
            headers={"Accept": "application/json"},
        )
        return [EventPublic.model_validate(e) for e in response.json()]

    async def agents(self) -> builtins.list[AgentPublic]:
        """The workers the server has seen, their roles and the steps they hold now."""
        response = await self._request("GET", "/v1/agents")
        return [AgentPublic.model_validate(a) for a in response.json()]

    # -- work ---------------------------------------------------------------------------

    async def claim(
        self,
        agent_id: str,
        roles: Sequence[str] | None = None,
        max: int = 1,
        wait: float = 0.0,
    ) -> builtins.list[ClaimPublic]:
        """Claim up to ``max`` ready steps of ``roles`` (default: the token's roles),
        long-polling up to ``wait`` seconds; an empty list when nothing was ready."""
        body: dict[str, Any] = {"agent_id": agent_id, "max": max, "wait": wait}
        if roles is not None:
            body["roles"] = builtins.list(roles)
        timeout = httpx.Timeout(self.timeout, read=self.timeout + wait)
        response = await self._request("POST", "/v1/claims", json=body, timeout=timeout)
        if response.status_code == 204:
            return []
        return ClaimBatch.model_validate_json(response.content).claims

    async def heartbeat(
        self,
        *,
        task_id: str,
        step_id: str,
        claim_token: str,
        agent_id: str | None = None,
        timeout: float | None = None,
    ) -> HeartbeatOut:
        """Extend a claim's lease. :class:`StaleClaim` when the claim is no longer ours;
        ``cancelled`` in the answer when its task was cancelled. ``timeout`` (seconds)
        overrides the client's, so that a slow answer cannot outlast the lease."""
        body = {"task_id": task_id, "claim_token": claim_token, "agent_id": agent_id}
        response = await self._request(
            "POST",
            f"/v1/steps/{step_id}/heartbeat",
            json=body,
            timeout=httpx.Timeout(timeout) if timeout is not None else None,
            conflict=StaleClaim,
        )
        return HeartbeatOut.model_validate_json(response.content)

    async def release(
        self, *, task_id: str, step_id: str, claim_token: str, agent_id: str | None = None
    ) -> bool:
        """Hand a claimed step back unrun: ready again at once, the attempt not spent.
        False when the claim was no longer current (nothing to hand back)."""
        body = {"task_id": task_id, "claim_token": claim_token, "agent_id": agent_id}
        response = await self._request(
            "POST", f"/v1/steps/{step_id}/release", json=body, conflict=StaleClaim
        )
        return ReleaseOut.model_validate_json(response.content).released

    async def report(self, result: ResultCreate) -> ResultAck:
        """Report one attempt's result. Sending the same report again is safe; a claim
        the server no longer wants a result for raises :class:`StaleClaim`."""
        response = await self._request(
            "POST", "/v1/results", json=result.model_dump(mode="json"), conflict=StaleClaim
        )
        return ResultAck.model_validate_json(response.content)

    async def lock(
        self,
        *,
        task_id: str,
        step_id: str,
        claim_token: str,
        path: str,
        mode: str,
        wait: float = 0.0,
    ) -> LockPublic:
        """Take an ad-hoc file lock for a claimed step, waiting up to ``wait`` seconds;
        :class:`Conflict` (naming the holder) when it is not granted in time."""
        body = {
            "task_id": task_id,
            "step_id": step_id,
            "claim_token": claim_token,
            "path": path,
            "mode": mode,
            "wait": wait,
        }
        timeout = httpx.Timeout(self.timeout, read=self.timeout + wait)
        response = await self._request("POST", "/v1/locks", json=body, timeout=timeout)
        return LockPublic.model_validate_json(response.content)

    async def unlock(self, *, lock_id: int, claim_token: str) -> None:
        """Release an ad-hoc lock before the step ends."""
        await self._request("DELETE", f"/v1/locks/{lock_id}", params={"claim_token": claim_token})

    # -- the one place that talks HTTP ------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: httpx.Timeout | None = None,
        conflict: type[Conflict] = Conflict,
    ) -> httpx.Response:
        for tries in range(1, len(self.base_urls) + 1):
            url = self.base_urls[self._current] + path
            try:
                response = await self._http.request(
                    method,
                    url,
                    json=json,
                    params=params,
                    headers=headers,
                    timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
                )
                response.raise_for_status()
                return response
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                # Nothing was sent, so any request may go to the next server.
                self._current = (self._current + 1) % len(self.base_urls)
                if tries < len(self.base_urls):
                    log.warning("cannot connect to %s; trying %s", url, self.base_url)
                    continue
                raise ServerUnavailable(f"cannot connect to {url}: {_describe(exc)}") from exc
            except httpx.TimeoutException as exc:
                raise ServerUnavailable(f"{method} {url} timed out") from exc
            except httpx.TransportError as exc:
                raise ServerUnavailable(f"{method} {url}: {_describe(exc)}") from exc
            except httpx.HTTPStatusError as exc:
                raise _translate(exc.response, conflict) from exc
        raise AssertionError("unreachable")  # the loop returns or raises


def _translate(response: httpx.Response, conflict: type[Conflict]) -> ClientError:
    """An error answer as one of our exceptions, with the server's code and message."""
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        message, code = body["message"], body.get("code")
        details = body.get("details") if isinstance(body.get("details"), dict) else None
    else:
        message, code, details = (response.text.strip()[:300] or response.reason_phrase), None, None
    cls: type[ClientError]
    if status in _UNAVAILABLE:
        cls = ServerUnavailable
    elif status in (401, 403):
        cls = AuthError
    elif status == 404:
        cls = NotFound
    elif status == 409:
        cls = conflict
    elif 400 <= status < 500:
        cls = InvalidRequest
    else:
        cls = ServerError
    return cls(f"HTTP {status}: {message}", status=status, code=code, details=details)


def _describe(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


def _jsonable(value: BaseModel | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_none=True)
    return dict(value)


__all__ = ["AgentManagerClient"]
