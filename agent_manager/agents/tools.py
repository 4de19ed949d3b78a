"""Tools an agent can call from its reasoning–acting loop, and the registry that runs them.

A :class:`Tool` is a name, a description, a Pydantic input model and an async
``run(args, ctx) -> str``. A :class:`ToolRegistry` holds the tools of one agent,
describes them for the prompt and executes a call by name. Whatever goes wrong in a
call — an unknown tool, input that does not fit the model, a path outside the
workspace, a missing file, a tool that raises or takes too long — comes back as an
observation starting with ``"error:"``, so the model can correct itself and the step
goes on; only cancellation propagates.

Add your own tools with the decorator::

    registry = default_registry()   # from agent_manager.agents.file_tools

    class Fetch(BaseModel):
        url: str

    @registry.tool
    async def fetch(args: Fetch, ctx: ToolContext) -> str:
        \"\"\"Fetch a web page and return its text.\"\"\"
        ...

:meth:`ToolContext.resolve` confines a path to the workspace (no absolute paths, no
``..``, no symlinks out of it); the built-in file tools in
:mod:`agent_manager.agents.file_tools` use it, and run each file operation inside
``ctx.lock(path, mode)``, an async context manager factory: the default takes no lock,
and the worker plugs in OS-level and server-side file locks there.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints

from pydantic import BaseModel, ValidationError

from agent_manager.errors import AgentManagerError
from agent_manager.llm.base import describe_validation_error
from agent_manager.models import FileMode
from agent_manager.plan import check_path, normalize_path

log = logging.getLogger(__name__)

#: ``lock(path, mode)`` → an async context manager held around one file operation.
#: ``path`` is workspace-relative with forward slashes.
LockFactory = Callable[[str, FileMode], AbstractAsyncContextManager[Any]]
ToolFunc = Callable[[Any, "ToolContext"], Awaitable[str]]

#: The action name that ends the loop; no tool may take it.
FINAL_ANSWER = "final_answer"
_TOOL_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")


class ToolError(AgentManagerError):
    """The tool call could not be carried out.

    Raise it from a tool with a message for the model; the registry turns it into an
    ``"error: …"`` observation.
    """

    code = "tool_error"


@asynccontextmanager
async def no_lock(path: str, mode: FileMode) -> AsyncIterator[None]:
    """The default lock factory: takes no lock at all."""
    yield


@dataclass(frozen=True, slots=True)
class ToolContext:
    """Where a tool call runs: the shared workspace, the step it serves, and its locks."""

    workspace: Path
    task_id: str | None = None
    step_id: str | None = None
    lock: LockFactory = no_lock

    def resolve(self, path: str) -> Path:
        """The real location of workspace-relative ``path``; raises :class:`ToolError`
        when it is absolute, uses ``..``, or leads outside the workspace through a symlink.
        """
        if not isinstance(path, str) or not path.strip():
            raise ToolError("a path is required")
        if not self.workspace.is_dir():
            raise ToolError(f"the workspace {self.workspace} does not exist")
        reason = check_path(path, self.workspace)
        if reason:
            raise ToolError(f"path '{path}' {reason}")
        root = self.workspace.resolve()
        target = (root / normalize_path(path)).resolve()
        # check_path already resolved it once; checking the path we actually use as
        # well closes the gap should a symlink appear in between.
        if target != root and root not in target.parents:
            raise ToolError(f"path '{path}' escapes the workspace through a symlink")
        return target

    def relative(self, target: Path) -> str:
        """``target`` (already resolved inside the workspace) as a workspace-relative path."""
        rel = target.relative_to(self.workspace.resolve()).as_posix()
        return rel or "."


@dataclass(frozen=True)
class Tool:
    """One tool: what the model sees (name, description, input schema) and what runs.

    Either pass ``func`` (``async (args, ctx) -> str``) or subclass and override
    :meth:`run`. ``args`` is an instance of ``input_model``.
    """

    name: str
    description: str
    input_model: type[BaseModel]
    func: ToolFunc | None = field(default=None, repr=False)

    async def run(self, args: Any, ctx: ToolContext) -> str:
        """Carry out the call; raise :class:`ToolError` for problems the model should see."""
        if self.func is None:
            raise NotImplementedError(f"tool {self.name!r} has no function; override run()")
        return await self.func(args, ctx)

    def input_schema(self) -> dict[str, Any]:
        """The input model's JSON schema without the noise (titles) models do not need."""
        return _strip_titles(self.input_model.model_json_schema())


