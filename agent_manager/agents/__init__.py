"""The built-in agents, independent of HTTP: planner, worker, auditor, synthesizer.

* :class:`Planner` — a goal in, a validated :class:`~agent_manager.models.TaskGraph` out;
* :class:`WorkerAgent` — runs one claimed step as a reasoning–acting loop with tools;
* :class:`AuditorAgent` — deterministic pre-checks plus an LLM review of all outputs;
* :class:`Synthesizer` — the final answer from the outputs and the audits;
* :class:`ToolRegistry` / :class:`Tool` — the tools a worker may call; add your own
  with ``@registry.tool``. :func:`default_registry` holds the built-in file tools
  (:mod:`agent_manager.agents.file_tools`), which are confined to the workspace.

All prompts live in :mod:`agent_manager.agents.prompts`. Every agent talks to the model
only through :class:`~agent_manager.llm.LLMClient`, so tests use
:class:`~agent_manager.llm.ScriptedModel`.

Errors: :class:`PlanningFailed` (an :class:`~agent_manager.errors.AgentManagerError`)
when no valid plan comes after the allowed attempts; :class:`ToolError`, raised inside
tools, only ever reaches the model as an ``"error: …"`` observation.
"""

from __future__ import annotations

from agent_manager.agents.auditor import AuditorAgent, merge_reports, precheck_outputs
from agent_manager.agents.file_tools import default_registry, file_tools
from agent_manager.agents.planner import Planner, PlanningFailed
from agent_manager.agents.synthesizer import Synthesis, Synthesizer
from agent_manager.agents.tools import (
    FINAL_ANSWER,
    LockFactory,
    Tool,
    ToolContext,
    ToolError,
    ToolRegistry,
    no_lock,
)
from agent_manager.agents.worker import StepOutcome, WorkerAgent

__all__ = [
    "FINAL_ANSWER",
    "AuditorAgent",
    "LockFactory",
    "Planner",
    "PlanningFailed",
    "StepOutcome",
    "Synthesis",
    "Synthesizer",
    "Tool",
    "ToolContext",
    "ToolError",
    "ToolRegistry",
    "WorkerAgent",
    "default_registry",
    "file_tools",
    "merge_reports",
    "no_lock",
    "precheck_outputs",
]
