"""A live stream hears which language each fragment is in: unsure changes checked, real ones said."""

from __future__ import annotations

import numpy as np
import pytest

import stsdub
from stsdub import ASRRequest, Segment, Transcript, Word
from stsdub.testing import FakeSynthesizer, FakeTranslator

RATE = 16_000


class Detecting:
    """An ASR that detects, per fragment, the language (and probability) it is told to."""

    def __init__(self, plan: dict[int, tuple[str, float]], sure: float = 0.9) -> None:
        self.plan = plan
        self.sure = sure
        self.calls: list[tuple[int, str | None]] = []

    def transcribe(self, request: ASRRequest) -> Transcript:
        self.calls.append((request.sequence_number, request.language))
        language, probability = self.plan[request.sequence_number]
        text = f"words {request.sequence_number} in {request.language or language}"
        words = tuple(Word(0.1 * i, 0.1 * i + 0.1, w, self.sure) for i, w in enumerate(text.split()))
        segment = Segment(0.0, 0.5, text, words=words)
        if request.language is not None:
            return Transcript(text, request.language, (segment,))
        return Transcript(text, language, (segment,), language_probability=probability)


async def dub(asr: Detecting, count: int) -> tuple[list[stsdub.DubResult], str | None]:
    """``count`` fragments through one stream that detects the language; its results and language."""
    dubber = stsdub.Dubber(
        asr, FakeTranslator(), FakeSynthesizer(), source_language=None, target_language="es"
    )
    async with dubber, dubber.open_stream("s") as stream:
        for seq in range(count):
            await stream.send(stsdub.Fragment(seq, np.full(RATE // 2, 0.1, np.float32), RATE))
        await stream.end()
        return [r async for r in stream], stream.language


@pytest.mark.anyio
async def test_a_stream_checks_unsure_changes_and_reports_real_ones() -> None:
    asr = Detecting({0: ("en", 0.95), 1: ("de", 0.97), 2: ("cy", 0.5), 3: ("en", 0.9)})
    results, language = await dub(asr, 4)
    assert language == "en"
    heard = [r.transcript.language if r.transcript else None for r in results]
    # The unsure Welsh of fragment 2 was decoded again in the stream's German, and fits it.
    assert heard == ["en", "de", "de", "en"]
    assert (2, "de") in asr.calls and results[2].transcript is not None
    assert results[2].transcript.transcript.language_probability is None  # kept, not detected
    changes = [[w for w in r.warnings if w.startswith("language changed")] for r in results]
    assert changes == [[], ["language changed: en → de (0.97)"], [], ["language changed: de → en (0.90)"]]
    assert all(r.status is stsdub.Status.SUCCESS for r in results)


@pytest.mark.anyio
async def test_an_unsure_change_whose_second_decode_does_not_fit_stands() -> None:
    asr = Detecting({0: ("en", 0.95), 1: ("fr", 0.6)}, sure=0.3)  # every decode unsure of its words
    results, _ = await dub(asr, 2)
    assert [r.transcript.language for r in results if r.transcript] == ["en", "fr"]
    assert asr.calls == [(0, None), (1, None), (1, "en")]


@pytest.mark.anyio
async def test_a_live_stream_gives_a_context_reading_translator_its_last_fragments() -> None:
    from stsdub.testing import FakeASR

    for reads in (True, False):
        translator = FakeTranslator(context=reads)
        dubber = stsdub.Dubber(
            FakeASR(), translator, FakeSynthesizer(), source_language="en", target_language="es"
        )
        async with dubber, dubber.open_stream("s") as stream:
            for seq in range(5):
                await stream.send(stsdub.Fragment(seq, np.full(RATE // 2, 0.1, np.float32), RATE))
            await stream.end()
            assert len([r async for r in stream]) == 5
        contexts = [r.context for r in translator.requests]
        if reads:  # the last three fragments, oldest first
            assert contexts[0] == ()
            assert contexts[4] == tuple((f"speech {n}", f"[es] speech {n}") for n in (1, 2, 3))
        else:
            assert all(c == () for c in contexts)
        assert translator.requests[4].previous_text == "speech 3"
