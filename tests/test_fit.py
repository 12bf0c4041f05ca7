"""Fitting speech to its time: shorter translations first, borrowed pauses, the timing report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import stsdub
from stsdub import DurationPolicy, Status
from stsdub._pipeline._job import TAIL_KEY
from stsdub._recordings._report import fit_summary, write_timing_report
from stsdub.testing import FakeASR, FakeTranslator

pytestmark = pytest.mark.anyio

RATE = 16_000
SECONDS_PER_CHAR = 0.06  # the voice speaks about 16.7 characters a second


class CharVoice:
    """Speaks ``SECONDS_PER_CHAR`` per character, whatever the target (a real voice's habit)."""

    def __init__(self) -> None:
        self.requests: list[stsdub.SynthesisRequest] = []

    def synthesize(self, request: stsdub.SynthesisRequest) -> stsdub.AudioBuffer:
        self.requests.append(request)
        n = round(len(request.text.strip()) * SECONDS_PER_CHAR * RATE)
        t = np.arange(n, dtype=np.float32) / RATE
        return stsdub.AudioBuffer((0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), RATE)


def fragment(seq: int, seconds: float, **metadata: object) -> stsdub.Fragment:
    t = np.arange(round(seconds * RATE), dtype=np.float32) / RATE
    audio = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    return stsdub.Fragment(seq, audio, RATE, metadata=metadata)


def spoken(result: stsdub.DubResult) -> tuple[float, float]:
    loud = np.flatnonzero(np.abs(result.audio.samples) > 1e-3)
    return loud[0] / RATE, (loud[-1] + 1) / RATE


async def dub(translator: object, asr: object, frags: list[stsdub.Fragment], **kwargs: object) -> list:
    voice = kwargs.pop("voice", None) or CharVoice()
    dubber = stsdub.Dubber(asr, translator, voice, source_language="en", target_language="es", **kwargs)
    async with dubber:
        return [r async for r in dubber.dub(frags)]


# -- shorter versions before stretching --------------------------------------------------------

# "[es] " + 45 characters = 50 characters: 3.0 s of speech.
LONG = "This sentence runs far too long for its slot."


async def test_speech_too_long_asks_a_budget_capable_translator_for_a_shorter_text() -> None:
    translator = FakeTranslator(length_budget=True)
    (result,) = await dub(translator, FakeASR(text=LONG), [fragment(0, 2.0)])
    first, second = translator.requests
    assert first.budget is None
    budget = second.budget
    assert budget is not None and budget.previous == f"[es] {LONG}"
    assert budget.seconds == pytest.approx(2.0)
    # The budget comes from the voice's measured rate: 2 s of a 16.7-characters-a-second voice.
    assert budget.chars_per_second == pytest.approx(1 / SECONDS_PER_CHAR, rel=0.01)
    assert budget.max_chars == pytest.approx(2.0 / SECONDS_PER_CHAR, abs=1)
    assert second.text == LONG and second.sequence_number == 0
    assert result.fit.shortened and result.fit.long_text == f"[es] {LONG}"
    assert len(result.translation.text) <= budget.max_chars
    assert result.fit.stretch == pytest.approx(1.0, abs=0.15)
    assert result.status is Status.SUCCESS
    assert any("shortened" in w for w in result.warnings)
    assert "shorten" in result.timings


async def test_a_translator_without_budget_support_is_never_asked_twice() -> None:
    translator = FakeTranslator()
    (result,) = await dub(translator, FakeASR(text=LONG), [fragment(0, 2.0)])
    assert len(translator.requests) == 1
    assert result.fit is not None and not result.fit.shortened and result.fit.budget is None
    assert result.fit.stretch > 1.15  # stretched instead


async def test_speech_within_the_comfortable_speed_is_not_shortened() -> None:
    translator = FakeTranslator(length_budget=True)
    # 3.0 s of speech for 2.7 s: ×1.11, under comfortable_speed (1.15).
    (result,) = await dub(translator, FakeASR(text=LONG), [fragment(0, 2.7)])
    assert len(translator.requests) == 1
    assert not result.fit.shortened and result.fit.stretch == pytest.approx(3.0 / 2.7, rel=0.02)
    # A stricter policy asks.
    translator = FakeTranslator(length_budget=True)
    await dub(
        translator, FakeASR(text=LONG), [fragment(0, 2.7)], duration=DurationPolicy(comfortable_speed=1.05)
    )
    assert len(translator.requests) == 2


async def test_a_failed_shortening_keeps_the_first_translation() -> None:
    translator = FakeTranslator(length_budget=True, fail=lambda r: "INVALID_TEXT" if r.budget else None)
    (result,) = await dub(translator, FakeASR(text=LONG), [fragment(0, 2.0)])
    assert result.status is not Status.FAILED
    assert not result.fit.shortened and result.translation.text == f"[es] {LONG}"
    assert any("shortening the translation failed" in w for w in result.warnings)


async def test_the_rate_estimate_follows_the_stream() -> None:
    translator = FakeTranslator(length_budget=True)
    frags = [fragment(i, 4.0) for i in range(3)] + [fragment(3, 2.0)]
    results = await dub(translator, FakeASR(text=LONG), frags)
    budgeted = [r for r in translator.requests if r.budget is not None]
    assert [r.sequence_number for r in budgeted] == [3]
    assert budgeted[0].budget.chars_per_second == pytest.approx(1 / SECONDS_PER_CHAR, rel=0.01)
    assert [r.fit.shortened for r in results] == [False, False, False, True]


# -- borrowing time ----------------------------------------------------------------------------


class PlacingASR:
    """Hears speech from 0.5 s to 1.5 s of each fragment."""

    def transcribe(self, request: stsdub.ASRRequest) -> stsdub.Transcript:
        return stsdub.Transcript("x" * 10, "en", (stsdub.Segment(0.5, 1.5, "x"),))


class FixedTranslator:
    def __init__(self, text: str) -> None:
        self.text = text

    def translate(self, request: stsdub.TranslationRequest) -> stsdub.Translation:
        return stsdub.Translation(self.text)


async def test_speech_borrows_from_the_silence_after_the_source_before_speeding_up() -> None:
    # 20 characters: 1.2 s of speech for 1.0 s of source speech, 1.5 s of silence after it.
    (result,) = await dub(FixedTranslator("y" * 20), PlacingASR(), [fragment(0, 3.0)])
    assert result.fit.borrowed == pytest.approx(0.2, abs=0.01)
    assert result.fit.stretch == 1.0 and result.fit.speed == 1.0
    assert result.status is Status.SUCCESS
    start, end = spoken(result)
    assert start == pytest.approx(0.5, abs=0.01) and end == pytest.approx(1.7, abs=0.01)


async def test_borrowing_is_capped_by_max_borrow() -> None:
    # 30 characters: 1.8 s for 1.0 s; at most 0.5 s borrowed, the rest stretched (×1.2).
    (result,) = await dub(FixedTranslator("y" * 30), PlacingASR(), [fragment(0, 3.0)])
    assert result.fit.borrowed == pytest.approx(0.5, abs=0.01)
    assert result.fit.stretch == pytest.approx(1.8 / 1.5, rel=0.01)
    (result,) = await dub(
        FixedTranslator("y" * 30), PlacingASR(), [fragment(0, 3.0)], duration=DurationPolicy(max_borrow=0.0)
    )
    assert result.fit.borrowed == 0.0 and result.fit.stretch == pytest.approx(1.3)


async def test_speech_borrows_from_the_pause_a_file_host_appends() -> None:
    # A 3-s fragment whose last second is the pause after it: the aim is the first 2 s.
    voice = CharVoice()
    frags = [fragment(0, 3.0, **{TAIL_KEY: 1.0})]
    (result,) = await dub(FixedTranslator("y" * 38), FakeASR(), frags, voice=voice)  # 2.28 s
    assert voice.requests[0].target_duration == pytest.approx(2.0)
    assert result.fit.aim == pytest.approx(2.0) and result.fit.borrowed == pytest.approx(0.28, abs=0.01)
    assert result.fit.stretch == 1.0 and result.status is Status.SUCCESS
    assert result.audio.samples.size == 3 * RATE
    # A short line is not slowed down to fill the pause: it aims at its own time.
    (result,) = await dub(FixedTranslator("y" * 30), FakeASR(), frags)  # 1.8 s
    assert result.fit.borrowed == 0.0 and result.fit.stretch == pytest.approx(1.8 / 2.0, rel=0.01)


# -- the report --------------------------------------------------------------------------------


async def test_the_timing_report(tmp_path: Path) -> None:
    translator = FakeTranslator(length_budget=True)
    frags = [fragment(0, 4.0, start=10.0, end=14.0), fragment(1, 2.0, start=15.0, end=17.0)]
    results = await dub(translator, FakeASR(text=LONG), frags)
    path = write_timing_report(tmp_path / "report.json", results)
    report = json.loads(path.read_text(encoding="utf-8"))
    first, second = report["segments"]
    assert (first["start"], first["end"]) == (10.0, 14.0)
    assert first["shortened"] is False and second["shortened"] is True
    assert second["long_text"] == f"[es] {LONG}" and second["budget_chars"] > 0
    # A short line is spoken slower (down to min_stretch), not padded with dead air.
    assert first["stretch"] == pytest.approx(0.85)
    assert first["speech_start"] == pytest.approx(10.0)
    assert first["speech_end"] == pytest.approx(10.0 + 3.0 / 0.85, abs=0.01)
    for key in ("speed", "stretch", "tempo", "borrowed", "variance", "aim", "natural", "status", "warnings"):
        assert key in first
    assert report["summary"] == fit_summary(results)
    assert report["summary"]["dubbed"] == 2 and report["summary"]["shortened"] == 1
