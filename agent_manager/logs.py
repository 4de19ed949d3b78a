"""Logging: one JSON object per line for machines, plain text for people, and the ids
of the step at hand on every line.

:func:`configure_logging` installs one handler on the root logger; uvicorn's loggers
propagate into it, so access and server lines share the format. :func:`bind_context`
(a ``with`` block) and :func:`set_context` (the rest of the current task) set the
``task_id`` / ``step_id`` / ``agent_id`` of the work being done; a filter on the handler
copies them into every record. Tasks started inside such a block inherit the ids
(``asyncio`` copies the context into a new task), so a step's heartbeats and tool calls
carry them too.

This module depends on nothing else in the package: the server and the worker both
use it.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import IO, Any, Literal

#: The ids a record can carry, in the order they are shown.
CONTEXT_KEYS = ("task_id", "step_id", "agent_id")
LogFormat = Literal["auto", "json", "text"]

_context: ContextVar[tuple[tuple[str, str], ...]] = ContextVar("am_log_context", default=())

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("", logging.INFO, "", 0, "", (), None)).keys()
    | {"message", "asctime", "color_message", "taskName"}
)


def _merged(ids: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    current = dict(_context.get())
    for key, value in ids.items():
        if key not in CONTEXT_KEYS:
            raise TypeError(f"unknown log context key {key!r}; use one of {CONTEXT_KEYS}")
        if value is None:
            current.pop(key, None)
        else:
            current[key] = str(value)
    return tuple((k, current[k]) for k in CONTEXT_KEYS if k in current)


@contextmanager
def bind_context(
    *, task_id: str | None = None, step_id: str | None = None, agent_id: str | None = None
) -> Iterator[None]:
    """Within the block, every line logged (here and in tasks started here) carries
    these ids; ids not given keep their outer values."""
    ids = {"task_id": task_id, "step_id": step_id, "agent_id": agent_id}
    token = _context.set(_merged({k: v for k, v in ids.items() if v is not None}))
    try:
        yield
    finally:
        _context.reset(token)


def set_context(
    *, task_id: str | None = None, step_id: str | None = None, agent_id: str | None = None
) -> None:
    """Set ids for the rest of the current asyncio task.

    Meant for request handlers: each request runs in its own task, so the ids end with
    it, and the access log line written as the response goes out carries them too.
    """
    ids = {"task_id": task_id, "step_id": step_id, "agent_id": agent_id}
    _context.set(_merged({k: v for k, v in ids.items() if v is not None}))


def current_context() -> dict[str, str]:
    """The ids bound here, e.g. ``{"task_id": "…", "step_id": "a"}``."""
    return dict(_context.get())


class ContextFilter(logging.Filter):
    """Copies the bound ids onto each record (an id given with ``extra=`` wins)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.get():
            if getattr(record, key, None) is None:
                setattr(record, key, value)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time``, ``level``, ``logger``, ``message``, the bound
    ids, any ``extra=`` fields, and ``exception`` with the traceback when there is one.

    uvicorn's access lines also get ``method``, ``path``, ``status`` and ``client``.
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in CONTEXT_KEYS:
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = value
        if record.name == "uvicorn.access" and isinstance(record.args, tuple):
            entry.update(_access_fields(record.args))
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and key not in entry and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        line = json.dumps(entry, default=str, ensure_ascii=False)
        # Keep one record on one line even for readers that split on Unicode separators.
        return line.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def _access_fields(args: tuple[Any, ...]) -> dict[str, Any]:
    # uvicorn logs access lines as (client, method, path, http version, status).
    if len(args) != 5:
        return {}
    client, method, path, _, status = args
    return {"method": method, "path": path, "status": status, "client": client}


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message [task_id=… step_id=…]`` for a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        text = super().formatMessage(record)
        ids = " ".join(
            f"{key}={value}"
            for key in CONTEXT_KEYS
            if (value := getattr(record, key, None)) is not None
        )
        return f"{text} [{ids}]" if ids else text


def resolve_format(fmt: str, stream: IO[str]) -> Literal["json", "text"]:
    """``auto`` is text on a terminal and JSON otherwise (a container, a file, a pipe)."""
    if fmt == "json":
        return "json"
    if fmt == "text":
        return "text"
    if fmt != "auto":
        raise ValueError(f"unknown log format {fmt!r}: use auto, json or text")
    try:
        return "text" if stream.isatty() else "json"
    except (AttributeError, ValueError):  # closed or odd streams
        return "json"


def configure_logging(
    level: str | int = "info", fmt: str = "auto", *, stream: IO[str] | None = None
) -> Literal["json", "text"]:
    """Send all logging (uvicorn's too) to ``stream`` (stderr) in one format.

    Replaces the root logger's handlers, so calling it again reconfigures. Returns the
    format chosen (``auto`` resolved).
    """
    stream = stream if stream is not None else sys.stderr
    resolved = resolve_format(fmt, stream)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if resolved == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    logging.captureWarnings(True)  # Python warnings too, in the same format
    # uvicorn's own dictConfig gives its loggers handlers of their own; the server runs
    # uvicorn without it (log_config=None), and these make sure its lines come here.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            logger.removeHandler(old)
        logger.setLevel(logging.NOTSET)  # the root's level decides
        logger.propagate = True
    return resolved


__all__ = [
    "CONTEXT_KEYS",
    "ContextFilter",
    "JsonFormatter",
    "LogFormat",
    "TextFormatter",
    "bind_context",
    "configure_logging",
    "current_context",
    "resolve_format",
    "set_context",
]
