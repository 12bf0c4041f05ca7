"""Bad payloads get error answers; the connection and the other streams keep working."""

from __future__ import annotations

import base64
from typing import Any

import pytest
import socketio
from prometheus_client.parser import text_string_to_metric_families

from stsdub.server import ServerSettings

from .conftest import RATE, TOKEN, fragment, pcm_base64, serve

pytestmark = pytest.mark.anyio


def _bad_payloads() -> list[tuple[str, Any, str]]:
    def with_audio(**audio: Any) -> dict[str, Any]:
        return fragment("good", 1, **audio)

    def without(key: str) -> dict[str, Any]:
        payload = fragment("good", 1)
        del payload[key]
        return payload

    return [
        ("bad base64", with_audio(data_base64="@@not*base64@@"), "INVALID_AUDIO_FORMAT"),
        (
            "base64 with a line break",
            with_audio(data_base64=pcm_base64()[:40] + "\n" + pcm_base64()[40:]),
            "INVALID_AUDIO_FORMAT",
        ),
        (
            "rate other than declared",
            with_audio(sample_rate_hz=8000, data_base64=pcm_base64(rate=8000)),
            "INVALID_AUDIO_FORMAT",
        ),
        ("unsupported rate", with_audio(sample_rate_hz=12345), "INVALID_AUDIO_FORMAT"),
        (
            "channels other than declared",
            with_audio(channels=2, data_base64=pcm_base64(0.1, channels=2)),
            "INVALID_AUDIO_FORMAT",
        ),
        ("not PCM16", with_audio(format="opus"), "INVALID_AUDIO_FORMAT"),
        (
            "odd byte count",
            with_audio(data_base64=base64.b64encode(b"\x01\x02\x03").decode()),
            "INVALID_AUDIO_FORMAT",
        ),
        ("empty audio", with_audio(data_base64=""), "INVALID_AUDIO_FORMAT"),
        ("duration_ms disagrees", with_audio(duration_ms=900), "INVALID_AUDIO_FORMAT"),
        ("oversize", with_audio(data_base64=pcm_base64(1.0)), "PAYLOAD_TOO_LARGE"),
        ("audio data not text", with_audio(data_base64=12345), "INVALID_PAYLOAD"),
        ("missing sequence_number", without("sequence_number"), "INVALID_PAYLOAD"),
        ("missing fragment_id", without("fragment_id"), "INVALID_PAYLOAD"),
        ("missing audio", without("audio"), "INVALID_PAYLOAD"),
        ("boolean sequence_number", {**fragment("good", 1), "sequence_number": True}, "INVALID_PAYLOAD"),
        ("negative sequence_number", {**fragment("good", 1), "sequence_number": -4}, "INVALID_PAYLOAD"),
        ("text sequence_number", {**fragment("good", 1), "sequence_number": "1"}, "INVALID_PAYLOAD"),
        ("path in fragment_id", {**fragment("good", 1), "fragment_id": "../../etc"}, "INVALID_PAYLOAD"),
        ("not an object", "hello", "INVALID_PAYLOAD"),
        ("a list", [1, 2, 3], "INVALID_PAYLOAD"),
        ("unknown stream", fragment("nope", 1), "STREAM_NOT_FOUND"),
    ]


async def test_malformed_fragments_are_answered_and_the_connection_survives() -> None:
    # 1 s of 16 kHz PCM16 is 42,668 base64 characters: over this limit; 0.25 s is not.
    settings = ServerSettings(
        auth_token=TOKEN, target_language="es", max_payload_bytes=20_000, backpressure_critical=100
    )
    async with serve(settings) as running:
        client = await running.client()
        await client.open_stream("good")
        await client.open_stream("other")
        bad = _bad_payloads()
        for i, (_, payload, _) in enumerate(bad):
            await client.emit("fragment:data", payload)
            # The other stream of the same connection goes on while the bad ones come in.
            await client.emit("fragment:data", fragment("other", i))
        await client.sio.emit("fragment:data")  # no payload at all
        acks = await client.wait_count("fragment:ack", 2 * len(bad) + 1)
        refused = [a for a in acks if a["status"] == "rejected"]
        assert len(refused) == len(bad) + 1
        for (name, _, code), ack in zip(bad, refused[:-1], strict=True):
            assert ack["error"]["code"] == code, (name, ack)
            assert ack["error"]["retryable"] is False and ack["error"]["stage"] == "ingest"
            assert ack["error"]["message"]
        assert refused[-1]["error"]["code"] == "INVALID_PAYLOAD"

        # Sequence numbers: the first good one is accepted; a duplicate or a lower one is not.
        before = len(client.of("fragment:ack", "good"))
        for seq in (5, 5, 3, 6):
            await client.emit("fragment:data", fragment("good", seq))
        acks = await client.wait_count("fragment:ack", before + 4, "good")
        tail = [(a["sequence_number"], a["status"], (a.get("error") or {}).get("code")) for a in acks[-4:]]
        assert tail == [
            (5, "queued", None),
            (5, "rejected", "SEQUENCE_ERROR"),
            (3, "rejected", "SEQUENCE_ERROR"),
            (6, "queued", None),
        ]
        assert "duplicate" in acks[-3]["error"]["message"] and "out-of-order" in acks[-2]["error"]["message"]

        good = await client.wait_count("fragment:processed", 2, "good")
        other = await client.wait_count("fragment:processed", len(bad), "other")
        assert [p["sequence_number"] for p in good] == [5, 6]
        assert [p["sequence_number"] for p in other] == list(range(len(bad)))
        assert {p["status"] for p in good + other} == {"success"}
        assert client.sio.connected

        _, text = await running.get("/metrics")
        samples = {
            (s.name, s.labels.get("stage"), s.labels.get("error_code")): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }
        expected: dict[str, int] = {}
        for _, _, code in bad:
            expected[code] = expected.get(code, 0) + 1
        expected["INVALID_PAYLOAD"] += 1
        expected["SEQUENCE_ERROR"] = 2
        for code, count in expected.items():
            assert samples[("sts_fragment_errors_total", "ingest", code)] == count, code


