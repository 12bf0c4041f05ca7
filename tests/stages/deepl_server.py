"""A DeepL-compatible HTTP server on loopback, for testing the ``deepl`` translator.

It follows the DeepL API v2 documentation for the endpoints the stage uses:

``POST /v2/translate``
    JSON body ``{"text": [...], "target_lang": "DE", "source_lang"?, "context"?,
    "formality"?, "glossary_id"?, ...}`` (form bodies are accepted too); answers
    ``{"translations": [{"detected_source_language": "EN", "text": ...,
    "billed_characters": n}]}``, one per text, in order.
``GET /v2/languages`` (``type=source`` or ``type=target``, in the query or a form body,
    as the official Python client sends it)
    ``[{"language": "DE", "name": "German", "supports_formality": true}, ...]``.
``GET /v2/usage``
    ``{"character_count": n, "character_limit": m}``.

Authentication is the ``Authorization: DeepL-Auth-Key <key>`` header; a wrong key gets 403.
A request after the character limit gets 456; an unsupported language gets 400 with DeepL's
message.

Tests inject failures on any path with :meth:`DeepLServer.fail` (``fail_translate`` for
``/v2/translate``): an HTTP status with DeepL's message (429, 456, 403, 5xx, ...),
``"hang"`` (read the request, never answer) or ``"reset"`` (close the connection without an
answer, with a TCP reset) — for every request to the path, or only for the next few. Every
request is recorded (``requests``, :meth:`DeepLServer.requests_to`), failed ones included.

The "translation" is made up — ``"<TARGET>: <text>"`` — so a test can see what was sent.
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
import time
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import attrs

from ..loopback import running

SOURCE_LANGUAGES = {
    "BG": "Bulgarian", "CS": "Czech", "DA": "Danish", "DE": "German", "EL": "Greek",
    "EN": "English", "ES": "Spanish", "ET": "Estonian", "FI": "Finnish", "FR": "French",
    "HU": "Hungarian", "ID": "Indonesian", "IT": "Italian", "JA": "Japanese", "KO": "Korean",
    "LT": "Lithuanian", "LV": "Latvian", "NB": "Norwegian Bokmål", "NL": "Dutch", "PL": "Polish",
    "PT": "Portuguese", "RO": "Romanian", "RU": "Russian", "SK": "Slovak", "SL": "Slovenian",
    "SV": "Swedish", "TR": "Turkish", "UK": "Ukrainian", "ZH": "Chinese",
}  # fmt: skip
#: Target languages with their ``supports_formality`` flag.
TARGET_LANGUAGES = {
    "BG": ("Bulgarian", False), "CS": ("Czech", False), "DA": ("Danish", False),
    "DE": ("German", True), "EL": ("Greek", False), "EN-GB": ("English (British)", False),
    "EN-US": ("English (American)", False), "ES": ("Spanish", True), "ET": ("Estonian", False),
    "FI": ("Finnish", False), "FR": ("French", True), "HU": ("Hungarian", False),
    "ID": ("Indonesian", False), "IT": ("Italian", True), "JA": ("Japanese", True),
    "KO": ("Korean", False), "LT": ("Lithuanian", False), "LV": ("Latvian", False),
    "NB": ("Norwegian Bokmål", False), "NL": ("Dutch", True), "PL": ("Polish", True),
    "PT-BR": ("Portuguese (Brazilian)", True), "PT-PT": ("Portuguese (European)", True),
    "RO": ("Romanian", False), "RU": ("Russian", True), "SK": ("Slovak", False),
    "SL": ("Slovenian", False), "SV": ("Swedish", False), "TR": ("Turkish", False),
    "UK": ("Ukrainian", False), "ZH": ("Chinese (simplified)", False),
    "ZH-HANS": ("Chinese (simplified)", False), "ZH-HANT": ("Chinese (traditional)", False),
}  # fmt: skip

_MESSAGES = {
    403: "Authorization failed. Please supply a valid auth_key parameter.",
    429: "Too many requests. Please wait and resend your request.",
    456: "Quota exceeded. The character limit has been reached.",
    500: "Internal server error",
    502: "Bad gateway",
    503: "Service temporarily unavailable",
    504: "Gateway timeout",
}


#: What :meth:`DeepLServer.fail` injects: an HTTP status, ``"hang"`` or ``"reset"``.
Failure = int | str


@attrs.frozen
class Recorded:
    """One request the server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    at: float


