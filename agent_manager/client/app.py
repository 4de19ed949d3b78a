"""A :class:`~agent_manager.client.config.WorkerConfig` turned into a running worker.

Shared by ``am worker`` and ``client_worker.py``: import the configured handler or
build the built-in agent from the LLM settings, make the HTTP client, run.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
from typing import Any

from agent_manager.agents import WorkerAgent
from agent_manager.client.config import ConfigError, LLMConfig, WorkerConfig
from agent_manager.client.http import AgentManagerClient
from agent_manager.client.worker import Handler, Worker, WorkerStats, agent_handler
from agent_manager.llm import LLMClient, LLMConfigError, build_llm_client

log = logging.getLogger(__name__)


def import_handler(spec: str) -> Handler:
    """The function ``spec`` names as ``"module:function"``, imported as ``python -m``
    would (the current directory first). Raises :class:`ConfigError` when it cannot."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError([f'handler {spec!r}: give "module:function", e.g. "my_handlers:run"'])
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise ConfigError(
                [
                    f"handler {spec!r}: no module named {exc.name!r} — check the spelling and "
                    "run the worker from the directory that holds it (or set PYTHONPATH)"
                ]
            ) from None
        raise ConfigError([f"handler {spec!r}: importing {module_name} failed: {exc}"]) from None
    except Exception as exc:  # the user's module raised while importing
        raise ConfigError(
            [f"handler {spec!r}: importing {module_name} failed: {type(exc).__name__}: {exc}"]
        ) from None
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ConfigError(
                [f"handler {spec!r}: {module_name} has no attribute {attr!r}"]
            ) from None
    if not callable(target):
        raise ConfigError([f"handler {spec!r}: {attr} is not a function"])
    return target  # type: ignore[no-any-return]


def build_llm(llm: LLMConfig) -> LLMClient:
    """The LLM client for the built-in agent; :class:`ConfigError` when misconfigured."""
    provider = llm.resolved_provider()
    try:
        client = build_llm_client(
            provider=provider,
            base_url=llm.base_url,
            model=llm.model,
            api_key=llm.api_key.get_secret_value() if llm.api_key else None,
            timeout=llm.timeout,
            structured_mode=llm.structured_mode,
            scenario_path=str(llm.scenario) if llm.scenario else None,
            scripted_latency=llm.scripted_latency,
        )
    except LLMConfigError as exc:
        raise ConfigError([f"llm: {exc.message}"]) from None
    except (OSError, ValueError) as exc:  # e.g. an unreadable scenario file
        raise ConfigError([f"llm: {exc}"]) from None
    if client.name == "scripted":
        log.warning(
            "the built-in agent uses the scripted model: NOT an LLM, a demo and test "
            'backend; for a real one set "llm" in the config, or AM_LLM_MODEL / OPENAI_API_KEY'
        )
    return client


async def run_worker(
    config: WorkerConfig, *, burst: bool = False, install_signal_handlers: bool = True
) -> WorkerStats:
    """Run a worker as ``config`` describes until it stops; return what it did."""
    async with contextlib.AsyncExitStack() as stack:
        client = AgentManagerClient(
            config.server_url, config.auth_token.get_secret_value(), timeout=config.timeout
        )
        stack.push_async_callback(client.aclose)
        if config.handler:
            default: Handler = import_handler(config.handler)
        else:
            llm = build_llm(config.llm)
            stack.push_async_callback(llm.aclose)
            agent = WorkerAgent(llm, max_iterations=config.llm.max_iterations)
            # With the client, a tool touching an undeclared path asks the server for
            # an ad-hoc lock first.
            default = agent_handler(agent, workspace=config.workspace, client=client)
        worker = Worker(
            client,
            config.client_id,
            config.roles or None,
            concurrency=config.concurrency,
            workspace=config.workspace,
            poll_wait=config.polling_interval_sec,
            burst=burst,
            grace_seconds=config.grace_seconds,
            install_signal_handlers=install_signal_handlers,
            default_handler=default,
        )
        await worker.run()
        return worker.stats


__all__ = ["build_llm", "import_handler", "run_worker"]
