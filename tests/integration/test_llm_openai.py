"""OpenAIClient through the real ``openai`` SDK against the fake server on 127.0.0.1."""

from __future__ import annotations

import random
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from agent_manager.llm import (
    CallContext,
    LLMConfigError,
    LLMOutputInvalid,
    LLMRequestRejected,
    LLMUnavailable,
    OpenAIClient,
    build_llm_client,
)
from agent_manager.llm.openai_provider import _retry_after
from agent_manager.testing.fake_openai import FakeOpenAIServer, FakeReply

pytestmark = pytest.mark.timeout(20)

VALID = {"answer": "Use a Postgres queue.", "confidence": 0.8}
CONTEXT = CallContext(role="writer", task_id="t1", step_id="report", goal="pick a queue")
MESSAGES = [
    {"role": "system", "content": "You are a writer."},
    {"role": "user", "content": "Which queue should we use?"},
]
TIMEOUT = 0.3  # client timeout for the slow-reply tests; slow replies take 1s


class Answer(BaseModel):
    answer: str
    confidence: float


@pytest.fixture(scope="module")
def fake_server() -> Iterator[FakeOpenAIServer]:
    """One server per module; the ``fake`` fixture resets it for each test."""
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
            "max_retry_after": 0.5,
            "rng": random.Random(7),
        }
        options.update(overrides)
        client = OpenAIClient(**options)
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()


async def ask(client: OpenAIClient) -> Any:
    return await client.complete(messages=MESSAGES, schema=Answer, context=CONTEXT)


# --- the happy path and what goes over the wire -----------------------------------------


async def test_valid_structured_reply(fake: FakeOpenAIServer, make_client: Any) -> None:
    fake.push(FakeReply.json_object(VALID, usage=(11, 7)))
    resp = await ask(make_client())
    assert resp.value == Answer(**VALID)
    assert resp.provider == "openai"
    assert resp.model == "fake-model"
    assert resp.attempts == 1
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens) == (11, 7)
    assert resp.usage.total_tokens == 18
    assert fake.requests[0].headers["authorization"] == "Bearer test-key"


async def test_json_schema_is_sent_as_response_format(
    fake: FakeOpenAIServer, make_client: Any
) -> None:
    fake.push(VALID)
    await ask(make_client(structured_mode="json_schema"))
    [body] = fake.bodies
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "Answer", "schema": Answer.model_json_schema(), "strict": False},
    }
    assert body["messages"] == MESSAGES
    assert body["model"] == "fake-model"


async def test_json_object_mode_puts_the_schema_in_the_system_prompt(
    fake: FakeOpenAIServer, make_client: Any
) -> None:
    fake.push(VALID)
    await ask(make_client(structured_mode="json_object"))
    [body] = fake.bodies
    assert body["response_format"] == {"type": "json_object"}
    system, question = body["messages"]
    # Merged into the caller's system message, not a second one.
    assert system["content"].startswith("You are a writer.")
    assert "JSON Schema" in system["content"]
    assert '"confidence"' in system["content"]
    assert question == MESSAGES[1]


async def test_code_fenced_json_is_accepted(fake: FakeOpenAIServer, make_client: Any) -> None:
    fake.push('```json\n{"answer": "fenced", "confidence": 1}\n```')
    resp = await ask(make_client())
    assert resp.value.answer == "fenced"
    assert resp.attempts == 1


# --- structured-mode fallback -----------------------------------------------------------


async def test_auto_falls_back_to_json_object_for_good(
    fake: FakeOpenAIServer, make_client: Any
) -> None:
    client = make_client(structured_mode="auto")
    fake.push(FakeReply.unsupported_response_format(), VALID, VALID)
    first = await ask(client)
    assert first.value == Answer(**VALID)
    assert first.attempts == 2
    assert client.structured_mode == "json_object"
    await ask(client)
    kinds = [b["response_format"]["type"] for b in fake.bodies]
    assert kinds == ["json_schema", "json_object", "json_object"]


async def test_explicit_json_schema_mode_does_not_fall_back(
    fake: FakeOpenAIServer, make_client: Any
) -> None:
    fake.push(FakeReply.unsupported_response_format())
    with pytest.raises(LLMRequestRejected, match=r"HTTP 400.*response_format"):
        await ask(make_client(structured_mode="json_schema"))
    assert len(fake.bodies) == 1


# --- output repair ----------------------------------------------------------------------


