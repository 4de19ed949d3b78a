"""A fake OpenAI-compatible HTTP server on 127.0.0.1, for exercising the real ``openai`` SDK.

It serves ``POST /v1/chat/completions`` and ``GET /v1/models`` from a uvicorn thread on
an ephemeral port. Each chat request takes the next queued :class:`FakeReply` — JSON
content (valid or not), an HTTP error (429 with ``Retry-After``, 500, a 400 saying
``response_format`` is unsupported…) or a slow reply that trips client timeouts — and
falls back to ``responder(request_json)`` when the queue is empty. Every request is
recorded, so tests can check what the client sent::

    with FakeOpenAIServer() as srv:
        srv.push(FakeReply.rate_limited(retry_after=0), '{"answer": "42"}')
        client = OpenAIClient(model="fake-model", base_url=srv.base_url, api_key="k")
        ...
        assert srv.bodies[-1]["response_format"]["type"] == "json_schema"
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

Responder = Callable[[dict[str, Any]], "str | FakeReply | Mapping[str, Any]"]


@dataclass(frozen=True, slots=True)
class FakeReply:
    """One scripted answer: ``content`` with status 200, or an OpenAI-style error body."""

    content: str | None = None
    status: int = 200
    error_message: str = ""
    error_type: str = "invalid_request_error"
    error_code: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    usage: tuple[int, int] | None = None
    """``(prompt_tokens, completion_tokens)``; by default about chars/4 of each side."""
    finish_reason: str = "stop"

    @classmethod
    def text(cls, content: str, **kw: Any) -> FakeReply:
        """A 200 reply whose message content is ``content`` verbatim (may be malformed)."""
        return cls(content=content, **kw)

    @classmethod
    def json_object(cls, obj: Any, **kw: Any) -> FakeReply:
        """A 200 reply whose content is ``obj`` serialized as JSON."""
        return cls(content=json.dumps(obj), **kw)

    @classmethod
    def http_error(
        cls,
        status: int,
        message: str,
        *,
        retry_after: float | None = None,
        error_type: str = "invalid_request_error",
        code: str | None = None,
        delay: float = 0.0,
    ) -> FakeReply:
        """An error response in OpenAI's ``{"error": {...}}`` shape."""
        headers = {} if retry_after is None else {"retry-after": f"{retry_after:g}"}
        return cls(
            status=status,
            error_message=message,
            error_type=error_type,
            error_code=code,
            headers=headers,
            delay=delay,
        )

    @classmethod
    def rate_limited(cls, retry_after: float | None = None) -> FakeReply:
        """HTTP 429, optionally with ``Retry-After`` (seconds)."""
        return cls.http_error(
            429, "Rate limit reached", retry_after=retry_after, error_type="rate_limit_exceeded"
        )

    @classmethod
    def server_error(cls, status: int = 500) -> FakeReply:
        """HTTP 5xx."""
        return cls.http_error(status, "The server had an error", error_type="server_error")

    @classmethod
    def unsupported_response_format(cls) -> FakeReply:
        """The 400 an endpoint without structured output gives for ``json_schema``."""
        return cls.http_error(
            400,
            "response_format of type 'json_schema' is not supported by this model",
            code="unsupported_response_format",
        )

    @classmethod
    def slow(cls, delay: float, content: str = "{}") -> FakeReply:
        """A reply that arrives after ``delay`` seconds (to trip client timeouts)."""
        return cls(content=content, delay=delay)


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    """A request the server received: path, headers (lower-cased) and JSON body."""

    path: str
    headers: dict[str, str]
    body: dict[str, Any]


