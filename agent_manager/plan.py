"""Validation of a plan: the rules an explicit plan and a planner's plan both obey.

Shared by the server, the planner agent and the worker's tools (workspace paths), so it
lives outside the server's packages.

Pure functions, no I/O except the optional symlink check against a workspace folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

from agent_manager.errors import InvalidPlan
from agent_manager.models import RESERVED_ROLES, TaskStep


@dataclass(frozen=True, slots=True)
class CheckedPlan:
    """A plan that passed validation, with what scheduling needs precomputed."""

    steps: tuple[TaskStep, ...]
    dependents: dict[str, list[str]]
    roots: tuple[str, ...]


def check_path(path: str, workspace: Path | None = None) -> str | None:
    """Why ``path`` is not a safe workspace-relative path, or None when it is."""
    if "\x00" in path:
        return "contains a NUL byte"
    windows = PureWindowsPath(path)
    # A rooted Windows path ("\\etc") has no drive but is absolute all the same.
    if PurePosixPath(path).is_absolute() or windows.is_absolute() or windows.root:
        return "is absolute; paths are relative to the workspace"
    if PureWindowsPath(path).drive:
        return "has a drive letter; paths are relative to the workspace"
    parts = PurePosixPath(path.replace("\\", "/")).parts
    if ".." in parts:
        return "escapes the workspace with '..'"
    if not parts or parts == (".",):
        return "names the workspace itself, not a file in it"
    if workspace is not None and workspace.exists():
        root = workspace.resolve()
        target = (root / PurePosixPath(*parts)).resolve()
        if target != root and root not in target.parents:
            return "escapes the workspace through a symlink"
    return None


def normalize_path(path: str) -> str:
    """The canonical spelling of a checked path: forward slashes, no '.' segments."""
    return PurePosixPath(path.replace("\\", "/")).as_posix().removeprefix("./")


def validate_plan(
    steps: Sequence[TaskStep],
    *,
    workspace: Path | None = None,
    allow_reserved_roles: bool = False,
) -> CheckedPlan:
    """Check ``steps`` and return them ready to schedule, or raise :class:`InvalidPlan`.

    Every problem found is listed, each naming the step it is about.
    """
    problems: list[str] = []
    if not steps:
        raise InvalidPlan(["the plan has no steps"])

    ids: set[str] = set()
    for step in steps:
        if step.id in ids:
            problems.append(f"step '{step.id}': duplicate step id")
        ids.add(step.id)

    for step in steps:
        if not step.role.strip():
            problems.append(f"step '{step.id}': role is empty")
        elif step.role in RESERVED_ROLES and not allow_reserved_roles:
            problems.append(
                f"step '{step.id}': role '{step.role}' is reserved for the server's own agents"
            )
        seen: set[str] = set()
        for dep in step.depends_on:
            if dep == step.id:
                problems.append(f"step '{step.id}': depends on itself")
            elif dep not in ids:
                problems.append(f"step '{step.id}': depends on unknown step '{dep}'")
            elif dep in seen:
                problems.append(f"step '{step.id}': lists dependency '{dep}' twice")
            seen.add(dep)
        paths: set[str] = set()
        for spec in step.files:
            reason = check_path(spec.path, workspace)
            if reason:
                problems.append(f"step '{step.id}': file '{spec.path}' {reason}")
            elif normalize_path(spec.path) in paths:
                problems.append(f"step '{step.id}': file '{spec.path}' is declared twice")
            paths.add(normalize_path(spec.path))

    if problems:
        raise InvalidPlan(problems)

    cycle = find_cycle(steps)
    if cycle:
        raise InvalidPlan([f"steps form a cycle: {' -> '.join(cycle)}"])

    dependents: dict[str, list[str]] = {step.id: [] for step in steps}
    for step in steps:
        for dep in step.depends_on:
            dependents[dep].append(step.id)
    normalized = tuple(
        step.model_copy(
            update={
                "files": [f.model_copy(update={"path": normalize_path(f.path)}) for f in step.files]
            }
        )
        for step in steps
    )
    roots = tuple(step.id for step in steps if not step.depends_on)
    return CheckedPlan(steps=normalized, dependents=dependents, roots=roots)


def find_cycle(steps: Sequence[TaskStep]) -> list[str] | None:
    """One cycle of the dependency graph as a closed path of ids, or None if acyclic."""
    graph = {step.id: list(step.depends_on) for step in steps}
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(graph, white)
    for start in graph:
        if colour[start] != white:
            continue
        # Iterative DFS so a long chain cannot hit the recursion limit.
        stack: list[tuple[str, int]] = [(start, 0)]
        path: list[str] = []
        while stack:
            node, index = stack.pop()
            if index == 0:
                colour[node] = grey
                path.append(node)
            deps = graph.get(node, [])
            if index < len(deps):
                stack.append((node, index + 1))
                nxt = deps[index]
                if colour.get(nxt) == grey:
                    cycle = [*path[path.index(nxt) :], nxt]
                    return list(reversed(cycle))
                if colour.get(nxt) == white:
                    stack.append((nxt, 0))
            else:
                colour[node] = black
                path.pop()
    return None
