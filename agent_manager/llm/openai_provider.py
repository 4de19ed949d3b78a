"""Any OpenAI-compatible chat endpoint (OpenAI, Azure, vLLM, Ollama, llama.cpp, LM Studio…).

Two retry loops, each with its own budget:

* **transport** — timeouts, 429, 5xx and connection errors are retried with our
  :class:`~agent_manager.retry.RetryPolicy` (the SDK's own retries are switched off so
  there is exactly one policy), honouring ``Retry-After`` up to a cap;
* **output** — a reply that is not valid JSON or does not match the schema is sent back
  to the model together with the validation error, and it is asked again.

This module is the one place where ``openai`` exceptions become :class:`LLMError`\\ s.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal, cast, get_args

import openai
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam
from openai.types.chat.completion_create_params import ResponseFormat
from pydantic import BaseModel, ValidationError

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
    T,
    describe_validation_error,
)
from agent_manager.models import Usage
from agent_manager.retry import RetryPolicy

log = logging.getLogger(__name__)

StructuredMode = Literal["auto", "json_schema", "json_object"]
STRUCTURED_MODES: tuple[str, ...] = get_args(StructuredMode)

# Words an endpoint uses when it refuses ``response_format={"type": "json_schema"}``.
_UNSUPPORTED_FORMAT_HINTS = ("response_format", "json_schema", "structured output")
_FENCE = re.compile(r"^```(?:json)?\s*\n?(.*?)\n?```$", re.DOTALL | re.IGNORECASE)


@dataclass
class _Tally:
    """What one :meth:`OpenAIClient.complete` call has spent so far."""

    usage: Usage = field(default_factory=Usage)
    http_calls: int = 0


class OpenAIClient(LLMClient):
    """Structured output from an OpenAI-compatible endpoint via the official SDK.

    ``structured_mode``: ``"json_schema"`` (native structured output), ``"json_object"``
    (JSON mode plus the schema in a system message) or ``"auto"`` (native first, and
    JSON mode for the rest of this client's life once the endpoint says it cannot).
    Either way the reply is validated here; the endpoint is not trusted to enforce it.
    """

    def __init__(
        self,
        *,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        structured_mode: StructuredMode = "auto",
        max_output_retries: int = 2,
        max_transport_retries: int = 3,
        retry_base_delay: float = 1.0,
        retry_max_delay: float = 20.0,
        max_retry_after: float = 30.0,
        temperature: float | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if structured_mode not in STRUCTURED_MODES:
            raise LLMConfigError(
                f"unknown structured output mode {structured_mode!r}; set AM_LLM_STRUCTURED_MODE "
                f"to one of {', '.join(STRUCTURED_MODES)}"
            )
        if not model:
            raise LLMConfigError("no LLM model given; set AM_LLM_MODEL")
        self._model = model
        self._mode: StructuredMode = structured_mode
        self._timeout = timeout
        self._max_output_retries = max(0, max_output_retries)
        self._max_transport_retries = max(0, max_transport_retries)
        self._policy = RetryPolicy(
            max_attempts=self._max_transport_retries + 1,
            base=retry_base_delay,
            maximum=retry_max_delay,
        )
        self._max_retry_after = max_retry_after
        self._temperature = temperature
        self._rng = rng
        try:
            # max_retries=0: the SDK would otherwise retry 429/5xx/timeouts on its own
            # schedule underneath ours, multiplying the waits and hiding the causes.
            self._sdk = openai.AsyncOpenAI(
                api_key=api_key, base_url=base_url, timeout=timeout, max_retries=0
            )
        except openai.OpenAIError as exc:
            raise LLMConfigError(
                f"cannot set up the OpenAI client: {exc}; set OPENAI_API_KEY (or AM_LLM_API_KEY)"
            ) from exc
        self._endpoint = str(self._sdk.base_url).rstrip("/")

    @property
    def name(self) -> str:
        return "openai"

    @property
    def model(self) -> str:
        return self._model

    @property
    def structured_mode(self) -> StructuredMode:
        """The mode in use now (``"auto"`` becomes ``"json_object"`` after a fallback)."""
        return self._mode

    async def aclose(self) -> None:
        await self._sdk.close()

    async def complete(
        self,
        *,
        messages: list[Message],
        schema: type[T],
        context: CallContext,
    ) -> LLMResponse[T]:
        """Ask until the reply validates as ``schema``; see the module docstring for retries."""
        tally = _Tally()
        conversation = list(messages)
        last_error = ""
        for _ in range(self._max_output_retries + 1):
            completion = await self._send(conversation, schema, tally, context)
            choice = completion.choices[0] if completion.choices else None
            content = (choice.message.content if choice else None) or ""
            try:
                value = schema.model_validate_json(_strip_fence(content))
            except ValidationError as exc:
                last_error = describe_validation_error(exc)
                if choice is not None and choice.finish_reason == "length":
                    last_error += " (the reply was cut off: finish_reason=length)"
                if not content and choice is not None and choice.message.refusal:
                    last_error = f"the model refused: {choice.message.refusal}"
                log.info("LLM reply for %s invalid, asking again: %s", schema.__name__, last_error)
                conversation += [
                    # Some servers reject an empty assistant turn, hence the placeholder.
                    {"role": "assistant", "content": content or "(empty reply)"},
                    {"role": "user", "content": _repair_prompt(schema, last_error)},
                ]
                continue
            return LLMResponse(
                value=value,
                usage=tally.usage,
                model=completion.model or self._model,
                provider=self.name,
                attempts=tally.http_calls,
            )
        tries = self._max_output_retries + 1
        raise LLMOutputInvalid(
            f"model {self._model} returned invalid {schema.__name__} output {tries} times; "
            f"last error: {last_error}",
            schema=schema.__name__,
            last_error=last_error,
            attempts=tally.http_calls,
        )

    async def _send(
        self,
        conversation: list[Message],
        schema: type[BaseModel],
        tally: _Tally,
        context: CallContext,
    ) -> ChatCompletion:
        """One logical request: transport retries and the ``auto`` fallback happen here."""
        causes: list[str] = []
        while True:
            mode = "json_object" if self._mode == "json_object" else "json_schema"
            tally.http_calls += 1
            try:
                completion = await self._sdk.chat.completions.create(
                    model=self._model,
                    messages=_with_schema_prompt(conversation, schema, mode),
                    response_format=_response_format(schema, mode),
                    temperature=openai.omit if self._temperature is None else self._temperature,
                )
            except openai.APIStatusError as exc:
                if self._mode == "auto" and _unsupported_response_format(exc):
                    log.warning(
                        "%s does not support json_schema output; using JSON mode from now on",
                        self._endpoint,
                    )
                    self._mode = "json_object"
                    continue
                cause, retry_after = self._classify_status(exc)
                await self._backoff(causes, cause, retry_after, exc, context)
                continue
            except openai.APITimeoutError as exc:  # before APIConnectionError: it subclasses it
                await self._backoff(
                    causes, f"timed out after {self._timeout:g}s", None, exc, context
                )
                continue
            except openai.APIConnectionError as exc:
                cause = f"connection failed ({_root_cause(exc)})"
                await self._backoff(causes, cause, None, exc, context)
                continue
            except openai.OpenAIError as exc:
                raise LLMError(f"OpenAI SDK error from {self._endpoint}: {exc}") from exc
            if completion.usage is not None:
                tally.usage = tally.usage + Usage(
                    prompt_tokens=completion.usage.prompt_tokens,
                    completion_tokens=completion.usage.completion_tokens,
                    total_tokens=completion.usage.total_tokens,
                )
            return completion

    def _classify_status(self, exc: openai.APIStatusError) -> tuple[str, float | None]:
        """The retryable cause of an HTTP error, or raise the final error for the others."""
        status = exc.status_code
        detail = _short(exc.message)
        if status == 429:
            if exc.code == "insufficient_quota":  # billing, not load: waiting will not help
                raise LLMConfigError(
                    f"{self._endpoint} says the quota is exhausted ({detail}); "
                    "check the account behind OPENAI_API_KEY / AM_LLM_API_KEY"
                ) from exc
            return "rate limited (HTTP 429)", _retry_after(exc.response.headers)
        if status == 408:
            return "request timeout (HTTP 408)", _retry_after(exc.response.headers)
        if status >= 500:
            return f"server error (HTTP {status})", _retry_after(exc.response.headers)
        if status in (401, 403):
            raise LLMConfigError(
                f"{self._endpoint} refused the API key (HTTP {status}: {detail}); "
                "set a valid OPENAI_API_KEY (or AM_LLM_API_KEY)"
            ) from exc
        if status == 404:
            raise LLMConfigError(
                f"{self._endpoint} answered 404 for model {self._model!r} ({detail}); "
                "check AM_LLM_BASE_URL and AM_LLM_MODEL"
            ) from exc
        raise LLMRequestRejected(
            f"{self._endpoint} rejected the request (HTTP {status}: {detail})", status=status
        ) from exc

    async def _backoff(
        self,
        causes: list[str],
        cause: str,
        retry_after: float | None,
        exc: Exception,
        context: CallContext,
    ) -> None:
        """Record a retryable failure; sleep before the next try, or raise when out of tries."""
        causes.append(cause)
        if self._policy.gives_up_after(len(causes)):
            raise LLMUnavailable(
                f"LLM endpoint {self._endpoint} (model {self._model}) unavailable: "
                f"{_summarize(causes)}; giving up",
                causes=causes,
            ) from exc
        if retry_after is not None:
            delay = min(max(retry_after, 0.0), self._max_retry_after)
        else:
            delay = self._policy.delay(len(causes), self._rng)
        log.warning(
            "LLM call for %s/%s: %s; retry %d of %d in %.2fs",
            context.role,
            context.step_id,
            cause,
            len(causes),
            self._max_transport_retries,
            delay,
        )
        await asyncio.sleep(delay)


def _response_format(schema: type[BaseModel], mode: str) -> ResponseFormat:
    if mode == "json_object":
        return {"type": "json_object"}
    return {
        "type": "json_schema",
        "json_schema": {
            "name": re.sub(r"[^A-Za-z0-9_-]", "_", schema.__name__)[:64],
            "schema": schema.model_json_schema(),
            # strict=True only accepts a subset of JSON Schema that pydantic output
            # (defaults, Any, optional fields) often falls outside; we validate anyway.
            "strict": False,
        },
    }


def _with_schema_prompt(
    conversation: list[Message], schema: type[BaseModel], mode: str
) -> list[ChatCompletionMessageParam]:
    """In JSON mode the endpoint does not see the schema, so it goes into the system prompt."""
    # Our messages are plain role/content dicts, which is what these TypedDicts describe.
    if mode != "json_object":
        return cast("list[ChatCompletionMessageParam]", conversation)
    note = (
        "Answer with one JSON object only (no prose, no Markdown fences) that validates "
        f"against this JSON Schema for {schema.__name__}:\n"
        + json.dumps(schema.model_json_schema(), separators=(",", ":"))
    )
    # Merge into an existing leading system message: several chat templates used by
    # local servers accept only one system message, and only at the start.
    if conversation and conversation[0].get("role") == "system":
        first = {**conversation[0], "content": conversation[0]["content"] + "\n\n" + note}
        return cast("list[ChatCompletionMessageParam]", [first, *conversation[1:]])
    return cast(
        "list[ChatCompletionMessageParam]", [{"role": "system", "content": note}, *conversation]
    )


def _repair_prompt(schema: type[BaseModel], error: str) -> str:
    return (
        f"Your previous reply could not be used: {error}. Reply again with only a JSON "
        f"object that matches the {schema.__name__} schema, with no text around it."
    )


def _strip_fence(content: str) -> str:
    # Local models often wrap JSON in ```json fences even in JSON mode; unwrapping it
    # here saves a whole repair round-trip.
    stripped = content.strip()
    match = _FENCE.match(stripped)
    return match.group(1) if match else stripped


def _unsupported_response_format(exc: openai.APIStatusError) -> bool:
    if exc.status_code not in (400, 422):
        return False
    text = f"{exc.message} {exc.body}".lower()
    return any(hint in text for hint in _UNSUPPORTED_FORMAT_HINTS)


def _retry_after(headers: Any) -> float | None:
    """Seconds from ``Retry-After-Ms`` / ``Retry-After`` (seconds or an HTTP date)."""
    if value := headers.get("retry-after-ms"):
        try:
            return float(value) / 1000.0
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000" dates parse naive; HTTP dates are always UTC
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _root_cause(exc: BaseException) -> str:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return _short(str(exc) or type(exc).__name__, 120)


def _summarize(causes: list[str]) -> str:
    """``"rate limited (HTTP 429) 4 times"`` or ``"timed out after 1s 2 times, …"``."""
    counts = Counter(causes)
    return ", ".join(f"{cause} {n} time{'s' if n != 1 else ''}" for cause, n in counts.items())


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


__all__ = ["STRUCTURED_MODES", "OpenAIClient", "StructuredMode"]
