"""The separator stage kind: its values, the fake, conformance, registry, Dubber and options."""

from __future__ import annotations

import argparse
import re
from typing import Any

import numpy as np
import pytest

import stsdub
from stsdub import AudioBuffer, ErrorCode, Separation, SeparationRequest, StageError
from stsdub._plugins._options import parse_stage_option
from stsdub.stages import STAGE_KINDS, Separator
from stsdub.testing import (
    ConformanceError,
    FakeASR,
    FakeSeparator,
    FakeSynthesizer,
    check_plugin,
    check_stage,
)

pytestmark = pytest.mark.anyio

RATE = 16_000


def _tones(seconds: float = 1.0, rate: int = RATE) -> AudioBuffer:
    """100 Hz (below the fake's speech band) plus 1 kHz (inside it)."""
    t = np.arange(round(seconds * rate)) / rate
    low = 0.3 * np.sin(2 * np.pi * 100 * t)
    high = 0.2 * np.sin(2 * np.pi * 1000 * t)
    return AudioBuffer((low + high).astype(np.float32), rate)


def _dubber(**options: Any) -> stsdub.Dubber:
    return stsdub.Dubber(
        asr=FakeASR(),
        translator=None,
        synthesizer=FakeSynthesizer(),
        source_language="en",
        target_language="en",
        **options,
    )


def test_separator_is_a_stage_kind_after_the_pipeline_kinds() -> None:
    assert STAGE_KINDS[:4] == ("asr", "translator", "synthesizer", "separator")
    assert isinstance(FakeSeparator(), Separator)


def test_separation_tracks_must_be_aligned() -> None:
    voice = AudioBuffer.silence(1.0, RATE)
    sep = Separation(voice, AudioBuffer.silence(1.0, RATE))
    assert sep.sample_rate == RATE and sep.duration == 1.0
    assert sep.aligned_with(voice)
    assert not sep.aligned_with(AudioBuffer.silence(1.0, 22_050))
    with pytest.raises(stsdub.InvalidAudioError, match="same rate and length"):
        Separation(voice, AudioBuffer.silence(0.5, RATE))
    with pytest.raises(stsdub.InvalidAudioError, match="same rate and length"):
        Separation(voice, AudioBuffer.silence(1.0, 8_000))
    with pytest.raises(stsdub.InvalidAudioError, match="AudioBuffer"):
        Separation(voice, np.zeros(RATE, np.float32))  # type: ignore[arg-type]


def test_request_carries_the_common_fields() -> None:
    request = SeparationRequest(audio=_tones(), stream_id="s", sequence_number=3, options={"x": 1})
    assert (request.stream_id, request.sequence_number, request.options) == ("s", 3, {"x": 1})


def test_the_fake_splits_by_band_and_loses_nothing() -> None:
    audio = _tones()
    result = FakeSeparator().separate(SeparationRequest(audio=audio))
    assert result.aligned_with(audio)
    assert np.allclose(result.voice.samples + result.background.samples, audio.samples, atol=1e-6)
    t = np.arange(RATE) / RATE
    assert np.allclose(result.voice.samples, 0.2 * np.sin(2 * np.pi * 1000 * t), atol=1e-4)
    assert np.allclose(result.background.samples, 0.3 * np.sin(2 * np.pi * 100 * t), atol=1e-4)


async def test_the_async_fake_records_and_fails_on_request() -> None:
    fake = FakeSeparator(mode="async", fail={1: ErrorCode.TEMPORARY_UNAVAILABLE})
    ok = await fake.separate(SeparationRequest(audio=_tones()))
    assert isinstance(ok, Separation)
    with pytest.raises(StageError) as caught:
        await fake.separate(SeparationRequest(audio=_tones(), sequence_number=1))
    assert caught.value.code is ErrorCode.TEMPORARY_UNAVAILABLE and caught.value.retryable
    assert [r.sequence_number for r in fake.requests] == [0, 1] and fake.calls == 2


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_the_fake_conforms(mode: str) -> None:
    report = check_stage(FakeSeparator(mode=mode))
    assert report.kind == "separator" and report.ok
    assert report.passed == [
        "separate(speech at 16 kHz)",
        "separate(speech at 44.1 kHz)",
        "separate(silence)",
    ]


