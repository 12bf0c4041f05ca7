"""Whole sessions over a real Socket.IO connection: order, acks, streams, backpressure."""

from __future__ import annotations

import base64

import anyio
import numpy as np
import pytest

from stsdub.server import ServerSettings
from stsdub.testing import FakeASR, FakeDiarizer, FakeSeparator, FakeSynthesizer

from .conftest import RATE, TOKEN, fakes, fragment, init_payload, serve

pytestmark = pytest.mark.anyio


def _index(events: list[tuple[str, object]], name: str, seq: int, stream_id: str) -> int:
    for i, (event, data) in enumerate(events):
        if (
            event == name
            and isinstance(data, dict)
            and data.get("sequence_number") == seq
            and data.get("stream_id") == stream_id
        ):
            return i
    raise AssertionError(f"no {name} for {stream_id}/{seq}")


async def test_full_session_acks_then_results_in_order() -> None:
    async with serve() as running:
        status, body = await running.get("/health")
        assert status == 200 and '"models_loaded":true' in body
        status, body = await running.get("/ready")
        assert status == 200 and '"ready"' in body

        client = await running.client()
        ready = await client.open_stream("match-1", target_language="es")
        assert ready["max_inflight"] == 3
        assert ready["audio_format"] == {"format": "pcm_s16le", "sample_rate_hz": RATE, "channels": 1}
        assert ready["backpressure"] == {"low": 2, "medium": 4, "high": 7, "critical": 10}

        for seq in range(6):
            amplitude = 0.0 if seq == 3 else 0.3  # fragment 3 holds no speech
            payload = fragment("match-1", seq)
            if amplitude == 0.0:
                payload["audio"]["data_base64"] = base64.b64encode(bytes(2 * RATE // 4)).decode()
            await client.emit("fragment:data", payload)
        processed = await client.wait_count("fragment:processed", 6, "match-1")
        acks = client.of("fragment:ack", "match-1")

        assert [a["sequence_number"] for a in acks] == list(range(6))
        assert all(a["status"] == "queued" for a in acks)
        assert [p["sequence_number"] for p in processed] == list(range(6))
        for seq in range(6):  # each ack reaches the client before that fragment's result
            assert _index(client.events, "fragment:ack", seq, "match-1") < _index(
                client.events, "fragment:processed", seq, "match-1"
            )
        for p in processed:
            seq = p["sequence_number"]
            assert p["fragment_id"] == f"match-1-f{seq}"
            assert p["status"] == "success"
            assert p["error"] is None
            assert p["timestamp"] == 1000 * seq
            audio = p["dubbed_audio"]
            assert (
                audio["format"] == "pcm_s16le" and audio["sample_rate_hz"] == RATE and audio["channels"] == 1
            )
            assert len(base64.b64decode(audio["data_base64"])) == 2 * RATE // 4  # as long as the input
            assert audio["duration_ms"] == 250
            assert p["processing_time_ms"] >= 0
            if seq == 3:
                assert p["transcript"] == "" and p["translated_text"] is None
                assert audio["kind"] == "silence"
            else:
                assert p["transcript"] == f"speech {seq}"
                assert p["translated_text"] == f"[es] speech {seq}"
                assert audio["kind"] == "dubbed"
                assert {"asr_ms", "translation_ms", "tts_ms", "pipeline_ms"} <= set(p["stage_timings"])

        await client.emit("stream:end", {"stream_id": "match-1"})
        (complete,) = await client.wait_count("stream:complete", 1, "match-1")
        assert complete["total_fragments"] == 6 and complete["success_count"] == 6
        assert complete["failed_count"] == 0 and complete["rejected_count"] == 0
        # Nothing arrives for the stream after stream:complete.
        assert client.events[-1][0] == "stream:complete"

        # The id is free again once the stream completed.
        await anyio.sleep(0.05)
        again = await client.open_stream("match-1")
        assert again["session_id"] != ready["session_id"]


async def test_several_streams_at_once_stay_separate_and_ordered() -> None:
    settings = ServerSettings(auth_token=TOKEN, target_language="es", max_concurrent_streams=3)
    async with serve(settings, **fakes(latency=0.01)) as running:
        a = await running.client()
        b = await running.client()
        await a.open_stream("a1", target_language="de")
        await a.open_stream("a2", target_language="fr")
        await b.open_stream("b1")
        # A fourth stream is over the limit; the error does not disturb the others.
        await b.emit(
            "stream:init", {"stream_id": "b2", "config": {"target_language": "es", "sample_rate_hz": RATE}}
        )
        (limit,) = await b.wait_count("error", 1, "b2")
        assert limit["code"] == "STREAM_LIMIT_REACHED" and limit["event"] == "stream:init"

        count = 9  # below the critical threshold (10): nothing is rejected
        for seq in range(count):
            await a.emit("fragment:data", fragment("a1", seq))
            await b.emit("fragment:data", fragment("b1", seq))
            await a.emit("fragment:data", fragment("a2", seq))
        for client, stream_id, lang in ((a, "a1", "de"), (a, "a2", "fr"), (b, "b1", "es")):
            processed = await client.wait_count("fragment:processed", count, stream_id)
            assert [p["sequence_number"] for p in processed] == list(range(count))
            assert [p["translated_text"] for p in processed] == [f"[{lang}] speech {s}" for s in range(count)]
            assert {p["status"] for p in processed} == {"success"}
        # Each client hears only about its own streams.
        assert {p["stream_id"] for p in a.of("fragment:processed")} == {"a1", "a2"}
        assert {p["stream_id"] for p in b.of("fragment:processed")} == {"b1"}
        assert not a.of("error") and len(b.of("error")) == 1


async def test_flooding_client_gets_backpressure_then_rejections_then_recovery() -> None:
    settings = ServerSettings(auth_token=TOKEN, target_language="es", max_inflight=2)
    # Each stage takes 0.3 s, so nothing is answered while the client floods.
    async with serve(settings, **fakes(latency=0.3)) as running:
        client = await running.client()
        ready = await client.open_stream("flood")
        assert ready["backpressure"] == {"low": 1, "medium": 3, "high": 5, "critical": 7}
        for seq in range(12):
            await client.emit("fragment:data", fragment("flood", seq))
        acks = await client.wait_count("fragment:ack", 12, "flood")
        queued = [a["sequence_number"] for a in acks if a["status"] == "queued"]
        rejected = [a for a in acks if a["status"] == "rejected"]
        assert queued[:7] == list(range(7))
        assert rejected, "a flood past the critical threshold is rejected"
        for ack in rejected:
            assert ack["error"]["code"] == "BACKPRESSURE_REJECTED" and ack["error"]["retryable"] is True

        processed = await client.wait_count("fragment:processed", len(queued), "flood")
        assert [p["sequence_number"] for p in processed] == queued
        await client.wait_for(lambda: client.of("backpressure", "flood")[-1]["severity"] == "low")
        levels = [(e["severity"], e["action"]) for e in client.of("backpressure", "flood")]
        assert levels[:2] == [("medium", "slow_down"), ("high", "pause")]
        assert levels[-1] == ("low", "none")
        first_high = client.of("backpressure", "flood")[1]
        assert first_high["current_inflight"] == 5 and first_high["max_inflight"] == 2
        # The HIGH event reaches the client before the first rejection.
        kinds = [(e, d.get("severity") or d.get("status")) for e, d in client.events if isinstance(d, dict)]
        assert kinds.index(("backpressure", "high")) < kinds.index(("fragment:ack", "rejected"))

        # A rejected fragment was not accepted: the client may send it again.
        retry = rejected[0]["sequence_number"]
        await client.emit("fragment:data", fragment("flood", retry))
        await client.wait_count("fragment:processed", len(queued) + 1, "flood")
        assert client.of("fragment:processed", "flood")[-1]["sequence_number"] == retry
        assert len(client.of("fragment:processed", "flood")) == len(queued) + 1


async def test_pause_refuses_fragments_until_resume() -> None:
    async with serve() as running:
        client = await running.client()
        await client.open_stream("p")
        await client.emit("fragment:data", fragment("p", 0))
        await client.emit("stream:pause", {"stream_id": "p"})
        await client.wait_count("stream:paused", 1, "p")
        await client.emit("fragment:data", fragment("p", 1))
        await client.emit("stream:resume", {"stream_id": "p"})
        await client.wait_count("stream:resumed", 1, "p")
        await client.emit("fragment:data", fragment("p", 2))
        acks = await client.wait_count("fragment:ack", 3, "p")
        assert [(a["sequence_number"], a["status"]) for a in acks] == [
            (0, "queued"),
            (1, "rejected"),
            (2, "queued"),
        ]
        assert acks[1]["error"]["code"] == "STREAM_PAUSED"
        processed = await client.wait_count("fragment:processed", 2, "p")
        assert [p["sequence_number"] for p in processed] == [0, 2]


async def test_disconnect_closes_the_clients_streams() -> None:
    async with serve(None, **fakes(latency=0.3)) as running:
        first = await running.client()
        await first.open_stream("shared-id")
        for seq in range(3):
            await first.emit("fragment:data", fragment("shared-id", seq))
        await first.wait_count("fragment:ack", 3, "shared-id")
        assert running.app.service.metrics.in_flight._value.get() == 3
        await first.close()
        service = running.app.service
        with anyio.fail_after(10):
            while service.sessions:  # noqa: ASYNC110 - polls the service from outside
                await anyio.sleep(0.01)
        assert service.metrics.in_flight._value.get() == 0
        second = await running.client()
        await second.open_stream("shared-id")
        await second.emit("fragment:data", fragment("shared-id", 0))
        (result,) = await second.wait_count("fragment:processed", 1, "shared-id")
        assert result["status"] == "success"


async def test_a_stream_can_ask_for_its_soundtrack_under_the_dub() -> None:
    async with serve() as running:
        client = await running.client()
        await client.open_stream("live-mix", background="duck")
        await client.open_stream("live-plain")
        for stream_id in ("live-mix", "live-plain"):
            await client.emit("fragment:data", fragment(stream_id, 0))
        (mixed,) = await client.wait_count("fragment:processed", 1, "live-mix")
        (plain,) = await client.wait_count("fragment:processed", 1, "live-plain")
        assert "mixed_audio" not in plain  # results stay small when not asked for
        audio, mix = mixed["dubbed_audio"], mixed["mixed_audio"]
        assert mix["kind"] == "mixed" and audio["kind"] == "dubbed"
        assert {k: mix[k] for k in ("format", "sample_rate_hz", "channels", "duration_ms")} == {
            k: audio[k] for k in ("format", "sample_rate_hz", "channels", "duration_ms")
        }
        assert mix["data_base64"] != audio["data_base64"]  # the original is under the dub

        # No separator in this service: asking to separate is refused, clearly.
        await client.emit("stream:init", init_payload("live-sep", background="separate"))
        await client.wait_for(lambda: client.of("error", "live-sep"))
        (error,) = client.of("error", "live-sep")
        assert error["code"] == "INVALID_CONFIG" and "separator" in error["message"]
        await client.emit("stream:init", init_payload("live-bad", background="music"))
        await client.wait_for(lambda: client.of("error", "live-bad"))
        assert client.of("error", "live-bad")[0]["code"] == "INVALID_CONFIG"


def _voiced_base64(f0: float, seconds: float = 0.8) -> str:
    """A buzz with fundamental ``f0``: a voice the fake diarizer tells from another pitch."""
    t = np.arange(round(seconds * RATE)) / RATE
    buzz = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 8))
    samples = (0.3 * buzz / np.max(np.abs(buzz)) * 32767).astype("<i2")
    return base64.b64encode(samples.tobytes()).decode()