@attrs.define
class DeepLServer:
    """State and controls of the server; ``url`` is what ``server_url`` should be."""

    auth_key: str = "test-key"
    #: Seconds every ``/v2/translate`` answer takes (a realistic API latency is ~0.15 s).
    latency: float = 0.0
    character_limit: int = 1_000_000
    character_count: int = 0
    #: Whether ``/v2/languages`` exists (some DeepL-compatible servers lack it).
    languages_endpoint: bool = True
    url: str = ""
    requests: list[Recorded] = attrs.field(factory=list)
    #: Per path: failures for the next requests, in order; then the one for every request.
    _failures: dict[str, list[Failure]] = attrs.field(factory=dict)
    _fail_always: dict[str, Failure] = attrs.field(factory=dict)
    _lock: threading.Lock = attrs.field(factory=threading.Lock)
    _released: threading.Event = attrs.field(factory=threading.Event)

    def fail(self, path: str, failure: Failure, times: int | None = None) -> None:
        """Make requests to ``path`` (e.g. ``"/v2/usage"``) fail.

        Args:
            path: The request's path, without the query.
            failure: An HTTP status to answer (with DeepL's message for it), ``"hang"`` (never
                answer) or ``"reset"`` (close the connection without an answer).
            times: None: every request; otherwise only the next ``times`` requests (after
                those queued before).
        """
        if not (isinstance(failure, int) or failure in ("hang", "reset")):
            raise ValueError(f"unknown failure {failure!r}")
        with self._lock:
            if times is None:
                self._fail_always[path] = failure
            else:
                self._failures.setdefault(path, []).extend([failure] * times)

    def fail_translate(self, status: Failure, times: int | None = None) -> None:
        """Make ``/v2/translate`` fail; see :meth:`fail`."""
        self.fail("/v2/translate", status, times)

    def heal(self) -> None:
        """Stop every injected failure (requests hanging now stay hung until the server stops)."""
        with self._lock:
            self._failures.clear()
            self._fail_always.clear()

    def requests_to(self, path: str) -> list[Recorded]:
        """The requests received for ``path``, in order."""
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def translate_requests(self) -> list[Recorded]:
        return self.requests_to("/v2/translate")

    def _next_failure(self, path: str) -> Failure | None:
        with self._lock:
            queued = self._failures.get(path)
            if queued:
                return queued.pop(0)
            return self._fail_always.get(path)

    def _record(self, entry: Recorded) -> None:
        with self._lock:
            self.requests.append(entry)


def _handler(state: DeepLServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _body(self) -> Any:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            ctype = self.headers.get("Content-Type", "")
            if ctype.startswith("application/json"):
                return json.loads(raw or b"{}")
            form = urllib.parse.parse_qs(raw.decode("utf-8"))
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
            merged = {**query, **form}
            return {k: (v if k == "text" else v[0]) for k, v in merged.items()}

        def _send(self, status: int, payload: Any) -> None:
            data = json.dumps(payload).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, message: str | None = None) -> None:
            self._send(status, {"message": message or _MESSAGES.get(status, "error")})

        def _handle(self) -> None:
            path = urllib.parse.urlsplit(self.path).path
            body = self._body()
            state._record(Recorded(self.command, path, dict(self.headers), body, time.monotonic()))
            if self.headers.get("Authorization") != f"DeepL-Auth-Key {state.auth_key}":
                return self._error(403)
            failure = state._next_failure(path)
            if failure == "hang":
                state._released.wait()
                self.close_connection = True
                return None
            if failure == "reset":
                return self._reset()
            if path == "/v2/translate" and state.latency:
                time.sleep(state.latency)
            if isinstance(failure, int):
                return self._error(failure)
            if path == "/v2/languages" and state.languages_endpoint:
                return self._languages(body.get("type", "source"))
            if path == "/v2/usage":
                return self._send(
                    200, {"character_count": state.character_count, "character_limit": state.character_limit}
                )
            if path == "/v2/translate" and self.command == "POST":
                return self._translate(body)
            return self._error(404, "Not found")

        def _languages(self, kind: str) -> None:
            if kind == "target":
                payload = [
                    {"language": code, "name": name, "supports_formality": formal}
                    for code, (name, formal) in TARGET_LANGUAGES.items()
                ]
            else:
                payload = [{"language": code, "name": name} for code, name in SOURCE_LANGUAGES.items()]
            self._send(200, payload)

        def _reset(self) -> None:
            # SO_LINGER (on, 0 s) makes close() send a TCP reset rather than a clean FIN.
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.connection.close()

        def _translate(self, body: dict[str, Any]) -> None:
            texts = body.get("text")
            target = str(body.get("target_lang", "")).upper()
            source = body.get("source_lang")
            if not texts or not isinstance(texts, list):
                return self._error(400, "Parameter 'text' not specified.")
            if target not in TARGET_LANGUAGES:
                return self._error(400, "Value for 'target_lang' not supported.")
            if source is not None and str(source).upper() not in SOURCE_LANGUAGES:
                return self._error(400, "Value for 'source_lang' not supported.")
            billed = sum(len(t) for t in texts)
            with state._lock:
                if state.character_count + billed > state.character_limit:
                    over = True
                else:
                    over = False
                    state.character_count += billed
            if over:
                return self._error(456)
            detected = str(source).upper() if source else "EN"
            self._send(
                200,
                {
                    "translations": [
                        {
                            "detected_source_language": detected,
                            "text": f"{target}: {t}",
                            "billed_characters": len(t),
                        }
                        for t in texts
                    ]
                },
            )

        do_GET = _handle
        do_POST = _handle

    return Handler


@contextlib.contextmanager
def deepl_server(**settings: Any) -> Iterator[DeepLServer]:
    """Run a DeepL-compatible server on 127.0.0.1 (a free port) for the block's duration."""
    state = DeepLServer(**settings)
    with running(_handler(state)) as server:
        state.url = f"http://127.0.0.1:{server.port}"
        try:
            yield state
        finally:
            state._released.set()  # let hung handlers go before the server stops
