"""The built-in agents through the real ``openai`` SDK against the fake server on 127.0.0.1."""

from __future__ import annotations

import json
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from agent_manager.agents import Planner, WorkerAgent
from agent_manager.llm import OpenAIClient
from agent_manager.plan import validate_plan
from agent_manager.schemas import ClaimContext, ClaimedStep, ClaimPublic
from agent_manager.testing.fake_openai import FakeOpenAIServer, FakeReply

pytestmark = pytest.mark.timeout(30)

GOAL = "Compare three queueing designs and write a recommendation"


@pytest.fixture(scope="module")
def fake_server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as srv:
        yield srv


@pytest.fixture
def fake(fake_server: FakeOpenAIServer) -> Iterator[FakeOpenAIServer]:
    fake_server.reset()
    yield fake_server
    fake_server.reset()


@pytest.fixture
async def make_client(fake: FakeOpenAIServer) -> AsyncIterator[Callable[..., OpenAIClient]]:
    """Clients aimed at the fake server, with tiny backoffs so failures are quick."""
    clients: list[OpenAIClient] = []

    def make(**overrides: Any) -> OpenAIClient:
        options: dict[str, Any] = {
            "model": "fake-model",
            "base_url": fake.base_url,
            "api_key": "test-key",
            "timeout": 5.0,
            "retry_base_delay": 0.01,
            "retry_max_delay": 0.05,
            "rng": random.Random(3),
        }
        options.update(overrides)
        client = OpenAIClient(**options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


def claim() -> ClaimPublic:
    return ClaimPublic(
        task_id="t-1",
        step=ClaimedStep(
            id="analysis",
            role="analyst",
            instruction="Summarise the numbers in data.txt.",
            depends_on=[],
            files=[],
            attempt=1,
            max_attempts=3,
        ),
        goal=GOAL,
        claim_token="tok",
        lease_expires_at=datetime.now(UTC) + timedelta(seconds=60),
        lease_seconds=60,
        context=ClaimContext(dependencies={}, rework_notes=[], extra={}),
    )


def act(action: str, action_input: Any) -> dict[str, Any]:
    return {"thought": f"use {action}", "action": action, "action_input": action_input}


async def test_worker_tool_call_then_final_answer(
    fake: FakeOpenAIServer, make_client: Any, tmp_path: Path
) -> None:
    (tmp_path / "data.txt").write_text("revenue: 42\n")
    fake.push(
        FakeReply.json_object(act("read_file", {"path": "data.txt"}), usage=(100, 10)),
        FakeReply.json_object(act("final_answer", "Revenue is 42."), usage=(150, 12)),
    )
    outcome = await WorkerAgent(make_client()).run(claim(), workspace=tmp_path)

    assert outcome.status == "success", outcome.error
    assert outcome.output == "Revenue is 42."
    assert outcome.ra_history[0].observation == "revenue: 42\n"
    assert (outcome.usage.prompt_tokens, outcome.usage.completion_tokens) == (250, 22)
    assert outcome.usage.total_tokens == 272
    first, second = fake.bodies
    assert first["response_format"]["json_schema"]["name"] == "ThoughtAction"
    assert second["messages"][: len(first["messages"])] == first["messages"]
    replayed, observation = second["messages"][-2:]
    assert replayed["role"] == "assistant"
    assert json.loads(replayed["content"])["action"] == "read_file"
    assert observation["role"] == "user"
    assert observation["content"].startswith("Observation: revenue: 42")


CYCLIC = {
    "goal": GOAL,
    "steps": [
        {"id": "a", "role": "analyst", "instruction": "A", "depends_on": ["b"]},
        {"id": "b", "role": "researcher", "instruction": "B", "depends_on": ["a"]},
    ],
}
VALID = {
    "goal": GOAL,
    "steps": [
        {"id": "a", "role": "analyst", "instruction": "A", "depends_on": []},
        {"id": "b", "role": "researcher", "instruction": "B", "depends_on": []},
        {"id": "report", "role": "writer", "instruction": "C", "depends_on": ["a", "b"]},
    ],
}


async def test_planner_cyclic_then_valid(fake: FakeOpenAIServer, make_client: Any) -> None:
    fake.push(CYCLIC, VALID)
    graph, usage = await Planner(make_client()).plan(
        goal=GOAL, roles=["analyst", "researcher", "writer"]
    )
    assert [s.id for s in graph.steps] == ["a", "b", "report"]
    validate_plan(graph.steps)
    assert usage.total_tokens > 0
    assert len(fake.bodies) == 2
    feedback = fake.bodies[1]["messages"][-1]
    assert feedback["role"] == "user"
    assert "steps form a cycle" in feedback["content"]
    assert "a -> b -> a" in feedback["content"] or "b -> a -> b" in feedback["content"]


async def test_malformed_json_ends_the_step_quickly_and_retryably(
    fake: FakeOpenAIServer, make_client: Any, tmp_path: Path
) -> None:
    fake.responder = lambda body: FakeReply.text('{"thought": "hmm", "action": ')
    started = time.monotonic()
    outcome = await WorkerAgent(make_client(max_output_retries=2)).run(claim(), workspace=tmp_path)
    elapsed = time.monotonic() - started

    assert outcome.status == "failure"
    assert outcome.retryable is True
    assert outcome.error is not None
    assert "llm_output_invalid" in outcome.error
    assert "invalid ThoughtAction output 3 times" in outcome.error
    assert "invalid JSON" in outcome.error
    assert outcome.ra_history == []
    assert len(fake.bodies) == 3  # one call plus two repairs, then it stops
    assert elapsed < 5


async def test_server_error_then_ok_recovers(
    fake: FakeOpenAIServer, make_client: Any, tmp_path: Path
) -> None:
    fake.push(FakeReply.server_error(500), act("final_answer", "All done."))
    outcome = await WorkerAgent(make_client()).run(claim(), workspace=tmp_path)
    assert outcome.status == "success", outcome.error
    assert outcome.output == "All done."
    assert len(fake.bodies) == 2
    assert fake.bodies[0] == fake.bodies[1]  # the same request, retried


async def test_endpoint_down_is_a_retryable_failure(
    fake: FakeOpenAIServer, make_client: Any, tmp_path: Path
) -> None:
    fake.responder = lambda body: FakeReply.server_error(503)
    outcome = await WorkerAgent(make_client(max_transport_retries=1)).run(
        claim(), workspace=tmp_path
    )
    assert outcome.status == "failure"
    assert outcome.retryable is True
    assert outcome.error is not None and "llm_unavailable" in outcome.error
    assert "HTTP 503" in outcome.error
