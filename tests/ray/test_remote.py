"""The remote stage client, the wire format and the replica's logic, without a Ray cluster.

The hop is an in-process transport that drops, delays past the timeout, answers twice or
with another call's answer, or refuses as a dead replica or a full queue would.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import types
from typing import Any

import anyio
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import stsdub
from stsdub import (
    ASRRequest,
    AudioBuffer,
    ErrorCode,
    Segment,
    StageError,
    Status,
    SynthesisRequest,
    Transcript,
    Translation,
    TranslationRequest,
    Word,
)
from stsdub._core import _values
from stsdub.ray import LocalTransport, RemoteASR, RemoteSynthesizer, RemoteTranslator, remote_stage
from stsdub.ray._cli import add_ray_parser, run_ray
from stsdub.ray._replica import ReplicaCore
from stsdub.ray._wire import WIRE_VERSION, decode_value, encode_value
from stsdub.testing import FakeASR, FakeSynthesizer, FakeTranslator

from ..strategies import fragments, tone
from ._transports import ACTIONS, GOOD, FaultyTransport

RATE = 16_000


def remote_stages(
    schedules: dict[str, Any] | None = None, *, timeout: float = 0.25, **fakes: object
) -> dict[str, Any]:
    """Remote ASR, translator and synthesizer around fake stages, through faulty transports."""
    schedules = schedules or {}
    stages = {
        "asr": fakes.get("asr") or FakeASR(),
        "translator": fakes.get("translator") or FakeTranslator(),
        "synthesizer": fakes.get("synthesizer") or FakeSynthesizer(sample_rate=RATE),
    }
    classes = {"asr": RemoteASR, "translator": RemoteTranslator, "synthesizer": RemoteSynthesizer}
    return {
        kind: classes[kind](transport=FaultyTransport(kind, stage, schedules.get(kind)), timeout=timeout)
        for kind, stage in stages.items()
    }


def dubber(stages: dict[str, Any], **kwargs: Any) -> stsdub.Dubber:
    kwargs.setdefault("fragment_timeout", 10.0)
    kwargs.setdefault("retry_backoff", 0.01)
    return stsdub.Dubber(**stages, source_language="en", target_language="es", **kwargs)


# -- the wire format -------------------------------------------------------------------------


def test_requests_and_results_cross_the_wire_as_plain_data() -> None:
    audio = AudioBuffer(tone(0.1), RATE)
    values: list[object] = [
        ASRRequest(audio=audio, language=None, stream_id="s", sequence_number=3, options={"beam": [1, 2]}),
        TranslationRequest(text="hi", source_language="en", target_language="de", previous_text="x"),
        SynthesisRequest(text="hallo", language="de", voice="anna", target_duration=1.5, speed=1.1),
        Transcript("a b", "en", (Segment(0.0, 1.0, "a b", (Word(0.0, 0.5, "a", 0.9),)),), 0.8),
        Translation("hola", "en"),
        AudioBuffer(np.zeros(0, dtype=np.float32), RATE),
        # A speaker-cloning synthesizer's request carries the source audio (PCM16-exact here).
        SynthesisRequest(
            text="hallo",
            language="de",
            speaker="S1",
            source_audio=AudioBuffer(np.array([0.0, 0.5, -0.25], dtype=np.float32), RATE),
        ),
    ]
    if hasattr(_values, "LengthBudget"):  # a nested value of ours inside a request
        values.append(
            TranslationRequest(
                text="hi",
                source_language="en",
                target_language="de",
                budget=_values.LengthBudget(max_chars=12, seconds=1.0),  # type: ignore[call-arg]
            )
        )
    for value in values:
        wire = encode_value(value)
        assert _plain(wire), wire
        back = decode_value(wire)
        if isinstance(value, ASRRequest):
            assert back.audio.sample_rate == RATE
            np.testing.assert_allclose(back.audio.samples, audio.samples, atol=1 / 32_000)
            assert back.options == {"beam": [1, 2]}  # user data, copied as is
            assert (back.stream_id, back.sequence_number) == ("s", 3)
        else:
            assert back == value


def _plain(data: object) -> bool:
    if isinstance(data, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in data.items())
    if isinstance(data, list):
        return all(_plain(v) for v in data)
    if isinstance(data, np.ndarray):
        return data.dtype == np.dtype("<i2")
    return data is None or isinstance(data, (str, int, float, bool))


def test_audio_travels_as_int16() -> None:
    wire = encode_value(AudioBuffer(np.array([0.5, -1.0, 1.0], dtype=np.float32), 8000))
    assert wire["__audio__"].dtype == np.int16
    assert wire["__audio__"].tolist() == [16384, -32767, 32767]
    assert wire["rate"] == 8000


def test_unknown_fields_are_dropped_and_foreign_types_refused() -> None:
    wire = encode_value(Translation("hola"))
    wire["added_in_a_later_version"] = 1
    assert decode_value(wire) == Translation("hola")
    with pytest.raises(ValueError, match="unknown value type"):
        decode_value({"__value__": "Popen", "args": ["true"]})
    with pytest.raises(TypeError, match="cannot send"):
        encode_value(object())


# -- the replica's logic --------------------------------------------------------------------


@pytest.mark.anyio
async def test_replica_answers_bad_envelopes_with_errors() -> None:
    core = ReplicaCore("asr", FakeASR())
    good = {"v": WIRE_VERSION, "kind": "asr", "call_id": "c1"}
    request = encode_value(ASRRequest(audio=AudioBuffer(tone(0.05), RATE)))
    cases = [
        ({**good, "v": 99, "request": request}, "wire version"),
        ({**good, "kind": "translator", "request": request}, "check the application name"),
        ({**good, "request": encode_value(Translation("x"))}, "expected a ASRRequest"),
        ({**good, "request": {"__value__": "nope"}}, "undecodable"),
    ]
    for payload, message in cases:
        answer = await core.handle(payload)
        assert answer["call_id"] == "c1"
        assert answer["error"]["code"] == "INTERNAL_ERROR"
        assert message in answer["error"]["message"]
    answer = await core.handle({**good, "request": request})
    assert decode_value(answer["result"]) == Transcript("speech 0", "en")


@pytest.mark.anyio
async def test_replica_uses_batch_methods_and_answers_each_item() -> None:
    fake = FakeTranslator(batch=True, fail={1: ErrorCode.UNSUPPORTED_LANGUAGE})
    core = ReplicaCore("translator", fake)
    assert core.batches
    payloads = [
        {
            "v": WIRE_VERSION,
            "kind": "translator",
            "call_id": f"c{i}",
            "request": encode_value(
                TranslationRequest(
                    text=f"t{i}", source_language="en", target_language="de", sequence_number=i
                )
            ),
        }
        for i in range(3)
    ]
    answers = await core.handle_batch(payloads)
    assert [a["call_id"] for a in answers] == ["c0", "c1", "c2"]
    assert fake.batches == [3]
    assert answers[1]["error"]["code"] == "UNSUPPORTED_LANGUAGE"
    assert decode_value(answers[2]["result"]) == Translation("[de] t2")


def test_replica_builds_the_stage_through_the_registry_and_warms_it_up() -> None:
    core = ReplicaCore.build("synthesizer", "fake", {"sample_rate": 8000}, device="cpu")
    assert isinstance(core.stage, FakeSynthesizer)
    assert core.stage.sample_rate == 8000
    with pytest.raises(stsdub.PluginError, match="no asr stage named"):
        ReplicaCore.build("asr", "no-such-stage")


# -- the client -----------------------------------------------------------------------------


def asr_request(seq: int = 0, stream_id: str = "s") -> ASRRequest:
    return ASRRequest(audio=AudioBuffer(tone(0.05), RATE), stream_id=stream_id, sequence_number=seq)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("action", "code"),
    [
        ("drop", ErrorCode.TIMEOUT),
        ("late", ErrorCode.TIMEOUT),
        ("stale", ErrorCode.NETWORK_ERROR),
        ("unavailable", ErrorCode.TEMPORARY_UNAVAILABLE),
        ("reject", ErrorCode.RATE_LIMIT_EXCEEDED),
    ],
)
async def test_each_fault_is_a_retryable_stage_error(action: str, code: ErrorCode) -> None:
    remote = RemoteASR(transport=FaultyTransport("asr", FakeASR(), lambda *_: action), timeout=0.1)
    started = time.monotonic()
    with pytest.raises(StageError) as info:
        await remote.transcribe(asr_request())
    assert info.value.code is code
    assert info.value.retryable
    assert remote.stats.failures == {code.value: 1}
    if code is ErrorCode.TIMEOUT:
        assert 0.1 <= time.monotonic() - started < 1.0  # our own timeout, not the transport's


@pytest.mark.anyio
async def test_a_late_answer_is_never_taken_for_a_later_call() -> None:
    actions = iter(["late", "stale", "ok"])
    transport = FaultyTransport("asr", FakeASR(), lambda *_: next(actions))
    remote = RemoteASR(transport=transport, timeout=0.1)
    with pytest.raises(StageError, match="no answer"):
        await remote.transcribe(asr_request(0))
    assert len(transport.mailbox) == 1  # the late answer to call 0 turns up...
    with pytest.raises(StageError, match="another call") as info:
        await remote.transcribe(asr_request(0))  # ...as the answer to the retry: dropped
    assert info.value.code is ErrorCode.NETWORK_ERROR
    assert remote.stats.dropped == 1
    assert await remote.transcribe(asr_request(0)) == Transcript("speech 0", "en")
    assert remote.stats.ok == 1


@pytest.mark.anyio
async def test_the_stage_s_own_error_keeps_its_code() -> None:
    fake = FakeTranslator(supported={"de"})
    remote = RemoteTranslator(transport=LocalTransport("translator", fake))
    with pytest.raises(StageError) as info:
        await remote.translate(TranslationRequest(text="x", source_language="en", target_language="fr"))
    assert info.value.code is ErrorCode.UNSUPPORTED_LANGUAGE
    assert not info.value.retryable


class _SpeedTone:
    """A synthesizer that honours ``speed``: a tone of ``seconds / speed``."""

    supports_speed = True

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.speeds: list[float] = []

    def synthesize(self, request: SynthesisRequest) -> AudioBuffer:
        self.speeds.append(request.speed)
        return AudioBuffer(tone(self.seconds / request.speed), RATE)


@pytest.mark.anyio
async def test_a_remote_stage_declares_what_the_stage_behind_it_supports() -> None:
    synthesizer = RemoteSynthesizer(transport=LocalTransport("synthesizer", _SpeedTone(1.0)))
    shortening = RemoteTranslator(transport=LocalTransport("translator", FakeTranslator(length_budget=True)))
    plain = RemoteTranslator(transport=LocalTransport("translator", FakeTranslator()))
    plain_voice = RemoteSynthesizer(transport=LocalTransport("synthesizer", FakeSynthesizer()))
    for remote in (synthesizer, shortening, plain, plain_voice):
        assert getattr(remote, "supports_speed", False) is False
        assert getattr(remote, "supports_length_budget", False) is False
        await remote.warmup()
    assert synthesizer.supports_speed is True  # type: ignore[attr-defined]
    assert shortening.supports_length_budget is True  # type: ignore[attr-defined]
    assert getattr(plain, "supports_length_budget", False) is False
    assert getattr(plain_voice, "supports_speed", False) is False
    # Asking is not a call of the stage: no request reached it, none is counted.
    assert synthesizer.stats.calls == 0 and synthesizer.transport.core.stage.speeds == []  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_a_remote_translator_reads_context_when_the_one_behind_it_does() -> None:
    behind = FakeTranslator(context=True)
    reading = RemoteTranslator(transport=LocalTransport("translator", behind))
    plain = RemoteTranslator(transport=LocalTransport("translator", FakeTranslator()))
    for remote in (reading, plain):
        await remote.warmup()
    assert reading.supports_context is True  # type: ignore[attr-defined]
    assert getattr(plain, "supports_context", False) is False
    context = (("And so, my fellow Americans,", "Y así, mis compatriotas,"),)
    request = TranslationRequest(
        text="ask not what your country can do for you.",
        source_language="en",
        target_language="es",
        context=context,
        stream_id="s",
        sequence_number=1,
    )
    assert (await reading.translate(request)).text == "[es] ask not what your country can do for you."
    # The preceding sentences crossed the wire as they were sent.
    assert [r.context for r in behind.requests] == [context]


@pytest.mark.anyio
async def test_the_pipeline_asks_a_remote_synthesizer_for_another_speed() -> None:
    stage = _SpeedTone(1.15)
    stages = remote_stages(synthesizer=stage)
    stages["synthesizer"] = RemoteSynthesizer(transport=LocalTransport("synthesizer", stage))
    async with dubber(stages) as d:
        (result,) = [r async for r in d.dub([stsdub.Fragment(0, tone(1.0), RATE)])]
    assert stage.speeds == [1.0, pytest.approx(1.15, rel=0.01)]  # as in-process: asked again
    assert result.fit is not None and result.fit.stretch == 1.0


@pytest.mark.anyio
async def test_a_replica_that_cannot_describe_its_stage_leaves_the_capabilities_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stage = _SpeedTone(1.3)

    class OlderReplica(LocalTransport):
        async def call(self, payload: dict[str, Any], timeout: float) -> dict[str, Any]:
            if payload.get("describe"):  # an older stsdub takes it for a request without one
                payload = {key: value for key, value in payload.items() if key != "describe"}
            return await super().call(payload, timeout)

    stages = remote_stages()
    stages["synthesizer"] = RemoteSynthesizer(transport=OlderReplica("synthesizer", stage))
    async with dubber(stages) as d:
        (result,) = [r async for r in d.dub([stsdub.Fragment(0, tone(1.0), RATE)])]
    assert "did not say what its stage supports" in caplog.text
    assert stage.speeds == [1.0]  # never asked for another speed: stretched instead
    assert result.status is Status.SUCCESS and result.fit is not None and result.fit.stretch > 1.0


def test_options_are_checked() -> None:
    with pytest.raises(stsdub.ConfigurationError, match="unknown option"):
        remote_stage("asr", "app", transport=LocalTransport("asr", FakeASR()), model="small")
    with pytest.raises(stsdub.ConfigurationError, match="timeout"):
        RemoteASR(transport=LocalTransport("asr", FakeASR()), timeout=0)
    with pytest.raises(stsdub.ConfigurationError, match="needs the name"):
        RemoteASR()


# -- through a Dubber ------------------------------------------------------------------------


@pytest.mark.anyio
async def test_dubber_uses_ray_names_with_a_transport() -> None:
    transports = {
        "asr": FaultyTransport("asr", FakeASR()),
        "translator": FaultyTransport("translator", FakeTranslator()),
        "synthesizer": FaultyTransport("synthesizer", FakeSynthesizer(sample_rate=RATE)),
    }
    d = stsdub.Dubber(
        asr="ray:stsdub-asr",
        translator="ray:stsdub-translator",
        synthesizer="ray:stsdub-synthesizer",
        asr_options={"transport": transports["asr"], "timeout": 2.0},
        translator_options={"transport": transports["translator"]},
        synthesizer_options={"transport": transports["synthesizer"]},
        source_language="en",
        target_language="es",
    )
    async with d:
        assert isinstance(d.stages["asr"], RemoteASR)
        assert d.stages["asr"].timeout == 2.0
        results = [r async for r in d.dub(fragments(4, seconds=0.1))]
    assert [r.sequence_number for r in results] == [0, 1, 2, 3]
    assert all(r.status is Status.SUCCESS for r in results), results
    assert [r.translation.text for r in results if r.translation] == [f"[es] speech {i}" for i in range(4)]


@pytest.mark.anyio
async def test_a_ray_name_without_an_application_is_refused() -> None:
    with pytest.raises(stsdub.PluginError, match="names no application"):
        async with stsdub.Dubber(asr="ray:", translator=None, synthesizer=FakeSynthesizer()):
            pass


@pytest.mark.anyio
async def test_permanent_remote_errors_are_not_retried() -> None:
    fake = FakeTranslator(supported={"de"})
    stages = remote_stages(translator=fake)
    async with dubber(stages) as d:
        results = [r async for r in d.dub(fragments(2, seconds=0.1))]
    assert [r.status for r in results] == [Status.FAILED, Status.FAILED]
    assert {r.error.code for r in results if r.error} == {ErrorCode.UNSUPPORTED_LANGUAGE}
    assert fake.calls == 2  # once per fragment


STREAMS = ("a", "b")
COUNT = 3
KINDS = ("asr", "translator", "synthesizer")
BAD = sorted(set(ACTIONS) - GOOD)

# Per stage call: how many attempts fail before one is answered (3 > retries: it fails), and how.
attempt_plans = st.tuples(
    st.sampled_from([0, 0, 0, 1, 1, 2, 3]),
    st.lists(st.sampled_from(BAD), min_size=3, max_size=3),
    st.sampled_from(sorted(GOOD)),
)


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    plans=st.dictionaries(
        st.tuples(st.sampled_from(KINDS), st.sampled_from(STREAMS), st.integers(0, 2)), attempt_plans
    )
)
def test_every_stream_yields_each_fragment_once_in_order_whatever_the_hop_does(
    plans: dict[tuple[str, str, int], tuple[int, list[str], str]],
) -> None:
    def schedule(kind: str) -> Any:
        def action(stream_id: str, seq: int, attempt: int) -> str:
            failures, bad, good = plans.get((kind, stream_id, seq), (0, [], "ok"))
            return bad[attempt] if attempt < failures else good

        return action

    retries = 2
    stages = remote_stages({kind: schedule(kind) for kind in KINDS}, timeout=0.25)
    frags = [
        f
        for i in range(COUNT)
        for s in STREAMS
        for f in fragments(COUNT, seconds=0.1, stream_id=s)[i : i + 1]
    ]

    async def run() -> list[stsdub.DubResult]:
        async with dubber(stages, retries=retries) as d:
            return [r async for r in d.dub(frags)]

    results = anyio.run(run)
    for stream_id in STREAMS:
        mine = [r for r in results if r.stream_id == stream_id]
        assert [r.sequence_number for r in mine] == list(range(COUNT))
        for r in mine:
            expected = Status.SUCCESS
            for kind in KINDS:
                failures = plans.get((kind, stream_id, r.sequence_number), (0, [], "ok"))[0]
                if failures > retries:
                    expected = Status.FAILED
                    break
            assert r.status is expected, (r, r.warnings)
            if expected is Status.SUCCESS:
                # Its own answers, never another call's (late, stale or duplicated).
                assert r.transcript is not None and r.transcript.text == f"speech {r.sequence_number}"
                assert r.translation is not None and r.translation.text == f"[es] speech {r.sequence_number}"
                assert r.audio.duration == pytest.approx(0.1)
            else:
                assert r.error is not None and r.error.retryable


# -- packaging and the command line ----------------------------------------------------------


def test_importing_stsdub_and_stsdub_ray_does_not_import_ray() -> None:
    code = "import sys, stsdub, stsdub.ray; sys.exit('ray' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def test_without_ray_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "stsdub.ray._serve", raising=False)
    with pytest.raises(stsdub.PluginError, match=r"pip install 'stsdub\[ray\]'"):
        RemoteASR("stsdub-asr")
    with pytest.raises(stsdub.PluginError, match=r"pip install 'stsdub\[ray\]'"):
        stsdub.ray.stage_app("asr", "fake")


def _parse(command_line: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="stsdub")
    add_ray_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(command_line.split())


def test_ray_deploy_parses_and_calls_deploy(monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    calls: list[tuple[tuple[object, ...], dict[str, object]]] = []
    fake_serve = types.ModuleType("stsdub.ray._serve")
    fake_serve.deploy = lambda *a, **k: calls.append((a, k))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "stsdub.ray._serve", fake_serve)
    monkeypatch.setattr(stsdub.ray, "_serve", fake_serve, raising=False)
    args = _parse(
        "ray deploy asr faster-whisper --app-name stsdub-asr --address ray://head:10001"
        " -O model=small -O beam_size=5 --num-replicas 2 --num-gpus 0.5"
    )
    assert args.command == "ray"
    assert run_ray(args) == 0
    (positional, keywords) = calls[0]
    assert positional == ("asr", "faster-whisper")
    assert keywords["app_name"] == "stsdub-asr"
    assert keywords["address"] == "ray://head:10001"
    assert keywords["options"] == {"model": "small", "beam_size": 5}
    assert (keywords["num_replicas"], keywords["num_gpus"], keywords["autoscaling"]) == (2, 0.5, None)
    assert "asr='ray:stsdub-asr'" in capsys.readouterr().out
    assert _parse("ray deploy synthesizer xtts --autoscale 1:4").autoscale == {
        "min_replicas": 1,
        "max_replicas": 4,
    }
    with pytest.raises(SystemExit):
        _parse("ray deploy asr fake -O novalue")


def test_ray_failures_become_retryable_stage_errors() -> None:
    pytest.importorskip("ray")
    import ray.exceptions as ray_errors
    import ray.serve.exceptions as serve_errors

    from stsdub.ray import map_ray_error

    cases = [
        (serve_errors.BackPressureError(8, 8), ErrorCode.RATE_LIMIT_EXCEEDED),
        (ray_errors.ActorDiedError(), ErrorCode.TEMPORARY_UNAVAILABLE),
        (ray_errors.ActorUnavailableError("gone", None), ErrorCode.TEMPORARY_UNAVAILABLE),
        (serve_errors.ReplicaUnavailableError("r1"), ErrorCode.TEMPORARY_UNAVAILABLE),
        (serve_errors.RequestCancelledError("q1"), ErrorCode.TEMPORARY_UNAVAILABLE),
        (ray_errors.GetTimeoutError("slow"), ErrorCode.TIMEOUT),
        (ray_errors.RaySystemError("lost"), ErrorCode.NETWORK_ERROR),
        (ValueError("bug"), ErrorCode.INTERNAL_ERROR),
    ]
    for exc, code in cases:
        err = map_ray_error(exc)
        assert err.code is code, (exc, err)
        assert err.retryable is code.retryable


def _buzz(f0: float, seconds: float) -> np.ndarray:
    """A voiced buzz at ``f0``: a low or a high voice to the fake diarizer."""
    t = np.arange(round(seconds * RATE)) / RATE
    buzz = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 8))
    return (0.3 * buzz / np.max(np.abs(buzz))).astype(np.float32)


@pytest.mark.anyio
async def test_a_remote_diarizer_gives_turns_embeddings_and_its_threshold() -> None:
    from stsdub import Diarization, DiarizationRequest
    from stsdub.ray import RemoteDiarizer
    from stsdub.testing import FakeDiarizer

    fake = FakeDiarizer(threshold=0.8)
    remote = remote_stage("diarizer", "app", transport=LocalTransport("diarizer", fake))
    assert isinstance(remote, RemoteDiarizer) and remote.match_threshold != 0.8
    await remote.warmup()
    assert remote.match_threshold == 0.8
    pause = np.zeros(RATE // 2, np.float32)
    lines = [_buzz(f0, 1.0) for f0 in (110.0, 220.0, 110.0)]
    audio = AudioBuffer(np.concatenate([pause, lines[0], pause, lines[1], pause, lines[2]]), RATE)
    request = DiarizationRequest(audio=audio, num_speakers=2, stream_id="call")
    turns = await remote.diarize(request)
    assert isinstance(turns, Diarization) and turns == fake.diarize(request)
    assert turns.speakers == ("S1", "S2")
    embedding = await remote.embed(AudioBuffer(lines[1], RATE))
    assert np.allclose(embedding, fake.embed(AudioBuffer(lines[1], RATE)), atol=1e-4)
    # A live stream labels its speakers through the remote diarizer, as it would in-process.
    dubber = stsdub.Dubber(
        FakeASR(),
        None,
        FakeSynthesizer(voice_pools=(("low",), ("high",))),
        source_language="en",
        target_language="en",
        diarizer=remote,
    )
    async with dubber:
        results = [r async for r in dubber.dub([stsdub.Fragment(n, x, RATE) for n, x in enumerate(lines)])]
    assert [r.speaker for r in results] == ["S1", "S2", "S1"]
    assert [r.voice for r in results] == ["low", "high", "low"]


@pytest.mark.anyio
async def test_a_remote_diarizer_without_embed_says_so() -> None:
    from stsdub import DiarizationRequest, StageError
    from stsdub.ray import RemoteDiarizer

    class TurnsOnly:
        def diarize(self, request: DiarizationRequest) -> stsdub.Diarization:
            return stsdub.Diarization([(0.0, request.audio.duration, "S1")])

    remote = RemoteDiarizer(transport=LocalTransport("diarizer", TurnsOnly()))
    await remote.warmup()
    result = await remote.diarize(DiarizationRequest(audio=AudioBuffer(_buzz(150.0, 1.0), RATE)))
    assert result.speakers == ("S1",)
    with pytest.raises(StageError, match="no embed"):
        await remote.embed(AudioBuffer(_buzz(150.0, 1.0), RATE))
