"""Worker-side locks: OS locks exclude as the modes say; undeclared paths ask first."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from pathlib import Path

import pytest

from agent_manager.agents.tools import ToolError
from agent_manager.client.locking import StepLocks, os_lock


def _hold(path: str, mode: str, seconds: float, ready: multiprocessing.Event) -> None:  # type: ignore[valid-type]
    async def go() -> None:
        async with os_lock(Path(path), mode):  # type: ignore[arg-type]
            ready.set()
            await asyncio.sleep(seconds)

    asyncio.run(go())


def hold_in_another_process(path: Path, mode: str, seconds: float) -> multiprocessing.Process:
    ready = multiprocessing.get_context("spawn").Event()
    proc = multiprocessing.get_context("spawn").Process(
        target=_hold, args=(str(path), mode, seconds, ready)
    )
    proc.start()
    assert ready.wait(20), "the other process did not take its lock"
    return proc


async def timed(path: Path, mode: str) -> float:
    start = time.monotonic()
    async with os_lock(path, mode):  # type: ignore[arg-type]
        pass
    return time.monotonic() - start


@pytest.mark.parametrize(
    ("held", "wanted", "blocks"),
    [
        ("write", "read", True),
        ("write", "write", True),
        ("read", "write", True),
        ("read", "read", False),
        ("exclusive", "read", True),
    ],
)
async def test_os_locks_across_processes(
    tmp_path: Path, held: str, wanted: str, blocks: bool
) -> None:
    target = tmp_path / "shared.txt"
    target.write_text("x")
    other = hold_in_another_process(target, held, 1.5)
    try:
        waited = await timed(target, wanted)
    finally:
        other.join(10)
    if blocks:
        assert waited > 0.75, f"{wanted} went through beside a held {held}"
    else:
        assert waited < 0.75, f"{wanted} waited for a held {held}"


async def test_undeclared_paths_are_locked_on_the_server_first(tmp_path: Path) -> None:
    asked: list[tuple[str, str, float]] = []

    async def request(path: str, mode: str, wait: float) -> None:
        asked.append((path, mode, wait))
        if path == "taken.txt":
            raise RuntimeError("'taken.txt' is locked (write) by step 'other'")

    locks = StepLocks(tmp_path, {"mine.txt": "write"}, request, wait=2)
    async with locks("mine.txt", "read"):  # covered by the declared write
        pass
    async with locks("new.txt", "write"):
        pass
    async with locks("new.txt", "read"):  # now held: not asked again
        pass
    with pytest.raises(ToolError, match="locked \\(write\\) by step 'other'"):
        async with locks("taken.txt", "read"):
            pass
    assert asked == [("new.txt", "write", 2), ("taken.txt", "read", 2)]
