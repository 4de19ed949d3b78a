"""File locks on the worker's side, for the tools of one claimed step.

Each file operation of a tool runs inside ``StepLocks(path, mode)``:

* a path the step did not declare (or declared only for reading, and now writes) is
  first locked on the server with an ad-hoc lock (``POST /v1/locks``), waiting up to
  ``wait`` seconds; a conflict becomes a :class:`ToolError`, which the RA loop sees as
  an ``error: …`` observation naming the holder;
* then the real file is locked at the OS level with portalocker — shared for reading,
  exclusive for writing — for the length of the operation, so a reader beside a
  writer (which the server's matrix allows) always sees the file whole, also across
  processes and machines sharing the workspace.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, Any

import portalocker

from agent_manager.agents.tools import ToolError
from agent_manager.models import FileMode
from agent_manager.schemas import ClaimPublic

#: ``request(path, mode, wait)`` asks the server for an ad-hoc lock; raises on conflict.
LockRequest = Callable[[str, FileMode, float], Awaitable[Any]]

_COVERS = {
    "exclusive": {"read", "write", "exclusive"},
    "write": {"read", "write"},
    "read": {"read"},
}


class StepLocks:
    """The lock factory handed to a step's tools (``WorkerAgent.run(lock=…)``)."""

    def __init__(
        self,
        workspace: Path,
        declared: dict[str, FileMode],
        request: LockRequest | None = None,
        *,
        wait: float = 10.0,
    ) -> None:
        self.workspace = workspace
        self.held: dict[str, FileMode] = dict(declared)
        self.request = request
        self.wait = wait

    @classmethod
    def for_claim(
        cls,
        claim: ClaimPublic,
        workspace: Path,
        lock: Callable[..., Awaitable[Any]] | None,
        *,
        wait: float = 10.0,
    ) -> StepLocks:
        """The locks of one claimed step: its declared files, and ``lock`` (the HTTP
        client's ``lock`` or the manager's ``acquire_lock``) for the rest."""
        request: LockRequest | None = None
        if lock is not None:

            async def request(path: str, mode: FileMode, wait: float) -> None:
                await lock(
                    task_id=claim.task_id,
                    step_id=claim.step.id,
                    claim_token=claim.claim_token,
                    path=path,
                    mode=mode,
                    wait=wait,
                )

        declared = {f.path: f.mode for f in claim.step.files}
        return cls(workspace, declared, request, wait=wait)

    @asynccontextmanager
    async def __call__(self, path: str, mode: FileMode) -> AsyncIterator[None]:
        if mode not in _COVERS.get(self.held.get(path, ""), set()):
            await self._ask_server(path, mode)
        async with os_lock(self.workspace / path, mode):
            yield

    async def _ask_server(self, path: str, mode: FileMode) -> None:
        if self.request is None:
            raise ToolError(
                f"'{path}' was not declared by this step and no server is available to lock it"
            )
        try:
            await self.request(path, mode, self.wait)
        except Exception as exc:  # the server's refusal, told to the model
            message = getattr(exc, "message", None) or str(exc)
            raise ToolError(f"could not lock '{path}' for {mode}: {message}") from exc
        self.held[path] = mode


@asynccontextmanager
async def os_lock(target: Path, mode: FileMode) -> AsyncIterator[None]:
    """Hold a shared (read) or exclusive (write, exclusive) OS lock on ``target``.

    A read of a file that does not exist takes no lock (there is nothing to read);
    a write opens the file for appending (creating it) only to lock it. The blocking
    lock call runs in a thread so the event loop keeps serving heartbeats.
    """
    if mode == "read" and not await asyncio.to_thread(target.exists):
        yield
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    handle: IO[bytes] = await asyncio.to_thread(open, target, "rb" if mode == "read" else "ab")
    flags = portalocker.LOCK_SH if mode == "read" else portalocker.LOCK_EX
    try:
        await asyncio.to_thread(portalocker.lock, handle, flags)
        try:
            yield
        finally:
            portalocker.unlock(handle)
    finally:
        handle.close()
