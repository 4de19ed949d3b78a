"""The role handler the end-to-end worker tests load: ``--handler tests.e2e.handlers:run``.

The step's instruction says what to do: empty or ``noop`` (nothing), or
``sleep <seconds>``. Each worker process appends one line per event to the file named
by ``AM_TEST_HANDLER_LOG``, so a test can tell which process ran what, and when::

    start <task_id> <step_id> <attempt> <claim_token>
    done <task_id> <step_id> <attempt>
"""

from __future__ import annotations

import asyncio
import os

from agent_manager.schemas import ClaimPublic

# Line-buffered appends: every line reaches the file whole, even if the process is
# SIGKILLed right after writing it.
_log = open(os.environ["AM_TEST_HANDLER_LOG"], "a", buffering=1)  # noqa: SIM115


async def run(claim: ClaimPublic) -> dict[str, str]:
    step = claim.step
    _log.write(f"start {claim.task_id} {step.id} {step.attempt} {claim.claim_token}\n")
    words = step.instruction.split()
    if words[:1] == ["sleep"]:
        await asyncio.sleep(float(words[1]))
    _log.write(f"done {claim.task_id} {step.id} {step.attempt}\n")
    return {"step": step.id, "pid": str(os.getpid())}
