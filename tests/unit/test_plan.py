"""Plan validation without I/O: shapes, every problem named by step, cycles, paths."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import pytest

from agent_manager.errors import InvalidPlan, InvalidRequest
from agent_manager.models import FileSpec, TaskStep
from agent_manager.plan import check_path, find_cycle, normalize_path, validate_plan


def plan(shape: dict[str, list[str]], role: str = "worker") -> list[TaskStep]:
    return [TaskStep(id=sid, role=role, depends_on=deps) for sid, deps in shape.items()]


def problems_of(steps: list[TaskStep], **kwargs: object) -> list[str]:
    with pytest.raises(InvalidPlan) as caught:
        validate_plan(steps, **kwargs)  # type: ignore[arg-type]
    assert caught.value.problems, "InvalidPlan without problems"
    assert caught.value.details == {"problems": caught.value.problems}
    for problem in caught.value.problems:
        assert problem in caught.value.message
    return caught.value.problems


def assert_closed_cycle(cycle: list[str] | None, steps: list[TaskStep]) -> None:
    """``cycle`` is a closed path where each id is a dependency of the next."""
    assert cycle is not None
    assert len(cycle) >= 2
    assert cycle[0] == cycle[-1]
    deps = {s.id: set(s.depends_on) for s in steps}
    for before, after in itertools.pairwise(cycle):
        assert before in deps[after], (before, after, cycle)
    assert len(set(cycle[:-1])) == len(cycle) - 1, "a cycle visits each step once"


# -- acyclic shapes ---------------------------------------------------------------------

SHAPES = {
    "single": {"a": []},
    "independent": {"a": [], "b": [], "c": []},
    "chain": {"a": [], "b": ["a"], "c": ["b"], "d": ["c"]},
    "chain_listed_backwards": {"d": ["c"], "c": ["b"], "b": ["a"], "a": []},
    "fan_out": {"root": [], "x": ["root"], "y": ["root"], "z": ["root"]},
    "fan_in": {"x": [], "y": [], "z": [], "sink": ["x", "y", "z"]},
    "diamond": {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]},
    "two_components": {"a": [], "b": ["a"], "p": [], "q": ["p"]},
    "shortcut_edge": {"a": [], "b": ["a"], "c": ["a", "b"]},
}


@pytest.mark.parametrize("name", list(SHAPES))
def test_acyclic_shapes_are_accepted(name: str) -> None:
    shape = SHAPES[name]
    steps = plan(shape)
    assert find_cycle(steps) is None
    checked = validate_plan(steps)
    assert [s.id for s in checked.steps] == list(shape)
    assert checked.roots == tuple(sid for sid, deps in shape.items() if not deps)
    # dependents is the exact reverse of depends_on.
    assert set(checked.dependents) == set(shape)
    reverse = {(dep, sid) for sid, deps in shape.items() for dep in deps}
    assert {(sid, d) for sid, ds in checked.dependents.items() for d in ds} == reverse


def test_validated_paths_are_normalized() -> None:
    steps = [
        TaskStep(
            id="a",
            role="worker",
            files=[
                FileSpec(path="./notes/./a.md"),
                FileSpec(path="src\\pkg\\mod.py", mode="write"),
            ],
        )
    ]
    checked = validate_plan(steps)
    assert [f.path for f in checked.steps[0].files] == ["notes/a.md", "src/pkg/mod.py"]
    assert [f.mode for f in checked.steps[0].files] == ["read", "write"]
    # The caller's objects are left alone.
    assert steps[0].files[0].path == "./notes/./a.md"


# -- problems, each named by its step --------------------------------------------------


def test_empty_plan_is_refused() -> None:
    assert problems_of([]) == ["the plan has no steps"]


def test_invalid_plan_is_an_invalid_request() -> None:
    with pytest.raises(InvalidRequest) as caught:
        validate_plan(plan({"a": ["a"]}))
    assert caught.value.code == "invalid_plan"


def test_every_problem_is_listed_with_its_step_id() -> None:
    steps = [
        TaskStep(id="dup", role="worker"),
        TaskStep(id="dup", role="writer"),
        TaskStep(id="blank", role="   "),
        TaskStep(id="boss", role="planner"),
        TaskStep(id="lost", role="worker", depends_on=["ghost"]),
        TaskStep(id="twice", role="worker", depends_on=["dup", "dup"]),
        TaskStep(id="me", role="worker", depends_on=["me"]),
        TaskStep(id="abs", role="worker", files=[FileSpec(path="/etc/passwd")]),
        TaskStep(id="up", role="worker", files=[FileSpec(path="a/../../x")]),
        TaskStep(id="drive", role="worker", files=[FileSpec(path="C:\\x")]),
        TaskStep(
            id="again",
            role="worker",
            files=[FileSpec(path="x/y"), FileSpec(path="./x/y", mode="write")],
        ),
    ]
    problems = problems_of(steps)
    expected = {
        "dup": "duplicate step id",
        "blank": "role is empty",
        "boss": "reserved",
        "lost": "unknown step 'ghost'",
        "twice": "dependency 'dup' twice",
        "me": "depends on itself",
        "abs": "'/etc/passwd' is absolute",
        "up": "'a/../../x' escapes the workspace",
        "drive": "'C:\\x' is absolute",
        "again": "'./x/y' is declared twice",
    }
    for sid, words in expected.items():
        assert any(p.startswith(f"step '{sid}':") and words in p for p in problems), (
            sid,
            words,
            problems,
        )
    assert len(problems) == len(expected)


def test_reserved_roles_are_allowed_when_the_server_plans_for_itself() -> None:
    steps = [TaskStep(id=role, role=role) for role in ("planner", "auditor", "synthesizer")]
    assert len(problems_of(steps)) == 3
    assert len(validate_plan(steps, allow_reserved_roles=True).steps) == 3


def test_self_dependency_is_named_and_is_a_cycle() -> None:
    steps = plan({"a": [], "loop": ["a", "loop"]})
    assert problems_of(steps) == ["step 'loop': depends on itself"]
    assert find_cycle(steps) == ["loop", "loop"]


# -- cycles ------------------------------------------------------------------------------

CYCLES = {
    "two": {"a": ["b"], "b": ["a"]},
    "three": {"a": ["c"], "b": ["a"], "c": ["b"]},
    "behind_a_root": {"root": [], "a": ["root", "c"], "b": ["a"], "c": ["b"], "leaf": ["c"]},
    "after_acyclic_part": {"x": [], "y": ["x"], "p": ["q"], "q": ["r"], "r": ["p"]},
    "in_a_diamond": {"a": ["d"], "b": ["a"], "c": ["a"], "d": ["b", "c"]},
}


@pytest.mark.parametrize("name", list(CYCLES))
def test_cycle_path_closes_on_itself(name: str) -> None:
    steps = plan(CYCLES[name])
    cycle = find_cycle(steps)
    assert_closed_cycle(cycle, steps)
    problems = problems_of(steps)
    assert problems == [f"steps form a cycle: {' -> '.join(cycle or [])}"]


def test_cycle_reports_only_the_steps_on_it() -> None:
    steps = plan({"root": [], "a": ["root", "c"], "b": ["a"], "c": ["b"], "leaf": ["c"]})
    cycle = find_cycle(steps)
    assert cycle is not None
    assert set(cycle) == {"a", "b", "c"}


# -- long plans --------------------------------------------------------------------------

N = 5_000


def test_long_chain_is_accepted_without_recursion() -> None:
    steps = [
        TaskStep(id=f"s{i}", role="worker", depends_on=[f"s{i - 1}"] if i else []) for i in range(N)
    ]
    # Far deeper than the recursion limit would allow a recursive search.
    assert sys.getrecursionlimit() < N * 2
    assert find_cycle(steps) is None
    checked = validate_plan(steps)
    assert checked.roots == ("s0",)
    assert checked.dependents[f"s{N - 2}"] == [f"s{N - 1}"]
    assert checked.dependents[f"s{N - 1}"] == []


def test_long_chain_listed_backwards_is_accepted() -> None:
    steps = [
        TaskStep(id=f"s{i}", role="worker", depends_on=[f"s{i - 1}"] if i else [])
        for i in reversed(range(N))
    ]
    assert find_cycle(steps) is None
    assert validate_plan(steps).roots == ("s0",)


def test_long_cycle_is_found_without_recursion() -> None:
    steps = [TaskStep(id=f"s{i}", role="worker", depends_on=[f"s{(i - 1) % N}"]) for i in range(N)]
    cycle = find_cycle(steps)
    assert_closed_cycle(cycle, steps)
    assert cycle is not None and len(cycle) == N + 1


def test_wide_fan_in_is_accepted() -> None:
    steps = [TaskStep(id=f"w{i}", role="worker") for i in range(N)]
    steps.append(TaskStep(id="sink", role="writer", depends_on=[s.id for s in steps[:256]]))
    checked = validate_plan(steps)
    assert len(checked.roots) == N
    assert checked.dependents["w0"] == ["sink"]


# -- paths -------------------------------------------------------------------------------

SAFE = ["a", "notes/research.md", "./a", "a/./b", "dir/", "a b/c d.txt", "..x/y", "x..", "~/x"]
UNSAFE = {
    "/etc/passwd": "absolute",
    "//server/share": "absolute",
    "C:\\x": "absolute",
    "C:/x": "absolute",
    "\\\\server\\share\\x": "absolute",
    "C:x": "drive letter",
    "..": "..",
    "../x": "..",
    "a/../../x": "..",
    "a\\..\\..\\x": "..",
    # '..' is refused even where it would stay inside: nothing to gain, easy to get wrong.
    "a/b/../c": "..",
    "": "workspace itself",
    ".": "workspace itself",
    "./": "workspace itself",
    "a\x00b": "NUL",
    # Rooted: on Windows the current drive's root; with '/' for '\\' it is '/etc/passwd'.
    "\\etc\\passwd": "absolute",
    "\\x": "absolute",
}


@pytest.mark.parametrize("path", SAFE)
def test_safe_paths_pass(path: str) -> None:
    assert check_path(path) is None


@pytest.mark.parametrize("path", list(UNSAFE))
def test_unsafe_paths_say_why(path: str) -> None:
    reason = check_path(path)
    assert reason is not None, f"{path!r} was accepted"
    assert UNSAFE[path] in reason


def test_accepted_paths_normalize_to_relative_ones() -> None:
    # Whatever check_path lets through must stay inside the workspace once normalized.
    for path in [*SAFE, *UNSAFE]:
        if check_path(path) is None:
            normal = normalize_path(path)
            assert not normal.startswith("/"), (path, normal)
            assert ".." not in normal.split("/"), (path, normal)


@pytest.mark.parametrize(
    ("path", "normal"),
    [
        ("a", "a"),
        ("./a", "a"),
        ("a/./b", "a/b"),
        ("a//b", "a/b"),
        ("a/b/", "a/b"),
        ("a\\b\\c.txt", "a/b/c.txt"),
        ("./notes/./x.md", "notes/x.md"),
    ],
)
def test_normalize_path(path: str, normal: str) -> None:
    assert normalize_path(path) == normal
    assert normalize_path(normal) == normal


def test_symlinks_inside_the_workspace_are_followed(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    outside = tmp_path / "outside"
    (workspace / "real").mkdir(parents=True)
    outside.mkdir()
    (workspace / "inner").symlink_to(workspace / "real", target_is_directory=True)
    (workspace / "escape").symlink_to(outside, target_is_directory=True)
    (workspace / "passwd").symlink_to("/etc/passwd")
    (workspace / "up").symlink_to("..", target_is_directory=True)

    assert check_path("inner/file.txt", workspace) is None
    assert check_path("up/ws/file.txt", workspace) is None  # out and back in: still inside
    assert check_path("not/yet/created.txt", workspace) is None
    for path in ["escape/secret.txt", "escape", "passwd", "up/outside/x"]:
        reason = check_path(path, workspace)
        assert reason is not None and "symlink" in reason, (path, reason)

    steps = [TaskStep(id="leak", role="worker", files=[FileSpec(path="escape/x")])]
    assert problems_of(steps, workspace=workspace) == [
        "step 'leak': file 'escape/x' escapes the workspace through a symlink"
    ]
    # Without the workspace folder the same plan has nothing to resolve against.
    assert validate_plan(steps, workspace=tmp_path / "missing").steps[0].files[0].path == "escape/x"
