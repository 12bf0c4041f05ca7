"""Whole sentences in a live stream: ``sentence_wait`` holds a fragment for the rest of its sentence."""

from __future__ import annotations

import anyio
import numpy as np
import pytest

import stsdub
from stsdub import ErrorCode, Status
from stsdub.testing import FakeASR, FakeSynthesizer, FakeTranslator

RATE = 16_000
# Cut where the speaker breathes; the ASR ends every piece with a full stop, as Whisper does.
SAID = (
    "And so, my fellow Americans.",
    "Ask not what your country can do for you.",
    "Ask what you can do for your country!",
    "Thank you.",
)
HALF = "And so, my fellow Americans ask not what your country can do for you."
WHOLE = f"{HALF[:-1]} ask what you can do for your country!"


def fragment(seq: int, speaker: str | None = None, seconds: float = 1.0) -> stsdub.Fragment:
    return stsdub.Fragment(seq, np.full(round(RATE * seconds), 0.1, np.float32), RATE, speaker=speaker)


def dubber(translator: FakeTranslator, said=SAID, **options) -> stsdub.Dubber:
    asr = FakeASR(text=lambda r: said[r.sequence_number])
    return stsdub.Dubber(
        asr, translator, FakeSynthesizer(), source_language="en", target_language="es", **options
    )


async def dub_all(
    translator: FakeTranslator, fragments, said=SAID, **stream_options
) -> list[stsdub.DubResult]:
    async with dubber(translator, said) as d, d.open_stream("live", **stream_options) as stream:
        for item in fragments:
            await stream.send(item)
        await stream.end()
        return [r async for r in stream]


@pytest.mark.anyio
async def test_a_sentence_over_three_fragments_is_translated_once_and_split_back() -> None:
    translator = FakeTranslator(context=True)
    # Each piece as long as its words take to say (25 characters a second): the translation
    # is split back in proportion to the time each piece's words take.
    pieces = [fragment(n, seconds=len(SAID[n]) / 25) for n in range(4)]
    results = await dub_all(translator, pieces, sentence_wait=5.0)
    assert [r.text for r in translator.requests] == [WHOLE, "Thank you."]
    # The next sentence gets the whole one before it as context.
    assert translator.requests[1].context == ((WHOLE, f"[es] {WHOLE}"),)
    assert [r.sequence_number for r in results] == [0, 1, 2, 3]
    assert all(r.status is Status.SUCCESS for r in results)
    parts = [r.translation.text for r in results[:3]]
    assert all(parts) and " ".join(parts) == f"[es] {WHOLE}"
    assert parts[0].endswith("Americans") and parts[2].endswith("country!")
    # Each part is its own fragment's, with the other transcripts of its sentence in its lineage.
    for n, result in enumerate(results[:3]):
        others = {results[k].transcript.asset_id for k in range(3) if k != n}
        assert result.translation.parent_asset_ids[0] == result.transcript.asset_id
        assert set(result.translation.parent_asset_ids[1:]) == others
        assert result.translation.source_text == SAID[n]
        assert result.timings["sentence_wait"] >= 0
    assert results[3].translation.parent_asset_ids == (results[3].transcript.asset_id,)
    # Every fragment is dubbed in its own time.
    assert [r.audio.samples.size for r in results] == [p.audio.size for p in pieces]


@pytest.mark.anyio
async def test_without_sentence_wait_each_fragment_is_translated_as_it_is_heard() -> None:
    translator = FakeTranslator(context=True)
    results = await dub_all(translator, [fragment(n) for n in range(4)])
    assert [r.text for r in translator.requests] == list(SAID)
    assert [len(r.context) for r in translator.requests] == [0, 1, 2, 3]
    assert [r.translation.text for r in results] == [f"[es] {s}" for s in SAID]


@pytest.mark.anyio
async def test_the_wait_is_bounded_a_fragment_goes_on_alone_when_the_rest_is_late() -> None:
    translator = FakeTranslator()
    async with dubber(translator) as d, d.open_stream("live", sentence_wait=0.3) as stream:
        await stream.send(fragment(0))
        with anyio.fail_after(10):
            first = await stream.__anext__()  # the next fragment has not even been sent
        assert first.translation.text == f"[es] {SAID[0]}"
        assert 250 <= first.timings["sentence_wait"] < 5000
        await stream.send(fragment(1))
        await stream.end()
        rest = [r async for r in stream]
    assert [r.sequence_number for r in rest] == [1]
    assert [r.text for r in translator.requests] == [SAID[0], SAID[1]]


@pytest.mark.anyio
async def test_the_end_of_input_releases_a_sentence_still_open() -> None:
    translator = FakeTranslator()
    results = await dub_all(translator, [fragment(0), fragment(1)], sentence_wait=30)
    assert [r.text for r in translator.requests] == [HALF]
    assert len(results) == 2 and all(r.translation.text for r in results)