async def test_malformed_json_is_fed_back_and_recovered(
    fake: FakeOpenAIServer, make_client: Any
) -> None:
    fake.push('{"answer": "oops", ', VALID)
    resp = await ask(make_client())
    assert resp.value == Answer(**VALID)
    assert resp.attempts == 2
    retry = fake.bodies[1]["messages"]
    assert retry[:2] == MESSAGES
    assert retry[2] == {"role": "assistant", "content": '{"answer": "oops", '}
    assert retry[3]["role"] == "user"
    assert "invalid JSON" in retry[3]["content"]


async def test_schema_invalid_output_is_fed_back_and_recovered(
    fake: FakeOpenAIServer, make_client: Any
) -> None:
    fake.push({"answer": "no confidence given"}, VALID)
    resp = await ask(make_client())
    assert resp.value == Answer(**VALID)
    feedback = fake.bodies[1]["messages"][-1]["content"]
    assert "confidence: Field required" in feedback
    assert "Answer schema" in feedback


async def test_output_retries_exhausted(fake: FakeOpenAIServer, make_client: Any) -> None:
    fake.push("nope", {"answer": 1}, {"answer": "x", "confidence": "high"})
    with pytest.raises(LLMOutputInvalid) as caught:
        await ask(make_client(max_output_retries=2))
    message = str(caught.value)
    assert "invalid Answer output 3 times" in message
    assert "confidence: Input should be a valid number" in message
    assert caught.value.retryable is True
    assert len(fake.bodies) == 3


# --- transport retries ------------------------------------------------------------------


async def test_timeout_then_valid(fake: FakeOpenAIServer, make_client: Any) -> None:
    fake.push(FakeReply.slow(1.0), VALID)
    resp = await ask(make_client(timeout=TIMEOUT))
    assert resp.value == Answer(**VALID)
    assert resp.attempts == 2


async def test_timeouts_exhausted(fake: FakeOpenAIServer, make_client: Any) -> None:
    fake.push(FakeReply.slow(1.0), FakeReply.slow(1.0))
    started = time.monotonic()
    with pytest.raises(LLMUnavailable, match=r"timed out after 0\.3s 2 times"):
        await ask(make_client(timeout=TIMEOUT, max_transport_retries=1))
    assert time.monotonic() - started < 2.0


async def test_rate_limit_then_valid_honours_retry_after(
    fake: FakeOpenAIServer, make_client: Any
) -> None:
    fake.push(FakeReply.rate_limited(retry_after=0.3), VALID)
    started = time.monotonic()
    resp = await ask(make_client())
    assert time.monotonic() - started >= 0.3
    assert resp.value == Answer(**VALID)
    assert resp.attempts == 2


async def test_retry_after_is_capped(fake: FakeOpenAIServer, make_client: Any) -> None:
    fake.push(FakeReply.rate_limited(retry_after=3600), VALID)
    started = time.monotonic()
    await ask(make_client(max_retry_after=0.1))
    assert time.monotonic() - started < 2.0


async def test_rate_limit_exhausted(fake: FakeOpenAIServer, make_client: Any) -> None:
    fake.push(*[FakeReply.rate_limited()] * 4)
    with pytest.raises(LLMUnavailable, match=r"rate limited \(HTTP 429\) 4 times") as caught:
        await ask(make_client())  # default: 3 retries, so 4 tries
    assert caught.value.retryable is True
    assert len(fake.bodies) == 4


async def test_server_error_then_valid(fake: FakeOpenAIServer, make_client: Any) -> None:
    fake.push(FakeReply.server_error(500), FakeReply.server_error(503), VALID)
    resp = await ask(make_client())
    assert resp.value == Answer(**VALID)
    assert resp.attempts == 3


async def test_server_errors_exhausted(fake: FakeOpenAIServer, make_client: Any) -> None:
    fake.push(FakeReply.server_error(), FakeReply.rate_limited(), FakeReply.server_error())
    with pytest.raises(LLMUnavailable) as caught:
        await ask(make_client(max_transport_retries=2))
    assert "server error (HTTP 500) 2 times, rate limited (HTTP 429) 1 time" in str(caught.value)


async def test_sdk_retries_are_disabled(fake: FakeOpenAIServer, make_client: Any) -> None:
    fake.push(FakeReply.server_error(), VALID)
    with pytest.raises(LLMUnavailable, match=r"HTTP 500\) 1 time"):
        await ask(make_client(max_transport_retries=0))
    assert len(fake.bodies) == 1
    assert fake.pending == 1


async def test_connection_refused_is_unavailable(make_client: Any) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago, now closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = make_client(base_url=f"http://127.0.0.1:{port}/v1", max_transport_retries=1)
    with pytest.raises(LLMUnavailable, match=r"connection failed.* 2 times"):
        await ask(client)


# --- errors that are not retried --------------------------------------------------------


