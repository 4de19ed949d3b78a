"""Bad input over real HTTP: the right 4xx, a JSON error a person can act on, nothing written.

Every refusal is checked three ways: the status, the body (``code``, ``message``,
``details``, with the key words a reader needs — the step id, the field, the problem)
and the database afterwards (no task, step, result or event row was left behind).
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from agent_manager.db.tables import EventORM, FileAccessORM, ResultORM, TaskGraphORM, TaskStepORM
from tests.server import LiveServer

TABLES = (TaskGraphORM, TaskStepORM, ResultORM, EventORM, FileAccessORM)
EMPTY = {orm.__tablename__: 0 for orm in TABLES}


# -- helpers ------------------------------------------------------------------------


async def row_counts(server: LiveServer) -> dict[str, int]:
    """How many rows each table that a request could write holds."""
    async with server.manager.db.sessions() as session:
        return {
            orm.__tablename__: int(await session.scalar(select(func.count()).select_from(orm)) or 0)
            for orm in TABLES
        }


def assert_error(r: httpx.Response, status: int, code: str, *words: str) -> dict[str, Any]:
    """``r`` is the JSON error ``status``/``code`` whose message holds every one of ``words``."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json"), r.headers
    body = r.json()
    assert set(body) == {"code", "message", "details"}, body
    assert body["code"] == code, body
    assert isinstance(body["details"], dict), body
    message = body["message"]
    assert isinstance(message, str) and message.strip(), body
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    return body


async def snapshot(server: LiveServer) -> tuple[dict[str, int], list[str]]:
    """The row counts and the task ids ``GET /v1/tasks`` lists."""
    async with server.client() as client:
        r = await client.get("/v1/tasks", params={"limit": 500})
    assert r.status_code == 200, r.text
    return await row_counts(server), [t["id"] for t in r.json()["items"]]


async def assert_nothing_written(
    server: LiveServer, before: tuple[dict[str, int], list[str]] = (EMPTY, [])
) -> None:
    """Nothing was written since ``before`` (by default: since the server started empty)."""
    assert await snapshot(server) == before


def step(sid: str, role: str = "worker", deps: list[str] | None = None, **extra: Any) -> dict:
    return {"id": sid, "role": role, "instruction": f"do {sid}", "depends_on": deps or [], **extra}


def submission(*steps: dict) -> dict:
    return {"goal": "a goal that will never run", "steps": list(steps)}


async def submit_one(client: httpx.AsyncClient, role: str = "worker") -> str:
    r = await client.post("/v1/tasks", json=submission(step("only", role)))
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def claim(client: httpx.AsyncClient, role: str = "worker") -> dict:
    r = await client.get("/v1/tasks/ready", params={"agent_id": "w1", "role": role})
    assert r.status_code == 200, r.text
    return dict(r.json())


def report(c: dict, **overrides: Any) -> dict:
    return {
        "task_id": c["task_id"],
        "step_id": c["step"]["id"],
        "claim_token": c["claim_token"],
        "agent_id": "w1",
        "status": "success",
        "output": "the answer",
        **overrides,
    }


async def step_state(client: httpx.AsyncClient, task_id: str, step_id: str) -> dict:
    r = await client.get(f"/v1/tasks/{task_id}")
    assert r.status_code == 200, r.text
    return next(s for s in r.json()["steps"] if s["id"] == step_id)


# -- plans ----------------------------------------------------------------------------