class Timed:
    """An ASR that hears ``said[n]`` with word times, its speech ending ``ends[n]`` s into the fragment."""

    def __init__(self, said, ends) -> None:
        self.said, self.ends = said, ends

    def transcribe(self, request: stsdub.ASRRequest) -> stsdub.Transcript:
        text, end = self.said[request.sequence_number], self.ends[request.sequence_number]
        words = text.split()
        step = end / len(words)
        timed = tuple(stsdub.Word(k * step, (k + 1) * step, w, 0.9) for k, w in enumerate(words))
        return stsdub.Transcript(text, "en", (stsdub.Segment(0.0, end, text, words=timed),))


@pytest.mark.anyio
async def test_a_question_a_long_pause_or_another_speaker_ends_the_sentence() -> None:
    said = ("Are you ready?", "We begin now.", "Shall we.", "Yes.", "Good.")
    # Fragment 1's speech ends 1 s before the fragment does: its full stop is believed.
    asr = Timed(said, (1.0, 0.5, 1.0, 1.0, 1.0))
    translator = FakeTranslator()
    options = {"source_language": "en", "target_language": "es"}
    items = [fragment(0), fragment(1, seconds=1.5), fragment(2, "A"), fragment(3, "B"), fragment(4, "B")]
    async with stsdub.Dubber(asr, translator, FakeSynthesizer(), **options) as d:
        async with d.open_stream("live", sentence_wait=5) as stream:
            for item in items:
                await stream.send(item)
            await stream.end()
            results = [r async for r in stream]
    assert [r.text for r in translator.requests] == [
        "Are you ready?",
        "We begin now.",
        "Shall we.",
        "Yes good.",
    ]
    assert " ".join(r.translation.text for r in results[3:]) == "[es] Yes good."


@pytest.mark.anyio
async def test_when_every_slot_is_held_the_fragments_go_on_without_waiting() -> None:
    translator = FakeTranslator()
    with anyio.fail_after(5):  # with 30 s of wait and two slots, nothing may stall
        results = await dub_all(translator, [fragment(n) for n in range(4)], sentence_wait=30, max_inflight=2)
    assert len(results) == 4
    assert translator.requests[0].text == HALF


@pytest.mark.anyio
async def test_a_failed_sentence_is_translated_fragment_by_fragment() -> None:
    # The joined call (it carries fragment 0's number) fails permanently; each piece then goes alone.
    translator = FakeTranslator(fail=lambda r: ErrorCode.INVALID_TEXT if r.text == WHOLE else None)
    results = await dub_all(translator, [fragment(n) for n in range(3)], sentence_wait=5)
    assert [r.text for r in translator.requests] == [WHOLE, *SAID[:3]]
    assert [r.translation.text for r in results] == [f"[es] {s}" for s in SAID[:3]]
    assert any("translated alone" in w for w in results[0].warnings)
    assert all(r.status is Status.SUCCESS for r in results)


@pytest.mark.anyio
async def test_given_translations_and_silence_are_never_held() -> None:
    translator = FakeTranslator()
    silent = stsdub.Fragment(1, np.zeros(RATE, np.float32), RATE)
    given = stsdub.Fragment(2, np.full(RATE, 0.1, np.float32), RATE, translation="Dado.")
    results = await dub_all(translator, [fragment(0), silent, given, fragment(3)], sentence_wait=5)
    assert [r.text for r in translator.requests] == [SAID[0], SAID[3]]
    assert results[2].translation.text == "Dado." and results[1].audio.kind == "silence"


def test_sentence_wait_is_checked() -> None:
    for bad in (-1, "2", True, 31):
        with pytest.raises(stsdub.ConfigurationError, match="sentence_wait"):
            dubber(FakeTranslator())._config("s", {"sentence_wait": bad})


@pytest.mark.anyio
async def test_captions_of_a_held_fragment_come_when_its_sentence_is_complete() -> None:
    translator = FakeTranslator()
    async with dubber(translator) as d, d.open_stream("live", sentence_wait=5, captions="final") as stream:
        for n in range(3):
            await stream.send(fragment(n))
        await stream.end()
        events = [e async for e in stream.events()]
    order = [
        (e.kind, e.sequence_number) if isinstance(e, stsdub.Caption) else ("result", e.sequence_number)
        for e in events
    ]
    # Each fragment: final, translation, result; the translations wait for the sentence's end.
    assert order.index(("final", 2)) < order.index(("translation", 0)) < order.index(("result", 0))
    for n in range(3):
        assert order.index(("final", n)) < order.index(("translation", n)) < order.index(("result", n))
    shares = [e.text for e in events if isinstance(e, stsdub.Caption) and e.kind == "translation"]
    assert " ".join(shares) == f"[es] {WHOLE}"