async def test_bad_stream_init_gets_an_error_event() -> None:
    settings = ServerSettings(auth_token=TOKEN, target_language=None)
    async with serve(settings) as running:
        client = await running.client()
        await client.open_stream("taken", target_language="es")
        cases = [
            ({"stream_id": "s1", "config": {"sample_rate_hz": RATE}}, "INVALID_CONFIG"),  # no target
            (
                {"stream_id": "s2", "config": {"target_language": "es", "sample_rate_hz": 1234}},
                "INVALID_AUDIO_FORMAT",
            ),
            (
                {
                    "stream_id": "s3",
                    "config": {"target_language": "es", "sample_rate_hz": RATE, "format": "mp3"},
                },
                "INVALID_AUDIO_FORMAT",
            ),
            ({"stream_id": "s4", "config": {"target_language": "es"}}, "INVALID_PAYLOAD"),  # no rate
            (
                {
                    "stream_id": "s4b",
                    "config": {"target_language": "es", "audio_format": "aac", "sample_rate_hz": RATE},
                },
                "INVALID_AUDIO_FORMAT",
            ),
            (
                {"stream_id": "s5", "config": {"target_language": "e s; rm", "sample_rate_hz": RATE}},
                "UNSUPPORTED_LANGUAGE",
            ),
            (
                {"stream_id": "../s6", "config": {"target_language": "es", "sample_rate_hz": RATE}},
                "INVALID_PAYLOAD",
            ),
            (
                {"stream_id": "taken", "config": {"target_language": "es", "sample_rate_hz": RATE}},
                "STREAM_EXISTS",
            ),
            (
                {
                    "stream_id": "s8",
                    "max_inflight": 0,
                    "config": {"target_language": "es", "sample_rate_hz": RATE},
                },
                "INVALID_CONFIG",
            ),
            ({"config": {"target_language": "es", "sample_rate_hz": RATE}}, "INVALID_PAYLOAD"),  # no id
        ]
        for payload, _ in cases:
            await client.emit("stream:init", payload)
        errors = await client.wait_count("error", len(cases))
        assert [e["code"] for e in errors] == [code for _, code in cases]
        assert all(e["event"] == "stream:init" for e in errors)
        assert len(client.of("stream:ready")) == 1
        # Control events for streams that do not exist (or belong to no one) are refused too.
        await client.emit("stream:end", {"stream_id": "ghost"})
        await client.emit("stream:pause", "ghost")
        errors = await client.wait_count("error", len(cases) + 2)
        assert [e["code"] for e in errors[-2:]] == ["STREAM_NOT_FOUND", "INVALID_PAYLOAD"]
        # …and the open stream still works.
        await client.emit("fragment:data", fragment("taken", 0))
        (result,) = await client.wait_count("fragment:processed", 1, "taken")
        assert result["status"] == "success"


async def test_a_stream_belongs_to_the_connection_that_opened_it() -> None:
    async with serve() as running:
        owner = await running.client()
        intruder = await running.client()
        await owner.open_stream("private")
        await intruder.emit("fragment:data", fragment("private", 0))
        await intruder.emit("stream:end", {"stream_id": "private"})
        (ack,) = await intruder.wait_count("fragment:ack", 1)
        assert ack["status"] == "rejected" and ack["error"]["code"] == "STREAM_NOT_FOUND"
        (error,) = await intruder.wait_count("error", 1)
        assert error["code"] == "STREAM_NOT_FOUND"
        await owner.emit("fragment:data", fragment("private", 0))
        (result,) = await owner.wait_count("fragment:processed", 1, "private")
        assert result["status"] == "success"
        assert not owner.of("stream:complete")


async def test_token_is_required_when_configured() -> None:
    async with serve() as running:
        for token in (None, "wrong-token", ""):
            with pytest.raises(socketio.exceptions.ConnectionError):
                await running.client(token)
        client = await running.client(TOKEN)
        assert client.sio.connected
        # The token may come as a bearer header instead of the auth object.
        other = socketio.AsyncClient(reconnection=False)
        await other.connect(
            running.url,
            headers={"Authorization": f"Bearer {TOKEN}"},
            transports=["websocket"],
            wait_timeout=10,
        )
        assert other.connected
        await other.disconnect()
        _, text = await running.get("/metrics")
        rejected = [
            s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
            if s.name == "sts_connections_rejected_total"
        ]
        assert rejected == [3.0]


async def test_no_token_needed_when_none_is_configured() -> None:
    async with serve(ServerSettings(target_language="es")) as running:
        client = await running.client(token=None)
        await client.open_stream("open")
        await client.emit("fragment:data", fragment("open", 0))
        (result,) = await client.wait_count("fragment:processed", 1, "open")
        assert result["transcript"] == "speech 0"


async def test_cors_is_closed_by_default_and_opens_per_origin() -> None:
    async with serve() as running:
        status, _ = await running.get("/socket.io/?EIO=4&transport=polling", origin="https://evil.example")
        assert status == 400
        status, _ = await running.get("/socket.io/?EIO=4&transport=polling")
        assert status == 200
    settings = ServerSettings(auth_token=TOKEN, target_language="es", cors_origins=("https://app.example",))
    async with serve(settings) as running:
        status, _ = await running.get("/socket.io/?EIO=4&transport=polling", origin="https://app.example")
        assert status == 200
        status, _ = await running.get("/socket.io/?EIO=4&transport=polling", origin="https://evil.example")
        assert status == 400