BAD_PLANS = {
    "unknown_dependency": (
        submission(step("research"), step("report", deps=["research", "ghost"])),
        ["step 'report'", "'ghost'", "unknown"],
    ),
    "duplicate_ids": (
        submission(step("twin"), step("twin", role="writer")),
        ["step 'twin'", "duplicate"],
    ),
    "self_dependency": (
        submission(step("loop", deps=["loop"])),
        ["step 'loop'", "itself"],
    ),
    "empty_role": (
        submission(step("lonely", role="")),
        ["step 'lonely'", "role", "empty"],
    ),
    "whitespace_role": (
        submission(step("blank", role=" \t ")),
        ["step 'blank'", "role", "empty"],
    ),
    "reserved_role": (
        submission(step("sneaky", role="auditor")),
        ["step 'sneaky'", "'auditor'", "reserved"],
    ),
    "absolute_path": (
        submission(step("reader", files=[{"path": "/etc/passwd", "mode": "read"}])),
        ["step 'reader'", "'/etc/passwd'", "absolute"],
    ),
    "dotdot_path": (
        submission(step("climber", files=[{"path": "../x", "mode": "write"}])),
        ["step 'climber'", "'../x'", "escapes", ".."],
    ),
    "dotdot_inside_path": (
        submission(step("climber", files=[{"path": "a/../../x", "mode": "write"}])),
        ["step 'climber'", "'a/../../x'", "escapes", ".."],
    ),
    "windows_drive_path": (
        submission(step("win", files=[{"path": "C:\\x", "mode": "read"}])),
        ["step 'win'", "'C:\\x'", "absolute"],
    ),
    # Rooted on the current drive on Windows; '/etc/passwd' once backslashes become '/'.
    "backslash_rooted_path": (
        submission(step("win", files=[{"path": "\\etc\\passwd", "mode": "read"}])),
        ["step 'win'", "'\\etc\\passwd'", "absolute"],
    ),
    "every_problem_listed": (
        submission(
            step("one", role=""),
            step("two", deps=["nowhere"]),
            step("three", files=[{"path": "/abs", "mode": "read"}]),
        ),
        ["step 'one'", "step 'two'", "'nowhere'", "step 'three'", "'/abs'"],
    ),
}


async def test_bad_plan_is_refused_naming_the_step_and_nothing_is_written(
    server: LiveServer, subtests: pytest.Subtests
) -> None:
    # One server for every case (subtests keep the failures apart): a server per case
    # would spend most of the run starting servers.
    async with server.client() as client:
        for case, (body, words) in BAD_PLANS.items():
            with subtests.test(case):
                before = await snapshot(server)
                r = await client.post("/v1/tasks", json=body)
                error = assert_error(r, 422, "invalid_plan", *words)
                # Each problem is also listed on its own for programs.
                assert error["details"]["problems"], error
                assert all(p.startswith("step '") for p in error["details"]["problems"]), error
                await assert_nothing_written(server, before)


async def test_cyclic_plan_is_refused_naming_the_cycle(server: LiveServer) -> None:
    body = submission(
        step("draft", deps=["revise"]),
        step("review", deps=["draft"]),
        step("revise", deps=["review"]),
        step("outside"),
    )
    async with server.client() as client:
        r = await client.post("/v1/tasks", json=body)
    error = assert_error(r, 422, "invalid_plan", "cycle")
    match = re.search(r"cycle: ([\w.-]+(?: -> [\w.-]+)+)", error["message"])
    assert match, error["message"]
    path = match.group(1).split(" -> ")
    assert path[0] == path[-1], path  # a closed path the reader can follow
    assert set(path) == {"draft", "review", "revise"}, path
    assert len(path) == 4, path
    await assert_nothing_written(server)


def make_escaping_symlink(workspace: Path, outside: Path) -> None:
    """``workspace/link`` points at ``outside``, which holds a secret."""
    outside.mkdir()
    (outside / "secret.txt").write_text("do not touch")
    workspace.mkdir(parents=True, exist_ok=True)
    (workspace / "inside.txt").write_text("fine")
    (workspace / "link").symlink_to(outside, target_is_directory=True)


async def test_path_escaping_through_a_symlink_is_refused(
    server: LiveServer, tmp_path: Path
) -> None:
    make_escaping_symlink(Path(server.settings.workspace), tmp_path / "outside")
    body = submission(
        step("ok", files=[{"path": "inside.txt", "mode": "read"}]),
        step("leak", files=[{"path": "link/secret.txt", "mode": "write"}]),
    )
    async with server.client() as client:
        r = await client.post("/v1/tasks", json=body)
    assert_error(r, 422, "invalid_plan", "step 'leak'", "'link/secret.txt'", "symlink")
    await assert_nothing_written(server)


BAD_BODIES = {
    "empty_steps": ({"goal": "g", "steps": []}, ["steps", "at least one step"]),
    "missing_goal": ({"steps": [step("a")]}, ["goal", "required"]),
    "blank_goal": ({"goal": "   ", "steps": [step("a")]}, ["goal"]),
    "unknown_field": ({"goal": "g", "bogus": 1}, ["bogus", "not permitted"]),
    "unknown_step_field": (
        {"goal": "g", "steps": [{**step("a"), "colour": "red"}]},
        ["steps.0.colour", "not permitted"],
    ),
    "bad_step_id": ({"goal": "g", "steps": [step("has space")]}, ["steps.0.id"]),
    "bad_file_mode": (
        {"goal": "g", "steps": [step("a", files=[{"path": "x", "mode": "append"}])]},
        ["steps.0.files.0.mode"],
    ),
    "array_body": (["goal", "g"], ["body", "dictionary"]),
    "string_body": ("just a goal", ["body", "dictionary"]),
    "number_body": (42, ["body", "dictionary"]),
}