async def test_a_service_with_a_separator_and_a_diarizer() -> None:
    stages = fakes()
    stages["synthesizer"] = FakeSynthesizer(mode="async", concurrency=64, voice_pools=(("low",), ("high",)))
    separator = FakeSeparator()
    async with serve(**stages, separator=separator, diarizer=FakeDiarizer()) as running:
        client = await running.client()
        await client.open_stream("panel", background="separate", target_language="en")
        for seq, f0 in enumerate([110.0, 230.0, 112.0]):
            await client.emit(
                "fragment:data", fragment("panel", seq, seconds=0.8, data_base64=_voiced_base64(f0))
            )
        processed = await client.wait_count("fragment:processed", 3, "panel")
    assert [p["speaker"] for p in processed] == ["S1", "S2", "S1"]
    assert [p["voice"] for p in processed] == ["low", "high", "low"]
    assert separator.calls == 3
    assert all(p["mixed_audio"]["kind"] == "mixed" for p in processed)
    assert all("separation_ms" in p["stage_timings"] for p in processed)


async def test_a_stream_says_whether_it_wants_speakers() -> None:
    async with serve(**fakes(), diarizer=FakeDiarizer()) as running:
        client = await running.client()
        await client.emit("stream:init", init_payload("quiet", speakers=False, target_language="en"))
        await client.wait_for(lambda: client.of("stream:ready", "quiet"))
        await client.emit(
            "fragment:data", fragment("quiet", 0, seconds=0.8, data_base64=_voiced_base64(110.0))
        )
        (result,) = await client.wait_count("fragment:processed", 1, "quiet")
        assert result["speaker"] is None
    async with serve(**fakes()) as running:  # no diarizer: asking for speakers is refused
        client = await running.client()
        await client.emit("stream:init", init_payload("call", speakers=True))
        await client.wait_for(lambda: client.of("error", "call"))
        (error,) = client.of("error", "call")
        assert error["code"] == "INVALID_CONFIG" and "diarizer" in error["message"]
        await client.emit("stream:init", init_payload("bad", speakers="yes"))
        await client.wait_for(lambda: client.of("error", "bad"))
        assert client.of("error", "bad")[0]["code"] == "INVALID_PAYLOAD"  # a mistyped field