class FakeOpenAIServer:
    """An OpenAI-compatible server in a background thread; use as a context manager.

    ``api_key``: when set, requests without ``Authorization: Bearer <api_key>`` get 401.
    With an empty queue and no ``responder``, a request gets a 400 saying so, which
    fails the test quickly instead of hanging it.
    """

    def __init__(
        self,
        *,
        responder: Responder | None = None,
        api_key: str | None = None,
        model: str = "fake-model",
    ) -> None:
        self.responder = responder
        self.api_key = api_key
        self.model = model
        self._lock = threading.Lock()
        self._queue: deque[FakeReply] = deque()
        self._requests: list[RecordedRequest] = []
        self._ids = itertools.count(1)
        self._stopping = threading.Event()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None
        self._port: int | None = None

    # --- lifecycle -------------------------------------------------------------------

    def __enter__(self) -> FakeOpenAIServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self, timeout: float = 10.0) -> None:
        """Bind an ephemeral port on 127.0.0.1 and serve until :meth:`stop`."""
        # Binding here, not in uvicorn, tells us the port before the thread starts.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self._socket, self._port = sock, sock.getsockname()[1]
        config = uvicorn.Config(
            self._build_app(),
            lifespan="off",
            http="h11",
            ws="none",
            loop="asyncio",
            log_config=None,  # leave the test runner's logging alone
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="fake-openai", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the fake OpenAI server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop serving; slow replies still in flight are cut short."""
        self._stopping.set()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>/v1`` — what the SDK's ``base_url`` wants."""
        if self._port is None:
            raise RuntimeError("the fake OpenAI server is not started")
        return f"http://127.0.0.1:{self._port}/v1"

    # --- scripting and inspection ----------------------------------------------------

    def push(self, *replies: FakeReply | str | Mapping[str, Any]) -> None:
        """Queue replies: a :class:`FakeReply`, a content string, or a dict sent as JSON."""
        with self._lock:
            self._queue.extend(_as_reply(r) for r in replies)

    def reset(self) -> None:
        """Forget queued replies, recorded requests and the responder."""
        with self._lock:
            self._queue.clear()
            self._requests.clear()
        self.responder = None

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def bodies(self) -> list[dict[str, Any]]:
        """The JSON bodies of the chat completion requests, oldest first."""
        return [r.body for r in self.requests if r.path.endswith("/chat/completions")]

    @property
    def pending(self) -> int:
        """How many queued replies have not been served yet."""
        with self._lock:
            return len(self._queue)

    # --- the app ---------------------------------------------------------------------

    def _build_app(self) -> FastAPI:
        app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)

        @app.get("/v1/models")
        async def list_models() -> dict[str, Any]:
            model = {"id": self.model, "object": "model", "created": 0, "owned_by": "fake"}
            return {"object": "list", "data": [model]}

        @app.post("/v1/chat/completions")
        async def chat_completions(request: Request) -> JSONResponse:
            try:
                body = json.loads(await request.body())
            except ValueError:
                return _error(FakeReply.http_error(400, "the request body is not JSON"))
            with self._lock:
                self._requests.append(
                    RecordedRequest(request.url.path, dict(request.headers), body)
                )
            expected = f"Bearer {self.api_key}"
            if self.api_key and request.headers.get("authorization") != expected:
                return _error(
                    FakeReply.http_error(401, "Incorrect API key provided", code="invalid_api_key")
                )
            reply = self._next_reply(body)
            await self._sleep(reply.delay)
            if reply.status != 200:
                return _error(reply)
            return JSONResponse(self._completion(body, reply))

        return app

    def _next_reply(self, body: dict[str, Any]) -> FakeReply:
        with self._lock:
            if self._queue:
                return self._queue.popleft()
        if self.responder is not None:
            return _as_reply(self.responder(body))
        return FakeReply.http_error(
            400, "fake OpenAI server: no reply queued and no responder set", code="fake_exhausted"
        )

    async def _sleep(self, delay: float) -> None:
        # Sleep in slices so stop() does not wait for a long delay to run out. The flag
        # is a threading.Event because stop() runs on the test's thread, not this loop.
        deadline = time.monotonic() + delay
        while not self._stopping.is_set() and (left := deadline - time.monotonic()) > 0:  # noqa: ASYNC110
            await asyncio.sleep(min(left, 0.05))

    def _completion(self, body: dict[str, Any], reply: FakeReply) -> dict[str, Any]:
        content = reply.content or ""
        if reply.usage is not None:
            prompt, completion = reply.usage
        else:
            chars = sum(len(str(m.get("content") or "")) for m in body.get("messages", []))
            prompt, completion = max(1, chars // 4), max(1, len(content) // 4)
        message = {"role": "assistant", "content": content}
        return {
            "id": f"chatcmpl-fake-{next(self._ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model") or self.model,
            "choices": [{"index": 0, "message": message, "finish_reason": reply.finish_reason}],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            },
        }


def _as_reply(reply: FakeReply | str | Mapping[str, Any]) -> FakeReply:
    if isinstance(reply, FakeReply):
        return reply
    if isinstance(reply, str):
        return FakeReply.text(reply)
    return FakeReply.json_object(dict(reply))


def _error(reply: FakeReply) -> JSONResponse:
    error = {
        "message": reply.error_message,
        "type": reply.error_type,
        "param": None,
        "code": reply.error_code,
    }
    return JSONResponse({"error": error}, status_code=reply.status, headers=dict(reply.headers))


__all__ = ["FakeOpenAIServer", "FakeReply", "RecordedRequest", "Responder"]
