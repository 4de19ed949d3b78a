"""A Python client for AgentManager: submit and follow tasks, or serve roles as a worker.

* :class:`AgentManagerClient` — the HTTP API (``submit``, ``get``, ``list``, ``wait``,
  ``cancel``; and for workers ``claim``, ``heartbeat``, ``report``), with failover
  across several server URLs;
* :class:`Worker` — the worker loop: long-poll claims, heartbeats, reports with
  retries, backoff while the server is away, staged shutdown; register handlers with
  ``@worker.role("analyst")``;
* :func:`load_config` / :class:`WorkerConfig` — ``mcp_client_config.json`` plus
  ``AM_WORKER_*`` variables and flags; :func:`run_worker` runs one from it.

It talks to the server only over HTTP and never imports the server's modules.

Exceptions (see :mod:`agent_manager.client.errors`)::

    ClientError
    ├── ServerUnavailable    cannot connect, timed out, 502/503/504
    ├── ServerError          500
    ├── AuthError            401/403
    ├── NotFound             404
    ├── InvalidRequest       400/413/422
    ├── Conflict             409
    │   └── StaleClaim       409 on a heartbeat or report
    └── WaitTimeout          wait() ran out of time

    NonRetryable             raised by a handler: fail the step without retries
    ConfigError              the worker's configuration is missing or invalid
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from agent_manager.client.config import ConfigError, LLMConfig, WorkerConfig, load_config
from agent_manager.client.errors import (
    AuthError,
    ClientError,
    Conflict,
    InvalidRequest,
    NonRetryable,
    NotFound,
    ServerError,
    ServerUnavailable,
    StaleClaim,
    WaitTimeout,
)
from agent_manager.client.http import AgentManagerClient

if TYPE_CHECKING:
    from agent_manager.client.app import import_handler, run_worker
    from agent_manager.client.worker import Handler, Worker, WorkerStats, agent_handler

# The worker side imports the agents and the LLM SDK, which takes a second or more:
# it is loaded on first use, so that code that only submits and reads tasks (the
# `am` task commands, scripts) starts quickly.
_LAZY = {
    "import_handler": "app",
    "run_worker": "app",
    "Handler": "worker",
    "Worker": "worker",
    "WorkerStats": "worker",
    "agent_handler": "worker",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "AgentManagerClient",
    "AuthError",
    "ClientError",
    "ConfigError",
    "Conflict",
    "Handler",
    "InvalidRequest",
    "LLMConfig",
    "NonRetryable",
    "NotFound",
    "ServerError",
    "ServerUnavailable",
    "StaleClaim",
    "WaitTimeout",
    "Worker",
    "WorkerConfig",
    "WorkerStats",
    "agent_handler",
    "import_handler",
    "load_config",
    "run_worker",
]
