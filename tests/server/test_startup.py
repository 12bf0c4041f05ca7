"""Start-up: readiness while the models load, a load failure, and a service without a translator."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
import socketio

from stsdub.server import ServerSettings
from stsdub.testing import FakeASR, FakeSynthesizer, FakeTranslator

from .conftest import RATE, TOKEN, Running, fragment, serve

pytestmark = pytest.mark.anyio


class GatedASR(FakeASR):
    """A fake ASR whose loading (its warm-up) lasts until the test opens the gate."""

    def __init__(self, *, load_failure: str | None = None, **kwargs: Any) -> None:
        super().__init__(mode="async", concurrency=8, **kwargs)
        self.gate = anyio.Event()
        self.load_failure = load_failure

    async def warmup(self) -> None:
        await self.gate.wait()
        if self.load_failure is not None:
            raise RuntimeError(self.load_failure)


def _stages(asr: FakeASR) -> dict[str, Any]:
    return {"asr": asr, "translator": FakeTranslator(), "synthesizer": FakeSynthesizer()}


async def _refused_connect(running: Running, token: str = TOKEN) -> dict[str, Any]:
    """Connect and expect a refusal; returns the refusal's data (``connect_error``)."""
    sio = socketio.AsyncClient(reconnection=False)
    refusals: list[Any] = []

    @sio.on("connect_error")
    async def on_error(data: Any = None) -> None:
        refusals.append(data)

    with pytest.raises(socketio.exceptions.ConnectionError):
        await sio.connect(running.url, auth={"token": token}, transports=["websocket"], wait_timeout=10)
    assert not sio.connected
    (data,) = refusals
    assert isinstance(data, dict), data
    return data


async def test_while_the_models_load_ready_is_503_and_connections_are_refused() -> None:
    asr = GatedASR()
    async with serve(wait_ready=False, **_stages(asr)) as running:
        status, body = await running.get("/ready")
        assert (status, json.loads(body)) == (503, {"status": "loading", "models_loaded": False})
        status, body = await running.get("/health")
        assert status == 200 and json.loads(body)["models_loaded"] is False
        refusal = await _refused_connect(running)
        assert refusal["code"] == "NOT_READY" and "still loading" in refusal["message"]
        # The same fields under "data", where the JavaScript client exposes them.
        assert refusal["data"] == {"code": "NOT_READY", "message": refusal["message"]}
        # The token is checked first.
        assert (await _refused_connect(running, token="wrong"))["code"] == "UNAUTHORIZED"
        asr.gate.set()
        with anyio.fail_after(10):
            while not running.app.service.ready:  # noqa: ASYNC110 - the service has no event
                await anyio.sleep(0.01)
        status, body = await running.get("/ready")
        assert status == 200 and json.loads(body)["status"] == "ready"
        client = await running.client()
        assert client.sio.connected


async def test_a_load_failure_is_reported_and_no_connection_is_ever_accepted() -> None:
    fatal: list[BaseException] = []
    asr = GatedASR(load_failure="no weights here")
    async with serve(wait_ready=False, on_fatal=fatal.append, **_stages(asr)) as running:
        await _refused_connect(running)  # loading
        asr.gate.set()
        with anyio.fail_after(10):
            while not fatal:  # noqa: ASYNC110 - the service has no event
                await anyio.sleep(0.01)
        assert "no weights here" in str(fatal[0])
        # Embedded without on_fatal exiting, the service stays up and says why it is not ready.
        status, body = await running.get("/ready")
        ready = json.loads(body)
        assert status == 503 and ready["status"] == "failed" and "no weights here" in ready["error"]
        status, body = await running.get("/health")
        assert status == 200 and json.loads(body)["models_loaded"] is False
        refusal = await _refused_connect(running)
        assert refusal["code"] == "NOT_READY"
        assert "failed to load" in refusal["message"] and "no weights here" in refusal["message"]
        assert not running.app.service.connections


def _no_translator() -> dict[str, Any]:
    return {
        "asr": FakeASR(mode="async", concurrency=8),
        "translator": None,
        "synthesizer": FakeSynthesizer(mode="async", concurrency=8),
    }


async def test_without_a_translator_same_language_streams_are_dubbed() -> None:
    async with serve(**_no_translator()) as running:
        client = await running.client()
        # In the flat form the reference's clients send: the format's name, its fields beside it.
        flat = {"audio_format": "pcm_s16le", "sample_rate_hz": RATE, "channels": 1}
        ready = await client.open_stream("revoice", source_language="en", target_language="en-US", **flat)
        assert ready["audio_format"] == {"format": "pcm_s16le", "sample_rate_hz": RATE, "channels": 1}
        await client.emit("fragment:data", fragment("revoice", 0))
        (result,) = await client.wait_count("fragment:processed", 1, "revoice")
        assert result["status"] == "success" and result["transcript"] == "speech 0"
        # Re-voiced: the words spoken are the transcript, untranslated.
        assert result["translated_text"] == "speech 0" and result["dubbed_audio"]["kind"] == "dubbed"


async def test_without_a_translator_a_stream_that_needs_one_is_refused_with_a_hint() -> None:
    settings = ServerSettings(auth_token=TOKEN, target_language="es", source_language="en")
    async with serve(settings, **_no_translator()) as running:
        client = await running.client()
        audio = {"audio_format": {"format": "pcm_s16le", "sample_rate_hz": RATE, "channels": 1}}
        cases = [
            {"source_language": "en", "target_language": "es"},
            {"target_language": "de"},  # the service's source (en) applies
            {"source_language": "fr"},  # the service's target (es) applies
        ]
        for number, config in enumerate(cases):
            await client.emit("stream:init", {"stream_id": f"mt{number}", "config": {**config, **audio}})
        errors = await client.wait_count("error", len(cases))
        assert [e["code"] for e in errors] == ["TRANSLATOR_UNAVAILABLE"] * len(cases)
        error = errors[0]
        assert error["retryable"] is False and error["event"] == "stream:init"
        assert error["stream_id"] == "mt0" and error["stage"] == "session"
        message = error["message"]
        assert "en into es" in message and "needs a translator" in message
        hints = ("STSDUB_TRANSLATOR", "--translator", "DEEPL_AUTH_KEY", "ctranslate2", "translator.model")
        assert all(hint in message for hint in hints), message
        assert not client.of("stream:ready") and not running.app.service.sessions
        # The refusal took nothing: the service's source language re-voices on the same connection.
        await client.open_stream("same", source_language=None, target_language="en")