class _Misaligned:
    def separate(self, request: SeparationRequest) -> Separation:
        audio = request.audio
        half = AudioBuffer(audio.samples[: audio.samples.size // 2], audio.sample_rate)
        return Separation(half, half)


class _Broken:
    def separate(self, request: SeparationRequest) -> object:
        raise RuntimeError("boom")


def test_conformance_catches_misaligned_and_broken_separators() -> None:
    with pytest.raises(ConformanceError, match="must keep the input's rate and length"):
        check_stage(_Misaligned())
    with pytest.raises(ConformanceError, match="raised RuntimeError"):
        check_stage(_Broken(), kind="separator")


def test_registry_lists_the_separators() -> None:
    registry = stsdub.StageRegistry.from_plugin_manager(stsdub.get_plugin_manager(autoload=False))
    assert registry.names("separator") == ["demucs", "fake"]
    demucs = registry.get("separator", "demucs")
    assert demucs.package == "stsdub" and demucs.requires == ("demucs", "torch")
    assert demucs.install_hint == "pip install 'stsdub[separate]'"
    # Listed after the pipeline's stages, as `stsdub plugins` shows them.
    kinds = [s.kind for s in registry]
    assert kinds[kinds.index("separator") - 1] == "synthesizer" and kinds.count("separator") == 2
    assert check_plugin("separator", "fake").ok


def test_a_plugin_can_offer_a_separator() -> None:
    spec = stsdub.StageSpec(kind="separator", name="mine", factory=FakeSeparator)
    registry = stsdub.StageRegistry([spec])
    assert registry.get("separator", "mine") is spec


def test_separator_options_parse_on_the_command_line() -> None:
    assert parse_stage_option("separator.model=htdemucs_ft") == ("separator", "model", "htdemucs_ft")
    assert parse_stage_option("separator.window=30") == ("separator", "window", 30)
    with pytest.raises(argparse.ArgumentTypeError, match=re.escape("asr|translator|synthesizer|separator")):
        parse_stage_option("diarist.x=1")


async def test_the_dubber_loads_a_separator_by_name_and_closes_it() -> None:
    dubber = _dubber(separator="fake", separator_options={"band": (500.0, 2000.0)})
    assert dubber.separator is None
    audio = _tones()
    async with dubber:
        stage = dubber.separator
        assert isinstance(stage, FakeSeparator) and stage.band == (500.0, 2000.0)
        result = await dubber.separate(audio, stream_id="film", level=3)
        assert result.aligned_with(audio)
        assert stage.requests[0].stream_id == "film" and stage.requests[0].options == {"level": 3}
        # The fragment pipeline is untouched by it.
        results = await _dub_one(dubber)
        assert results[0].status is stsdub.Status.SUCCESS
    assert stage.closed and dubber.separator is None


async def _dub_one(dubber: stsdub.Dubber) -> list[stsdub.DubResult]:
    fragment = stsdub.Fragment(0, _tones(0.5).samples, RATE)
    async with dubber.dub([fragment]) as results:
        return [r async for r in results]


async def test_the_dubber_takes_a_separator_object_sync_or_async() -> None:
    for mode in ("sync", "async"):
        fake = FakeSeparator(mode=mode)
        async with _dubber(separator=fake) as dubber:
            assert dubber.separator is fake
            assert (await dubber.separate(_tones())).aligned_with(_tones())
        assert not fake.closed  # objects the caller built are the caller's to close


async def test_the_dubber_reports_separator_failures_as_stage_errors() -> None:
    async with _dubber(separator=FakeSeparator(fail={0: ErrorCode.QUOTA_EXCEEDED})) as dubber:
        with pytest.raises(StageError) as caught:
            await dubber.separate(_tones())
        assert caught.value.code is ErrorCode.QUOTA_EXCEEDED and caught.value.stage == "separation"
    async with _dubber(separator=_Broken()) as dubber:
        with pytest.raises(StageError, match="RuntimeError: boom") as caught:
            await dubber.separate(_tones())
        assert caught.value.code is ErrorCode.INTERNAL_ERROR and caught.value.stage == "separation"
    async with _dubber(separator=_Misaligned()) as dubber:
        with pytest.raises(StageError, match="aligned with its input"):
            await dubber.separate(_tones())


async def test_without_a_separator() -> None:
    async with _dubber() as dubber:
        with pytest.raises(stsdub.ConfigurationError, match="no separator"):
            await dubber.separate(_tones())
    with pytest.raises(stsdub.StsdubError, match="not open"):
        await _dubber(separator=FakeSeparator()).separate(_tones())


async def test_bad_separators_fail_at_load() -> None:
    with pytest.raises(stsdub.ConfigurationError, match="no separate"):
        async with _dubber(separator=object()):
            pass
    with pytest.raises(stsdub.ConfigurationError, match="separator_options only apply"):
        async with _dubber(separator=FakeSeparator(), separator_options={"band": (1, 2)}):
            pass
    with pytest.raises(stsdub.PluginError, match="no separator stage named 'nope'"):
        async with _dubber(separator="nope"):
            pass
