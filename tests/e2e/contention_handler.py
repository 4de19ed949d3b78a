"""The handler of the file-contention test: ``--handler tests.e2e.contention_handler:run``.

Each step works on the one file it declares, three operations long, each under the
worker-side OS lock of its mode, and logs the step's interval and every operation's
interval (JSON lines) to ``AM_TEST_HANDLER_LOG``.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

from agent_manager.client.locking import os_lock
from agent_manager.schemas import ClaimPublic

_log = open(os.environ["AM_TEST_HANDLER_LOG"], "a", buffering=1)  # noqa: SIM115
WORKSPACE = Path(os.environ["AM_TEST_WORKSPACE"])


def _write(record: dict[str, object]) -> None:
    _log.write(json.dumps(record) + "\n")


async def run(claim: ClaimPublic) -> str:
    (spec,) = claim.step.files
    path = WORKSPACE / spec.path
    step_start = time.time()
    for n in range(3):
        async with os_lock(path, spec.mode):
            start = time.time()
            if spec.mode == "read":
                if path.exists():
                    text = path.read_text()
                    # A reader must never see half a line: the writers' lines are whole.
                    assert all(line.startswith("line ") for line in text.splitlines())
            else:
                with path.open("a") as f:
                    f.write(f"line {claim.step.id} {n}\n")
            await asyncio.sleep(0.01)
            end = time.time()
        _write({"kind": "op", "step": claim.step.id, "mode": spec.mode, "start": start, "end": end})
        await asyncio.sleep(0.005)
    _write(
        {
            "kind": "step",
            "step": claim.step.id,
            "mode": spec.mode,
            "start": step_start,
            "end": time.time(),
        }
    )
    return "ok"