class ToolRegistry:
    """The tools one agent may call, by name.

    ``timeout`` bounds each call (seconds, ``None`` for no bound) so that a stuck tool
    or a lock that is never granted ends as an observation instead of a hung step.
    """

    def __init__(self, tools: Iterable[Tool] = (), *, timeout: float | None = 60.0) -> None:
        self._tools: dict[str, Tool] = {}
        self.timeout = timeout
        for tool in tools:
            self.register(tool)

    def register(self, tool: Tool) -> Tool:
        """Add ``tool``; a name that is taken, reserved or malformed raises ``ValueError``."""
        if not _TOOL_NAME.match(tool.name):
            raise ValueError(
                f"tool name {tool.name!r} must start with a letter and use only "
                "letters, digits and '_' (at most 64 characters)"
            )
        if tool.name == FINAL_ANSWER:
            raise ValueError(f"{FINAL_ANSWER!r} is the loop's own action, not a tool")
        if tool.name in self._tools:
            raise ValueError(f"a tool named {tool.name!r} is already registered")
        self._tools[tool.name] = tool
        return tool

    def tool(
        self,
        func: ToolFunc | None = None,
        *,
        name: str | None = None,
        description: str | None = None,
        input_model: type[BaseModel] | None = None,
    ) -> Any:
        """Register an ``async def f(args: Model, ctx: ToolContext) -> str`` as a tool.

        Usable bare (``@registry.tool``) or with overrides (``@registry.tool(name=…)``).
        The name defaults to the function's, the description to its docstring, the
        input model to the annotation of its first parameter.
        """

        def decorate(fn: ToolFunc) -> ToolFunc:
            model = input_model or _first_param_model(fn)
            text = description or inspect.getdoc(fn) or ""
            if not text.strip():
                raise ValueError(f"tool {fn.__name__!r} needs a description or a docstring")
            self.register(
                Tool(
                    name=name or fn.__name__,
                    description=text.strip(),
                    input_model=model,
                    func=fn,
                )
            )
            return fn

        return decorate(func) if func is not None else decorate

    def get(self, name: str) -> Tool | None:
        """The tool called ``name``, or ``None``."""
        return self._tools.get(name)

    @property
    def names(self) -> list[str]:
        """The registered tool names, in registration order."""
        return list(self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> Iterator[Tool]:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)

    def describe(self) -> str:
        """The tool list for a prompt: each name, description and input JSON schema."""
        if not self._tools:
            return "(no tools are available: answer with final_answer)"
        blocks = []
        for tool in self:
            schema = json.dumps(tool.input_schema(), ensure_ascii=False, separators=(",", ":"))
            blocks.append(f"- {tool.name}: {tool.description}\n  input schema: {schema}")
        return "\n".join(blocks)

    async def execute(self, name: str, action_input: Any, ctx: ToolContext) -> str:
        """Run one call and return its observation; never raises except on cancellation."""
        tool = self._tools.get(name)
        if tool is None:
            available = ", ".join([*self._tools, FINAL_ANSWER])
            return f"error: unknown tool '{name}'; the available actions are: {available}"
        try:
            args = tool.input_model.model_validate(_coerce_input(action_input, tool.input_model))
        except ValidationError as exc:
            schema = json.dumps(tool.input_schema(), separators=(",", ":"))
            return (
                f"error: invalid input for tool '{name}': {describe_validation_error(exc)}; "
                f"action_input must match {schema}"
            )
        try:
            async with asyncio.timeout(self.timeout):
                result = await tool.run(args, ctx)
        except TimeoutError:
            return f"error: tool '{name}' did not finish within {self.timeout:g}s"
        except AgentManagerError as exc:  # ToolError, and e.g. LockConflict from the lock hook
            return f"error: {exc.message}"
        except OSError as exc:
            return f"error: {name} failed: {exc.strerror or exc}"
        except Exception as exc:
            # A bug in a (possibly user-written) tool must not kill the step; the model
            # sees the failure and the log keeps the traceback for the developer.
            log.exception("tool %r raised", name)
            return f"error: tool '{name}' failed: {type(exc).__name__}: {exc}"
        return result if isinstance(result, str) else str(result)


def _coerce_input(action_input: Any, model: type[BaseModel]) -> Any:
    """Accept what models commonly send besides an object: JSON in a string, a bare value
    for a one-field tool, or nothing for a tool whose fields all have defaults."""
    if isinstance(action_input, str):
        text = action_input.strip()
        if text.startswith("{"):
            try:
                return json.loads(text)
            except ValueError:
                pass
    if action_input is None:
        return {}
    if not isinstance(action_input, dict):
        required = [n for n, f in model.model_fields.items() if f.is_required()]
        if len(required) == 1:
            return {required[0]: action_input}
    return action_input


def _first_param_model(fn: Callable[..., Any]) -> type[BaseModel]:
    params = list(inspect.signature(fn).parameters)
    try:
        hints = get_type_hints(fn)
    except NameError as exc:
        # A model defined inside a function cannot be found from a string annotation
        # (``from __future__ import annotations``); the caller must name it.
        raise ValueError(
            f"tool {getattr(fn, '__name__', fn)!r}: cannot resolve its annotations ({exc}); "
            "pass input_model="
        ) from exc
    model = hints.get(params[0]) if params else None
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        raise ValueError(
            f"tool {getattr(fn, '__name__', fn)!r}: annotate its first parameter with a "
            "Pydantic model, or pass input_model="
        )
    return model


def _strip_titles(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: _strip_titles(v) for k, v in schema.items() if k != "title"}
    if isinstance(schema, list):
        return [_strip_titles(v) for v in schema]
    return schema


__all__ = [
    "FINAL_ANSWER",
    "LockFactory",
    "Tool",
    "ToolContext",
    "ToolError",
    "ToolFunc",
    "ToolRegistry",
    "no_lock",
]
