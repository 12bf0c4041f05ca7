"""A real service on loopback: uvicorn serving the app, python-socketio clients talking to it."""

from __future__ import annotations

import base64
import contextlib
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import attrs
import numpy as np
import socketio
import uvicorn

import stsdub
from stsdub.server import ServerSettings, create_app
from stsdub.server._app import ServiceApp
from stsdub.testing import FakeASR, FakeSynthesizer, FakeTranslator

RATE = 16_000
TOKEN = "s3cret-token"


def pcm_base64(seconds: float = 0.25, *, rate: int = RATE, amplitude: float = 0.3, channels: int = 1) -> str:
    """Base64 PCM16 of a tone (amplitude 0 gives silence, which the fake ASR hears as no speech)."""
    n = round(seconds * rate)
    t = np.arange(n, dtype=np.float32) / rate
    samples = (amplitude * np.sin(2 * np.pi * 330.0 * t)).astype(np.float32)
    ints = np.clip(np.round(samples * 32767), -32768, 32767).astype("<i2")
    if channels > 1:
        ints = np.repeat(ints, channels)
    return base64.b64encode(ints.tobytes()).decode("ascii")


def fragment(
    stream_id: str, seq: int, *, seconds: float = 0.25, rate: int = RATE, **audio: Any
) -> dict[str, Any]:
    body = {
        "format": "pcm_s16le",
        "sample_rate_hz": rate,
        "channels": 1,
        "data_base64": pcm_base64(seconds, rate=rate),
    }
    body.update(audio)
    return {
        "fragment_id": f"{stream_id}-f{seq}",
        "stream_id": stream_id,
        "sequence_number": seq,
        "timestamp": 1_000 * seq,
        "audio": body,
    }


def init_payload(stream_id: str, **config: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "source_language": "en",
        "target_language": "es",
        "voice_profile": "default",
        "audio_format": {"format": "pcm_s16le", "sample_rate_hz": RATE, "channels": 1},
    }
    body.update(config)
    return {"stream_id": stream_id, "worker_id": "worker-1", "config": body}


def fakes(latency: float = 0.0, **kwargs: Any) -> dict[str, Any]:
    """Async fake stages (no threads) with a per-stage latency."""
    return {
        "asr": FakeASR(latency=latency, mode="async", concurrency=64),
        "translator": FakeTranslator(latency=latency, mode="async", concurrency=64, **kwargs),
        "synthesizer": FakeSynthesizer(latency=latency, mode="async", concurrency=64),
    }


class Client:
    """A Socket.IO client that records every event it receives, in order."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sio = socketio.AsyncClient(reconnection=False)
        self.events: list[tuple[str, Any]] = []
        self._changed = anyio.Event()

        @self.sio.on("*")
        async def catch_all(event: str, data: Any = None) -> None:
            self.events.append((event, data))
            self._changed.set()

    async def connect(self, token: str | None = TOKEN) -> None:
        await self.sio.connect(
            self.url,
            auth=None if token is None else {"token": token},
            transports=["websocket"],
            wait_timeout=10,
        )

    async def emit(self, event: str, data: Any) -> None:
        await self.sio.emit(event, data)

    def of(self, name: str, stream_id: str | None = None) -> list[Any]:
        return [
            d
            for e, d in self.events
            if e == name and (stream_id is None or (isinstance(d, dict) and d.get("stream_id") == stream_id))
        ]

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 30.0) -> None:
        with anyio.fail_after(timeout):
            while not predicate():
                self._changed = anyio.Event()
                await self._changed.wait()

    async def wait_count(
        self, name: str, count: int, stream_id: str | None = None, timeout: float = 30.0
    ) -> list[Any]:
        await self.wait_for(lambda: len(self.of(name, stream_id)) >= count, timeout)
        return self.of(name, stream_id)

    async def open_stream(self, stream_id: str, **config: Any) -> dict[str, Any]:
        before = len(self.of("stream:ready", stream_id)), len(self.of("error", stream_id))
        await self.emit("stream:init", init_payload(stream_id, **config))
        await self.wait_for(
            lambda: (len(self.of("stream:ready", stream_id)), len(self.of("error", stream_id))) != before
        )
        errors = self.of("error", stream_id)[before[1] :]
        assert not errors, errors
        return self.of("stream:ready", stream_id)[-1]  # type: ignore[no-any-return]

    async def close(self) -> None:
        if self.sio.connected:
            await self.sio.disconnect()


@attrs.define
class Running:
    url: str
    app: ServiceApp
    clients: list[Client] = attrs.field(factory=list)

    async def client(self, token: str | None = TOKEN) -> Client:
        client = Client(self.url)
        await client.connect(token)
        self.clients.append(client)
        return client

    async def get(self, path: str, *, origin: str | None = None) -> tuple[int, str]:
        return await http_get(self.url, path, origin=origin)


async def http_get(url: str, path: str, *, origin: str | None = None) -> tuple[int, str]:
    """A plain HTTP/1.1 GET over a socket (the app's own HTTP answers, nothing in between)."""
    host, port = url.removeprefix("http://").split(":")
    extra = f"Origin: {origin}\r\n" if origin else ""
    stream = await anyio.connect_tcp(host, int(port))
    async with stream:
        await stream.send(
            f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{extra}Connection: close\r\n\r\n".encode()
        )
        chunks = []
        with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
            while True:
                chunks.append(await stream.receive())
    raw = b"".join(chunks).decode()
    head, _, body = raw.partition("\r\n\r\n")
    status = int(head.split(" ", 2)[1])
    if "transfer-encoding: chunked" in head.lower():
        body = _dechunk(body)
    return status, body


def _dechunk(body: str) -> str:
    out, rest = [], body
    while rest:
        size_line, _, rest = rest.partition("\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        out.append(rest[:size])
        rest = rest[size + 2 :]
    return "".join(out)


@contextlib.asynccontextmanager
async def serve(
    settings: ServerSettings | None = None,
    *,
    wait_ready: bool = True,
    on_fatal: Callable[[BaseException], None] | None = None,
    **stages: Any,
) -> AsyncIterator[Running]:
    """Run the app under uvicorn on a free loopback port until the block ends.

    With ``wait_ready=False`` the block starts as soon as the server listens, while the
    models may still be loading.
    """
    settings = settings or ServerSettings(auth_token=TOKEN, target_language="es")
    dubber = stsdub.Dubber(**(stages or fakes()), device="cpu", retries=0)
    app = create_app(settings, dubber=dubber, on_fatal=on_fatal)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on", ws_ping_interval=None)
    server = uvicorn.Server(config)
    running = Running(f"http://127.0.0.1:{port}", app)
    with sock:
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: server.serve(sockets=[sock]))
            try:
                with anyio.fail_after(30):
                    while not (server.started and (app.service.ready or not wait_ready)):  # noqa: ASYNC110 - uvicorn has no event
                        await anyio.sleep(0.01)
                yield running
            finally:
                for client in running.clients:
                    await client.close()
                server.should_exit = True