async def test_401_is_a_config_error_and_not_retried(
    fake: FakeOpenAIServer, make_client: Any
) -> None:
    fake.push(FakeReply.http_error(401, "Incorrect API key provided"), VALID)
    with pytest.raises(LLMConfigError, match=r"HTTP 401.*OPENAI_API_KEY") as caught:
        await ask(make_client())
    assert caught.value.retryable is False
    assert len(fake.bodies) == 1


async def test_404_names_the_model_settings(fake: FakeOpenAIServer, make_client: Any) -> None:
    fake.push(FakeReply.http_error(404, "The model `gpt-x` does not exist"))
    with pytest.raises(LLMConfigError, match=r"404.*AM_LLM_BASE_URL and AM_LLM_MODEL"):
        await ask(make_client())


async def test_exhausted_quota_is_not_retried(fake: FakeOpenAIServer, make_client: Any) -> None:
    fake.push(FakeReply.http_error(429, "You exceeded your quota", code="insufficient_quota"))
    with pytest.raises(LLMConfigError, match="quota"):
        await ask(make_client())
    assert len(fake.bodies) == 1


# --- accounting -------------------------------------------------------------------------


async def test_usage_is_summed_over_every_reply(fake: FakeOpenAIServer, make_client: Any) -> None:
    fake.push(
        FakeReply.rate_limited(),  # no usage: the request was refused
        FakeReply.text("not json", usage=(10, 5)),
        FakeReply.json_object(VALID, usage=(20, 7)),
    )
    resp = await ask(make_client())
    assert resp.attempts == 3
    assert resp.usage.prompt_tokens == 30
    assert resp.usage.completion_tokens == 12
    assert resp.usage.total_tokens == 42


# --- build_llm_client -------------------------------------------------------------------


async def test_build_openai_client_for_a_local_endpoint_needs_no_key(
    fake: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    client = build_llm_client(
        provider="openai", base_url=fake.base_url, model="local-model", timeout=5.0,
        structured_mode="json_object",
    )  # fmt: skip
    async with client:
        fake.push(VALID)
        resp = await client.complete(messages=MESSAGES, schema=Answer, context=CONTEXT)
    assert resp.value == Answer(**VALID)
    assert fake.bodies[0]["model"] == "local-model"
    assert fake.bodies[0]["response_format"] == {"type": "json_object"}


async def test_build_openai_client_takes_the_key_from_the_environment(
    fake: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "env-key")
    async with build_llm_client(provider="openai", base_url=fake.base_url, model="m") as client:
        fake.push(VALID)
        await client.complete(messages=MESSAGES, schema=Answer, context=CONTEXT)
    assert fake.requests[0].headers["authorization"] == "Bearer env-key"


def test_build_openai_client_config_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(LLMConfigError, match="AM_LLM_MODEL"):
        build_llm_client(provider="openai", base_url="http://localhost:11434/v1", model=None)
    with pytest.raises(LLMConfigError, match="OPENAI_API_KEY"):
        build_llm_client(provider="openai", base_url="https://llm.example.com/v1", model="m")
    with pytest.raises(LLMConfigError, match="OPENAI_API_KEY"):
        build_llm_client(provider="openai", model="gpt-4o-mini")
    with pytest.raises(LLMConfigError, match="AM_LLM_STRUCTURED_MODE"):
        build_llm_client(provider="openai", model="m", api_key="k", structured_mode="xml")


# --- the fake server itself -------------------------------------------------------------


async def test_fake_server_lists_models_and_reports_an_empty_queue(fake: FakeOpenAIServer) -> None:
    async with httpx.AsyncClient(base_url=fake.base_url) as http:
        models = (await http.get("/models")).json()
        empty = await http.post("/chat/completions", json={"model": "m", "messages": []})
    assert models["data"][0]["id"] == "fake-model"
    assert empty.status_code == 400
    assert "no reply queued" in empty.json()["error"]["message"]


async def test_fake_server_responder_answers_when_the_queue_is_empty(
    fake: FakeOpenAIServer, make_client: Any
) -> None:
    fake.responder = lambda body: {"answer": body["model"], "confidence": 0.5}
    resp = await ask(make_client())
    assert resp.value.answer == "fake-model"


def test_retry_after_header_parsing() -> None:
    assert _retry_after(httpx.Headers({"retry-after": "2"})) == 2.0
    assert _retry_after(httpx.Headers({"retry-after-ms": "250"})) == 0.25
    assert _retry_after(httpx.Headers({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"})) == 0.0
    assert _retry_after(httpx.Headers({"retry-after": "soon"})) is None
    assert _retry_after(httpx.Headers({})) is None
