"""Live streams that keep their soundtrack: ``background="duck" | "separate"`` and ``DubResult.mixed``."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import stsdub
from stsdub import ASRRequest, ErrorCode, Segment, Transcript
from stsdub._media._duck import DEFAULT_DEPTH_DB, DEFAULT_RELEASE, max_gain_step_db, steepest_step_db
from stsdub.testing import FakeASR, FakeSeparator, FakeSynthesizer

pytestmark = pytest.mark.anyio

RATE = 16_000
HUM = 0.25  # a constant "soundtrack": the gain the mix applied to it is (mixed - dub) / HUM


class SpanASR:
    """Hears "hello" between the times ``spans[sequence_number]`` gives (None: hears nobody)."""

    def __init__(self, spans: dict[int, tuple[float, float] | None]) -> None:
        self.spans = spans
        self.requests: list[ASRRequest] = []

    def transcribe(self, request: ASRRequest) -> Transcript:
        self.requests.append(request)
        span = self.spans.get(request.sequence_number)
        if span is None:
            return Transcript("", "en")
        return Transcript("hello", "en", segments=(Segment(span[0], span[1], "hello"),))


def _dubber(asr: object, **options: Any) -> stsdub.Dubber:
    return stsdub.Dubber(
        asr=asr,
        translator=None,
        synthesizer=FakeSynthesizer(sample_rate=RATE),
        source_language="en",
        target_language="en",
        **options,
    )


def _hum(seconds: float) -> np.ndarray:
    return np.full(round(seconds * RATE), HUM, dtype=np.float32)


def _db(x: float) -> float:
    return float(20 * np.log10(max(x, 1e-9)))


async def _run(dubber: stsdub.Dubber, fragments: list[np.ndarray], **stream: Any) -> list[stsdub.DubResult]:
    sent = [stsdub.Fragment(i, f, RATE) for i, f in enumerate(fragments)]
    async with dubber:
        return [r async for r in dubber.dub(sent, **stream)]


async def test_results_stay_small_unless_a_stream_asks_for_its_soundtrack() -> None:
    (result,) = await _run(_dubber(SpanASR({0: (0.2, 0.6)})), [_hum(1.0)])
    assert result.mixed is None
    assert result.assets == (result.transcript, result.translation, result.audio)


async def test_duck_keeps_the_soundtrack_and_lowers_it_under_speech() -> None:
    fragment = _hum(1.6)
    (plain,) = await _run(_dubber(SpanASR({0: (0.3, 0.7)})), [fragment])
    (result,) = await _run(_dubber(SpanASR({0: (0.3, 0.7)})), [fragment], background="duck")
    assert result.mixed is not None and result.mixed.kind == "mixed"
    assert result.mixed.parent_asset_ids == (result.audio.asset_id, f"fragment:{result.fragment_id}")
    assert result.mixed in result.assets
    # The dub alone is what it would be without the option.
    assert result.audio.kind == "dubbed"
    np.testing.assert_array_equal(result.audio.samples, plain.audio.samples)
    assert result.mixed.samples.size == fragment.size and result.mixed.sample_rate == RATE

    gain = (result.mixed.samples - result.audio.samples) / HUM
    # Full level before the attack and after the release; down by the depth under the speech.
    assert np.allclose(gain[: round(0.2 * RATE)], 1.0, atol=1e-4)
    end_of_release = 0.7 + DEFAULT_RELEASE
    assert np.allclose(gain[round((end_of_release + 0.01) * RATE) :], 1.0, atol=1e-4)
    under = gain[round(0.3 * RATE) : round(0.7 * RATE)]
    assert _db(float(np.max(under))) == pytest.approx(DEFAULT_DEPTH_DB, abs=0.1)
    assert max_gain_step_db(gain) <= steepest_step_db(DEFAULT_DEPTH_DB, 0.08, RATE) * 1.01


async def test_the_gain_joins_the_previous_fragment_without_a_jump() -> None:
    # Speech runs to the end of fragment 0; fragment 1 has none: its soundtrack comes back up
    # from where fragment 0 left it, not at full level from its first sample.
    spans = {0: (0.2, 1.0), 1: None, 2: (0.0, 0.5)}
    results = await _run(_dubber(SpanASR(spans)), [_hum(1.0), _hum(1.0), _hum(1.0)], background="duck")
    gains = [(r.mixed.samples - r.audio.samples) / HUM for r in results]  # type: ignore[union-attr]
    joined = np.concatenate(gains)
    assert _db(float(gains[0][-1])) == pytest.approx(DEFAULT_DEPTH_DB, abs=0.1)
    assert gains[1][0] < 0.2  # still down at the boundary...
    assert np.allclose(gains[1][round(0.1 * RATE) : round(0.9 * RATE)], 1.0, atol=1e-4)  # ...then up
    assert _db(float(gains[2][round(0.1 * RATE)])) == pytest.approx(DEFAULT_DEPTH_DB, abs=0.1)
    # Fragment 2 starts with speech: the fall happens inside it, from full level, no click.
    assert max_gain_step_db(joined) <= steepest_step_db(DEFAULT_DEPTH_DB, 0.08, RATE) * 1.01


async def test_a_failed_fragment_keeps_its_soundtrack_with_the_voice_down() -> None:
    asr = FakeASR(fail={0: ErrorCode.INTERNAL_ERROR})
    (result,) = await _run(_dubber(asr, retries=0), [_hum(1.0)], background="duck")
    assert result.status is stsdub.Status.FAILED and result.audio.kind == "silence"
    assert result.mixed is not None
    # Where the speech was is unknown: the whole fragment is ducked (the original voice may
    # be anywhere in it), the soundtrack is kept.
    gain = result.mixed.samples / HUM
    assert _db(float(np.max(gain[round(0.1 * RATE) : round(0.9 * RATE)]))) == pytest.approx(
        DEFAULT_DEPTH_DB, abs=0.1
    )


def _tones(seconds: float) -> np.ndarray:
    """100 Hz ("music", below the fake separator's speech band) plus 1 kHz ("voice")."""
    t = np.arange(round(seconds * RATE)) / RATE
    return (0.3 * np.sin(2 * np.pi * 100 * t) + 0.2 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)


def _level_at(samples: np.ndarray, hz: float) -> float:
    spectrum = np.abs(np.fft.rfft(samples)) / (samples.size / 2)
    return float(spectrum[round(hz * samples.size / RATE)])


async def test_separate_lays_the_background_under_the_dub_and_the_asr_hears_the_voice() -> None:
    asr = SpanASR({0: (0.2, 0.8)})
    separator = FakeSeparator()
    dubber = _dubber(asr, separator=separator)
    (result,) = await _run(dubber, [_tones(1.0)], background="separate")
    assert separator.calls == 1 and "separation" in result.timings
    heard = asr.requests[0].audio.samples
    assert _level_at(heard, 1000) == pytest.approx(0.2, abs=0.01)
    assert _level_at(heard, 100) < 0.01  # the music is not what the ASR hears
    assert result.mixed is not None
    under = result.mixed.samples - result.audio.samples
    assert _level_at(under, 100) == pytest.approx(0.3, abs=0.01)  # the music, at its own level
    assert _level_at(under, 1000) < 0.01  # the original voice is gone


async def test_a_failed_separation_ducks_the_original_instead() -> None:
    separator = FakeSeparator(fail={0: ErrorCode.INTERNAL_ERROR})
    dubber = _dubber(SpanASR({0: (0.2, 0.8)}), separator=separator)
    (result,) = await _run(dubber, [_hum(1.0)], background="separate")
    assert result.status is stsdub.Status.SUCCESS
    assert any("separation failed" in w and "ducked" in w for w in result.warnings)
    assert result.mixed is not None
    gain = (result.mixed.samples - result.audio.samples) / HUM
    assert np.allclose(gain[: round(0.1 * RATE)], 1.0, atol=1e-4)
    assert _db(float(np.max(gain[round(0.3 * RATE) : round(0.7 * RATE)]))) == pytest.approx(
        DEFAULT_DEPTH_DB, abs=0.1
    )


async def test_bad_background_options_are_refused() -> None:
    async with _dubber(FakeASR()) as dubber:
        with pytest.raises(stsdub.ConfigurationError, match="no separator"):
            async with dubber.open_stream("s", background="separate"):
                pass
        with pytest.raises(stsdub.ConfigurationError, match="background must be one of"):
            async with dubber.open_stream("s", background="music"):
                pass
        async with dubber.open_stream("s", background="duck") as stream:
            await stream.send(stsdub.Fragment(0, _hum(0.5), RATE))
            await stream.end()
            results = [r async for r in stream]
        assert results[0].mixed is not None