async def test_invalid_submission_names_the_field(
    server: LiveServer, subtests: pytest.Subtests
) -> None:
    async with server.client() as client:
        for case, (body, words) in BAD_BODIES.items():
            with subtests.test(case):
                before = await snapshot(server)
                r = await client.post("/v1/tasks", json=body)
                error = assert_error(r, 422, "validation_error", *words)
                assert error["details"]["errors"], error
                assert all({"field", "problem"} <= set(e) for e in error["details"]["errors"])
                await assert_nothing_written(server, before)


async def test_malformed_json_is_a_400(server: LiveServer) -> None:
    async with server.client() as client:
        r = await client.post(
            "/v1/tasks",
            content=b'{"goal": "unfinished',
            headers={"Content-Type": "application/json"},
        )
    assert_error(r, 400, "malformed_json", "not valid JSON", "position")
    await assert_nothing_written(server)


# -- size limit -----------------------------------------------------------------------


async def test_body_over_the_limit_with_content_length_is_a_413(server: LiveServer) -> None:
    limit = server.settings.max_request_bytes
    body = json.dumps({"goal": "x" * (limit + 10)}).encode()
    async with server.client() as client:
        r = await client.post(
            "/v1/tasks", content=body, headers={"Content-Type": "application/json"}
        )
    error = assert_error(r, 413, "payload_too_large", str(limit))
    assert error["details"]["max_bytes"] == limit
    await assert_nothing_written(server)