async def test_a_stream_with_sentence_wait_translates_a_sentence_over_two_fragments_once() -> None:
    stages = fakes()
    async with serve(**stages) as running:
        client = await running.client()
        await client.open_stream("talk", sentence_wait_ms=5000)
        for seq in range(2):  # "speech 0", "speech 1": no sentence ends between them
            await client.emit("fragment:data", fragment("talk", seq))
        await client.emit("stream:end", {"stream_id": "talk"})
        results = await client.wait_count("fragment:processed", 2, "talk")
    assert [r.text for r in stages["translator"].requests] == ["speech 0 speech 1"]
    assert " ".join(r["translated_text"] for r in results) == "[es] speech 0 speech 1"


async def test_a_stream_with_captions_gets_them_before_each_result() -> None:
    growing = FakeASR(
        text=lambda r: "hello there" if r.interim else "hello there friend", mode="async", concurrency=4
    )
    async with serve(**{**fakes(), "asr": growing}) as running:
        client = await running.client()
        await client.open_stream("live", captions="interim", caption_interval_ms=50)
        for _ in range(4):  # the utterance as it is spoken: 0.25 s at a time
            answer = await client.sio.call("audio:partial", fragment("live", 0, seconds=0.25))
            assert answer["status"] == "accepted", answer
            await anyio.sleep(0.08)
        await client.emit("fragment:data", fragment("live", 0, seconds=1.0))
        (result,) = await client.wait_count("fragment:processed", 1, "live")
        captions = client.of("caption", "live")
        kinds = [c["type"] for c in captions]
        assert "interim" in kinds and kinds[-2:] == ["final", "translation"], kinds
        interim = next(c for c in captions if c["type"] == "interim")
        assert interim["text"] == "hello there" and interim["fragment_id"] is None
        final, translation = captions[-2:]
        assert final["text"] == result["transcript"] == "hello there friend"
        assert final["fragment_id"] == "live-f0" and final["latency_ms"] >= 0
        assert (
            translation["text"] == result["translated_text"] and translation["source_text"] == final["text"]
        )
        assert _index(client.events, "caption", 0, "live") < _index(
            client.events, "fragment:processed", 0, "live"
        )

        # A stream opened without captions refuses partial audio; a bad captions value is refused.
        await client.open_stream("plain")
        answer = await client.sio.call("audio:partial", fragment("plain", 0))
        assert answer["status"] == "rejected" and "without config.captions" in answer["error"]["message"]
        await client.emit("stream:init", init_payload("bad", captions="always"))
        await client.wait_for(lambda: client.of("error", "bad"))
        assert client.of("error", "bad")[0]["code"] == "INVALID_CONFIG"
