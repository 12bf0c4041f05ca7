"""An OpenAI-compatible chat server on loopback, for testing the ``llm`` translator.

It implements the endpoint the stage uses as OpenAI documents it (and as vLLM, llama.cpp's
server and Ollama offer it):

``POST /v1/chat/completions``
    JSON body ``{"model": ..., "messages": [{"role": ..., "content": ...}, ...],
    "temperature"?, "max_tokens"?, ...}``; answers a ``chat.completion`` object
    ``{"id", "object": "chat.completion", "created", "model", "choices": [{"index": 0,
    "message": {"role": "assistant", "content": ...}, "finish_reason": "stop"}],
    "usage": {...}}``.

Authentication is ``Authorization: Bearer <key>``; a wrong key gets 401 with OpenAI's error
object (``{"error": {"message", "type", "param", "code"}}``). An unknown model gets 404.

Answers are scripted: :meth:`OpenAIServer.answer` queues answers for the next requests
(a string, or a function of the request body), and without one the server "translates" by
answering ``"<translated> <the last line of the last user message>"``, so a test can see
what was sent. :meth:`OpenAIServer.fail` injects failures: an HTTP status with OpenAI's
error object (429, 500, 503, 401, 400, ...), ``"hang"`` (read the request, never answer) or
``"reset"`` (close the connection without an answer) — for every request, or the next
few. Every request is recorded (``requests``), failed ones included.
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import attrs

from ..loopback import running

__all__ = ["OpenAIServer", "Recorded", "openai_server"]

#: A scripted answer: the content, or a function of the request body giving it.
Answer = str | Callable[[dict[str, Any]], str]
#: A failure: an HTTP status, ``"hang"`` or ``"reset"``.
Failure = int | str

_ERRORS = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Country not supported."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests."),
    500: ("server_error", None, "The server had an error while processing your request."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}


@attrs.frozen
class Recorded:
    """One request the server received."""

    method: str
    path: str
    #: Header names lower-cased.
    headers: dict[str, str]
    body: Any
    at: float

    @property
    def messages(self) -> list[dict[str, str]]:
        return list(self.body.get("messages", [])) if isinstance(self.body, dict) else []

    @property
    def system(self) -> str:
        return "\n".join(m["content"] for m in self.messages if m.get("role") == "system")

    @property
    def user(self) -> str:
        """The last user message."""
        users = [m["content"] for m in self.messages if m.get("role") == "user"]
        return users[-1] if users else ""


def default_answer(body: dict[str, Any]) -> str:
    users = [m.get("content", "") for m in body.get("messages", []) if m.get("role") == "user"]
    last = users[-1].strip().splitlines()[-1] if users and users[-1].strip() else ""
    return f"<translated> {last}"


@attrs.define
class OpenAIServer:
    """State and controls of the server; ``url`` is what ``base_url`` should be."""

    api_key: str = "test-key"
    models: tuple[str, ...] = ("test-model",)
    #: Seconds every answer takes.
    latency: float = 0.0
    url: str = ""
    requests: list[Recorded] = attrs.field(factory=list)
    _answers: list[Answer] = attrs.field(factory=list)
    _failures: list[Failure] = attrs.field(factory=list)
    _fail_always: Failure | None = None
    _lock: threading.Lock = attrs.field(factory=threading.Lock)
    _released: threading.Event = attrs.field(factory=threading.Event)

    def answer(self, *answers: Answer) -> None:
        """Queue answers for the next successful chat requests, in order."""
        with self._lock:
            self._answers.extend(answers)

    def fail(self, failure: Failure, times: int | None = None) -> None:
        """Make chat requests fail: every one (``times=None``) or the next ``times``."""
        if not (isinstance(failure, int) or failure in ("hang", "reset")):
            raise ValueError(f"unknown failure {failure!r}")
        with self._lock:
            if times is None:
                self._fail_always = failure
            else:
                self._failures.extend([failure] * times)

    def heal(self) -> None:
        with self._lock:
            self._failures.clear()
            self._fail_always = None

    def chat_requests(self) -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if r.path == "/v1/chat/completions"]

    def _next_failure(self) -> Failure | None:
        with self._lock:
            if self._failures:
                return self._failures.pop(0)
            return self._fail_always

    def _next_answer(self, body: dict[str, Any]) -> str:
        with self._lock:
            scripted = self._answers.pop(0) if self._answers else default_answer
        return scripted(body) if callable(scripted) else scripted


def _handler(state: OpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, payload: Any) -> None:
            data = json.dumps(payload).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, message: str | None = None) -> None:
            kind, code, default = _ERRORS.get(status, ("server_error", None, "error"))
            self._send(
                status, {"error": {"message": message or default, "type": kind, "param": None, "code": code}}
            )

        def _reset(self) -> None:
            # SO_LINGER (on, 0 s) makes close() send a TCP reset rather than a clean FIN.
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()

        def do_POST(self) -> None:
            path = self.path.split("?")[0]
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                body = json.loads(raw or b"{}")
            except ValueError:
                body = None
            with state._lock:
                state.requests.append(
                    Recorded(
                        "POST", path, {k.lower(): v for k, v in self.headers.items()}, body, time.monotonic()
                    )
                )
            if path != "/v1/chat/completions":
                return self._error(404, f"Unknown path {path}")
            if self.headers.get("Authorization") != f"Bearer {state.api_key}":
                return self._error(401)
            failure = state._next_failure()
            if failure == "hang":
                state._released.wait()
                self.close_connection = True
                return None
            if failure == "reset":
                return self._reset()
            if isinstance(failure, int):
                return self._error(failure)
            if (
                not isinstance(body, dict)
                or not isinstance(body.get("messages"), list)
                or not body["messages"]
            ):
                return self._error(400, "'messages' is a required property")
            model = body.get("model")
            if model not in state.models:
                return self._error(404, f"The model `{model}` does not exist.")
            if state.latency:
                time.sleep(state.latency)
            content = state._next_answer(body)
            prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body["messages"])
            self._send(
                200,
                {
                    "id": f"chatcmpl-{len(state.requests)}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": content},
                            "logprobs": None,
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {
                        "prompt_tokens": prompt_tokens,
                        "completion_tokens": len(content.split()),
                        "total_tokens": prompt_tokens + len(content.split()),
                    },
                },
            )
            return None

    return Handler


@contextlib.contextmanager
def openai_server(**settings: Any) -> Iterator[OpenAIServer]:
    """Run an OpenAI-compatible server on 127.0.0.1 (a free port) for the block's duration."""
    state = OpenAIServer(**settings)
    with running(_handler(state)) as server:
        state.url = f"http://127.0.0.1:{server.port}/v1"
        try:
            yield state
        finally:
            state._released.set()  # let hung handlers go before the server stops