async def test_chunked_body_over_the_limit_is_a_413(server: LiveServer) -> None:
    limit = server.settings.max_request_bytes
    chunk = b"x" * 65_536

    async def stream() -> AsyncIterator[bytes]:
        yield b'{"goal": "'
        for _ in range(limit // len(chunk) + 2):
            yield chunk
        yield b'"}'

    async with server.client() as client:
        r = await client.post(
            "/v1/tasks", content=stream(), headers={"Content-Type": "application/json"}
        )
    assert "content-length" not in r.request.headers
    assert r.request.headers["transfer-encoding"] == "chunked"
    assert_error(r, 413, "payload_too_large", str(limit))
    await assert_nothing_written(server)


# -- authentication and authorization ---------------------------------------------


BAD_CREDENTIALS = {
    # case: (Authorization header or None, words the message must hold)
    "missing_token": (None, ["Bearer"]),
    "invalid_token": ("Bearer am_not_a_real_token", ["Unknown or revoked"]),
    "malformed_header": ("Token abc", ["Authorization", "Bearer <token>"]),
    "bearer_without_token": ("Bearer", ["Bearer <token>"]),
}


async def test_bad_credentials_are_a_401_with_a_challenge(
    server: LiveServer, subtests: pytest.Subtests
) -> None:
    for case, (header, words) in BAD_CREDENTIALS.items():
        with subtests.test(case):
            async with server.client(token=None) as client:
                if header is not None:
                    client.headers["Authorization"] = header
                r = await client.post("/v1/tasks", json=submission(step("a")))
            assert_error(r, 401, "unauthorized", *words)
            assert r.headers["www-authenticate"] == "Bearer"
            await assert_nothing_written(server)


async def test_work_token_cannot_claim_a_role_it_is_not_given(server: LiveServer) -> None:
    analyst = await server.token("work", roles=["analyst"])
    async with server.client() as admin:
        task_id = await submit_one(admin, role="writer")
        async with server.client(analyst) as worker:
            r = await worker.get("/v1/tasks/ready", params={"agent_id": "w1", "role": "writer"})
            assert_error(r, 403, "forbidden", "writer", "analyst")
            # The seed's alias with the role in the path is guarded the same way.
            r = await worker.get("/v1/tasks/writer/ready", params={"agent_id": "w1"})
            assert_error(r, 403, "forbidden", "writer")
        only = await step_state(admin, task_id, "only")
    assert only["status"] == "ready"
    assert only["agent_id"] is None


async def test_submit_token_cannot_claim(server: LiveServer) -> None:
    submitter = await server.token("submit")
    async with server.client() as admin:
        task_id = await submit_one(admin)
        async with server.client(submitter) as client:
            r = await client.get("/v1/tasks/ready", params={"agent_id": "w1", "role": "worker"})
        assert_error(r, 403, "forbidden", "'work'")
        assert (await step_state(admin, task_id, "only"))["status"] == "ready"


async def test_read_token_cannot_submit(server: LiveServer) -> None:
    reader = await server.token("read")
    async with server.client(reader) as client:
        r = await client.post("/v1/tasks", json=submission(step("a")))
    assert_error(r, 403, "forbidden", "'submit'")
    await assert_nothing_written(server)


# -- claiming -------------------------------------------------------------------------


async def test_claim_without_agent_id_names_agent_id(server: LiveServer) -> None:
    async with server.client() as client:
        task_id = await submit_one(client)
        r = await client.get("/v1/tasks/ready", params={"role": "worker"})
        assert_error(r, 422, "validation_error", "agent_id")
        assert (await step_state(client, task_id, "only"))["status"] == "ready"


async def test_claim_with_wait_out_of_range(server: LiveServer, subtests: pytest.Subtests) -> None:
    assert server.settings.max_claim_wait == 60
    cases = {"61": ("invalid_request", ["wait", "60"]), "-1": ("validation_error", ["wait"])}
    async with server.client() as client:
        task_id = await submit_one(client)
        for wait, (code, words) in cases.items():
            with subtests.test(wait=wait):
                r = await client.get(
                    "/v1/tasks/ready", params={"agent_id": "w1", "role": "worker", "wait": wait}
                )
                assert_error(r, 422, code, *words)
                assert (await step_state(client, task_id, "only"))["status"] == "ready"


async def test_claim_with_no_role(server: LiveServer, subtests: pytest.Subtests) -> None:
    async with server.client() as client:
        task_id = await submit_one(client)
        for role in [None, "", " , "]:
            with subtests.test(role=role):
                params = {"agent_id": "w1"} | ({"role": role} if role is not None else {})
                r = await client.get("/v1/tasks/ready", params=params)
                assert_error(r, 422, "invalid_request", "role")
                assert (await step_state(client, task_id, "only"))["status"] == "ready"


# -- heartbeats and reports -----------------------------------------------------------


async def test_heartbeat_of_an_unknown_step_is_a_404(server: LiveServer) -> None:
    async with server.client() as client:
        task_id = await submit_one(client)
        r = await client.post(
            "/v1/steps/nope/heartbeat", json={"task_id": task_id, "claim_token": "x"}
        )
        assert_error(r, 404, "not_found", task_id, "'nope'")
        r = await client.post(
            "/v1/steps/only/heartbeat", json={"task_id": "no-such-task", "claim_token": "x"}
        )
        assert_error(r, 404, "not_found", "no task 'no-such-task'")


async def test_report_for_an_unknown_step_is_a_404(server: LiveServer) -> None:
    async with server.client() as client:
        task_id = await submit_one(client)
        c = await claim(client)
        r = await client.post("/v1/results", json=report(c, step_id="nope"))
        assert_error(r, 404, "not_found", task_id, "'nope'")
        r = await client.post("/v1/results", json=report(c, task_id="no-such-task"))
        assert_error(r, 404, "not_found", "no-such-task")
        assert (await step_state(client, task_id, "only"))["status"] == "claimed"
    assert (await row_counts(server))["results"] == 0


async def test_report_with_a_wrong_claim_token_is_a_409_and_changes_nothing(
    server: LiveServer,
) -> None:
    async with server.client() as client:
        task_id = await submit_one(client)
        c = await claim(client)
        r = await client.post("/v1/results", json=report(c, claim_token="not-my-claim"))
        assert_error(r, 409, "stale_claim", "step 'only'")
        held = await step_state(client, task_id, "only")
        assert held["status"] == "claimed"
        assert held["agent_id"] == "w1"
        assert held["result"] is None
        assert (await row_counts(server))["results"] == 0
        # The real claim is untouched and can still report.
        r = await client.post("/v1/results", json=report(c))
        assert r.status_code == 200, r.text
        assert (await step_state(client, task_id, "only"))["status"] == "done"


async def test_report_with_an_invalid_status_names_the_field(server: LiveServer) -> None:
    async with server.client() as client:
        task_id = await submit_one(client)
        c = await claim(client)
        r = await client.post("/v1/results", json=report(c, status="ok"))
        error = assert_error(r, 422, "validation_error", "status")
        assert [e["field"] for e in error["details"]["errors"]] == ["status"]
        assert (await step_state(client, task_id, "only"))["status"] == "claimed"
    assert (await row_counts(server))["results"] == 0


# -- reading and cancelling -----------------------------------------------------------


UNKNOWN = {
    # case: (method, path, words the message must hold)
    "get_task": ("GET", "/v1/tasks/no-such-task", ["'no-such-task'"]),
    "cancel_task": ("POST", "/v1/tasks/no-such-task/cancel", ["'no-such-task'"]),
    "task_events": ("GET", "/v1/tasks/no-such-task/events", ["'no-such-task'"]),
    "route": ("GET", "/v1/no-such-thing", []),
    "route_outside_v1": ("POST", "/no-such-thing", []),
}


async def test_unknown_things_are_json_404s(server: LiveServer, subtests: pytest.Subtests) -> None:
    async with server.client() as client:
        for case, (method, path, words) in UNKNOWN.items():
            with subtests.test(case):
                r = await client.request(method, path)
                assert_error(r, 404, "not_found", *words)
                await assert_nothing_written(server)


def _cursor(payload: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


GARBAGE_CURSORS = {
    "garbage": "garbage",
    "not_base64": "!!!",
    "object": _cursor({"not": "a list"}),
    "not_a_time": _cursor(["yesterday", "id"]),
    "three_items": _cursor([1, 2, 3]),
    # Well-formed but without a time zone: no cursor this server hands out looks so.
    "naive_time": _cursor(["2024-01-01T00:00:00", "some-id"]),
}


async def test_list_with_a_bad_query_is_a_422(
    server: LiveServer, subtests: pytest.Subtests
) -> None:
    async with server.client() as client:
        await submit_one(client)
        for case, cursor in GARBAGE_CURSORS.items():
            with subtests.test(f"cursor_{case}"):
                r = await client.get("/v1/tasks", params={"cursor": cursor})
                assert_error(r, 422, "invalid_request", "cursor")
        with subtests.test("unknown_status"):
            r = await client.get("/v1/tasks", params={"status": "bogus"})
            error = assert_error(r, 422, "validation_error", "status")
            assert error["details"]["errors"][0]["field"].startswith("status"), error
        with subtests.test("zero_limit"):
            r = await client.get("/v1/tasks", params={"limit": 0})
            assert_error(r, 422, "validation_error", "limit")


# -- idempotency ----------------------------------------------------------------------


async def test_same_idempotency_key_returns_the_first_task(server: LiveServer) -> None:
    headers = {"Idempotency-Key": "submit-once-42"}
    async with server.client() as client:
        first = await client.post("/v1/tasks", json=submission(step("a")), headers=headers)
        assert first.status_code == 201, first.text
        assert first.json()["created"] is True
        again = await client.post("/v1/tasks", json=submission(step("a")), headers=headers)
        assert again.status_code == 200, again.text
        assert again.json()["created"] is False
        assert again.json()["id"] == first.json()["id"]
        assert again.headers["location"] == f"/v1/tasks/{first.json()['id']}"
        listed = (await client.get("/v1/tasks")).json()["items"]
    assert [t["id"] for t in listed] == [first.json()["id"]]
    counts = await row_counts(server)
    assert (counts["tasks"], counts["steps"]) == (1, 1)


async def test_same_report_twice_is_answered_alike_and_stored_once(server: LiveServer) -> None:
    async with server.client() as client:
        task_id = await submit_one(client)
        c = await claim(client)
        first = await client.post("/v1/results", json=report(c))
        assert first.status_code == 200, first.text
        again = await client.post("/v1/results", json=report(c))
        assert again.status_code == 200, again.text
        assert again.json() == first.json()
        assert first.json()["outcome"] == "done"
        task = (await client.get(f"/v1/tasks/{task_id}", params={"history": "true"})).json()
    assert len(task["steps"][0]["attempts"]) == 1
    assert (await row_counts(server))["results"] == 1


async def test_a_different_second_report_for_one_claim_is_refused(server: LiveServer) -> None:
    async with server.client() as client:
        task_id = await submit_one(client)
        c = await claim(client)
        first = await client.post("/v1/results", json=report(c, output="first"))
        assert first.status_code == 200
        r = await client.post("/v1/results", json=report(c, output="second"))
        assert_error(r, 409, "conflict", "different result", "'only'")
        assert (await step_state(client, task_id, "only"))["result"]["output"] == "first"
    assert (await row_counts(server))["results"] == 1
