"""LLM access: validated structured output from a real endpoint or a scripted stand-in.

* :class:`LLMClient` — the seam the agents use (``complete(messages, schema, context)``);
* :class:`OpenAIClient` — any OpenAI-compatible endpoint through the official SDK;
* :class:`ScriptedModel` — deterministic, offline, for the demo and tests (not an LLM);
* :func:`build_llm_client` — pick one from settings read at the edge.
"""

from __future__ import annotations

import ipaddress
import os
from urllib.parse import urlparse

from agent_manager.llm.base import (
    CallContext,
    LLMClient,
    LLMConfigError,
    LLMError,
    LLMOutputInvalid,
    LLMRequestRejected,
    LLMResponse,
    LLMUnavailable,
    Message,
    describe_validation_error,
)
from agent_manager.llm.openai_provider import STRUCTURED_MODES, OpenAIClient, StructuredMode
from agent_manager.llm.scripted import Rule, Scenario, ScriptedCall, ScriptedModel

#: Provider names accepted by :func:`build_llm_client`; ``offline`` is SPEC §7's name
#: for the scripted provider.
PROVIDERS = ("openai", "scripted", "offline")

# Servers people run next to the worker (Ollama, llama.cpp, vLLM, LM Studio) rarely
# check keys, but the SDK refuses to start without one.
_LOCAL_HOSTS = {"localhost", "0.0.0.0", "host.docker.internal"}
LOCAL_PLACEHOLDER_KEY = "not-needed-for-local-endpoints"


def build_llm_client(
    *,
    provider: str,
    base_url: str | None = None,
    model: str | None = None,
    api_key: str | None = None,
    timeout: float = 60.0,
    structured_mode: str = "auto",
    scenario_path: str | None = None,
    scripted_latency: float = 0.0,
) -> LLMClient:
    """Build the client the settings ask for (``AM_LLM_PROVIDER`` = openai | scripted).

    For ``openai`` the key falls back to ``OPENAI_API_KEY``; a ``base_url`` on this
    machine works without one. Raises :class:`LLMConfigError` naming the variable to set.
    """
    kind = (provider or "").strip().lower()
    if kind in ("scripted", "offline"):
        scenario = Scenario.from_file(scenario_path) if scenario_path else None
        return ScriptedModel(scenario, latency=scripted_latency)
    if kind != "openai":
        raise LLMConfigError(
            f"unknown LLM provider {provider!r}; set AM_LLM_PROVIDER to one of "
            f"{', '.join(PROVIDERS)}"
        )
    if not model:
        raise LLMConfigError(
            "no LLM model configured for the openai provider; set AM_LLM_MODEL "
            "(e.g. gpt-4o-mini, or the model name your local server serves), "
            "or use AM_LLM_PROVIDER=scripted for the offline demo model"
        )
    if structured_mode not in STRUCTURED_MODES:
        raise LLMConfigError(
            f"unknown structured output mode {structured_mode!r}; set AM_LLM_STRUCTURED_MODE "
            f"to one of {', '.join(STRUCTURED_MODES)}"
        )
    if timeout <= 0:
        raise LLMConfigError(f"LLM timeout must be positive, got {timeout}; fix AM_LLM_TIMEOUT")
    key = api_key or os.environ.get("OPENAI_API_KEY")
    if not key:
        if not _is_local(base_url):
            where = base_url or "the OpenAI API"
            raise LLMConfigError(
                f"no API key for {where}; set OPENAI_API_KEY (or AM_LLM_API_KEY), or point "
                "AM_LLM_BASE_URL at a local server that needs none"
            )
        key = LOCAL_PLACEHOLDER_KEY
    return OpenAIClient(
        model=model,
        base_url=base_url,
        api_key=key,
        timeout=timeout,
        structured_mode=structured_mode,  # type: ignore[arg-type]  # checked above
    )


def _is_local(base_url: str | None) -> bool:
    if not base_url:
        return False
    host = urlparse(base_url).hostname or ""
    if host in _LOCAL_HOSTS or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


__all__ = [
    "LOCAL_PLACEHOLDER_KEY",
    "PROVIDERS",
    "STRUCTURED_MODES",
    "CallContext",
    "LLMClient",
    "LLMConfigError",
    "LLMError",
    "LLMOutputInvalid",
    "LLMRequestRejected",
    "LLMResponse",
    "LLMUnavailable",
    "Message",
    "OpenAIClient",
    "Rule",
    "Scenario",
    "ScriptedCall",
    "ScriptedModel",
    "StructuredMode",
    "build_llm_client",
    "describe_validation_error",
]
