"""Log lines: JSON objects carrying the ids bound in context, or text for a terminal."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest

from agent_manager.logs import bind_context, configure_logging, current_context, set_context


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """configure_logging replaces the root handlers (pytest's capture among them)."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    for handler in root.handlers[:]:
        root.removeHandler(handler)
    for handler in handlers:
        root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(False)


def json_lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_json_lines_carry_the_bound_ids() -> None:
    out = io.StringIO()
    assert configure_logging("info", "json", stream=out) == "json"
    log = logging.getLogger("agent_manager.test")
    log.info("before")
    with bind_context(task_id="t-1", agent_id="w1"):
        log.info("claimed %s", "s1")
        with bind_context(step_id="s1"):
            log.warning("inner")
        log.debug("below the level")
    log.error("after")
    lines = json_lines(out)
    assert [line["message"] for line in lines] == ["before", "claimed s1", "inner", "after"]
    first, claimed, inner, after = lines
    assert set(first) == {"time", "level", "logger", "message"}
    assert first["logger"] == "agent_manager.test" and first["level"] == "info"
    assert first["time"].endswith("Z") and "T" in first["time"]
    assert claimed["task_id"] == "t-1" and claimed["agent_id"] == "w1"
    assert "step_id" not in claimed
    assert (inner["task_id"], inner["step_id"], inner["agent_id"]) == ("t-1", "s1", "w1")
    assert inner["level"] == "warning"
    assert "task_id" not in after and current_context() == {}


def test_tasks_started_in_a_bound_block_keep_its_ids() -> None:
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    log = logging.getLogger("agent_manager.test")

    async def step_work() -> None:
        await asyncio.sleep(0)
        log.info("heartbeat")

    async def main() -> None:
        with bind_context(task_id="t-2", step_id="a"):
            task = asyncio.create_task(step_work())
        await task  # the block has ended; the task kept a copy of the context
        set_context(task_id="t-3")  # the rest of this task (a request handler's way)
        log.info("reported")

    asyncio.run(main())
    heartbeat, reported = json_lines(out)
    assert (heartbeat["task_id"], heartbeat["step_id"]) == ("t-2", "a")
    assert reported["task_id"] == "t-3" and "step_id" not in reported


def test_extra_fields_exceptions_and_one_line_per_record() -> None:
    out = io.StringIO()
    configure_logging("debug", "json", stream=out)
    log = logging.getLogger("agent_manager.test")
    with bind_context(task_id="t-4", step_id="bound"):
        log.info("explicit ids win", extra={"step_id": "given", "attempt": 2})
        try:
            raise ValueError("boom\nsecond line")
        except ValueError:
            log.exception("it failed")
        log.info("odd characters: \u2028 ünïcode")
    explicit, failed, odd = json_lines(out)
    assert explicit["step_id"] == "given" and explicit["attempt"] == 2
    assert explicit["task_id"] == "t-4"
    assert failed["level"] == "error" and "ValueError: boom" in failed["exception"]
    assert odd["message"] == "odd characters: \u2028 ünïcode"
    assert len(out.getvalue().split("\n")) == 4  # three lines and the final newline


def test_uvicorn_access_lines_are_json_with_request_fields() -> None:
    out = io.StringIO()
    configure_logging("info", "json", stream=out)
    access = logging.getLogger("uvicorn.access")
    access.addHandler(logging.StreamHandler(io.StringIO()))  # as uvicorn's own config would
    configure_logging("info", "json", stream=out)  # and ours takes it back
    with bind_context(task_id="t-5", step_id="s"):
        access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "POST", "/v1/results", "1.1", 200)
    (line,) = json_lines(out)
    assert line["logger"] == "uvicorn.access"
    assert line["message"] == '127.0.0.1:5000 - "POST /v1/results HTTP/1.1" 200'
    assert (line["method"], line["path"], line["status"]) == ("POST", "/v1/results", 200)
    assert (line["task_id"], line["step_id"]) == ("t-5", "s")


def test_text_format_for_people_and_auto_by_terminal() -> None:
    terminal = FakeTerminal()
    assert configure_logging("info", "auto", stream=terminal) == "text"
    log = logging.getLogger("agent_manager.test")
    with bind_context(task_id="t-6", step_id="s2"):
        log.warning("lease lapsed")
    log.info("plain")
    first, second = terminal.getvalue().splitlines()
    assert " WARNING agent_manager.test: lease lapsed [task_id=t-6 step_id=s2]" in first
    assert second.endswith("INFO    agent_manager.test: plain")
    assert configure_logging("info", "auto", stream=io.StringIO()) == "json"  # not a TTY


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="log format"):
        configure_logging("info", "yaml", stream=io.StringIO())
