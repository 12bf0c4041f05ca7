"""Live captions: interim, final and translation events of a stream, in order, beside its results."""

from __future__ import annotations

import itertools
from collections import defaultdict
from typing import Any

import anyio
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import stsdub
from stsdub import ASRRequest, Caption, DubResult
from stsdub._pipeline._captions import LocalAgreement
from stsdub.testing import FakeASR, FakeSynthesizer, FakeTranslator

RATE = 16_000
WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog", "near", "the", "river"]


def tone(seconds: float) -> np.ndarray:
    t = np.arange(round(seconds * RATE)) / RATE
    return (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)


def growing_text(request: ASRRequest) -> str:
    """Four words a second of audio; an interim pass gets its last word wrong, as a fast pass does."""
    heard = WORDS[: max(1, int(request.audio.duration * 4))]
    if request.interim:
        return " ".join([*heard[:-1], heard[-1].upper() + "?"])
    return " ".join(heard)


def dubber(asr: FakeASR, **kwargs: Any) -> stsdub.Dubber:
    options: dict[str, Any] = {"target_language": "de", "max_inflight": 2, "fragment_timeout": 10.0}
    options.update(kwargs)
    return stsdub.Dubber(asr, FakeTranslator(), FakeSynthesizer(), **options)


async def speak(
    stream: stsdub.Stream, seq: int, seconds: float, chunk: float = 0.1, pause: float = 0.05
) -> None:
    """An utterance handed in as it is spoken (``chunk`` s every ``pause`` s), then as a fragment."""
    audio = tone(seconds)
    step = round(chunk * RATE)
    for start in range(0, audio.size, step):
        stream.send_audio(audio[start : start + step], RATE)
        await anyio.sleep(pause)
    await stream.send(stsdub.Fragment(seq, audio, RATE))


async def run(d: stsdub.Dubber, utterances: list[float], **stream: Any) -> list[Caption | DubResult]:
    events: list[Caption | DubResult] = []
    async with d, d.open_stream("live", captions="interim", caption_interval=0.05, **stream) as s:

        async def read() -> None:
            async for event in s.events():
                events.append(event)

        async with anyio.create_task_group() as tg:
            tg.start_soon(read)
            for seq, seconds in enumerate(utterances):
                await speak(s, seq, seconds)
            await s.end()
        status = s.caption_status
    events.append(status)  # type: ignore[arg-type]
    return events


# -- the commit policy -------------------------------------------------------------------------------


def test_local_agreement_commits_what_two_passes_agree_on() -> None:
    agreement = LocalAgreement()
    assert agreement.update("the quick brun") == ("the quick brun", 0)
    text, stable = agreement.update("the quick brown fox")
    assert (text, text[:stable]) == ("the quick brown fox", "the quick")
    # A later pass that disagrees with committed words does not change them.
    text, stable = agreement.update("a quick brown fox jumps")
    assert text[:stable] == "the quick brown fox" and text == "the quick brown fox jumps"
    # Case and punctuation do not count as disagreement.
    text, stable = agreement.update("The quick brown fox Jumps, over")
    assert text[:stable] == "the quick brown fox Jumps,"


@given(st.lists(st.lists(st.sampled_from(["a", "b", "c", "A", "b."]), max_size=8), min_size=1, max_size=12))
def test_the_stable_prefix_never_shrinks_or_changes(hypotheses: list[list[str]]) -> None:
    agreement = LocalAgreement()
    stable_before = ""
    for words in hypotheses:
        text, stable = agreement.update(" ".join(words))
        assert text.startswith(stable_before)
        assert stable >= len(stable_before)
        stable_before = text[:stable]


# -- a live stream -------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_interims_then_final_then_translation_then_the_dub_for_each_fragment() -> None:
    asr = FakeASR(text=growing_text, mode="async")
    *events, status = await run(dubber(asr), [1.2, 0.8, 1.0])
    results = [e for e in events if isinstance(e, DubResult)]
    assert [r.sequence_number for r in results] == [0, 1, 2]  # each once, in order
    by_seq: dict[int, list[Caption | DubResult]] = defaultdict(list)
    for event in events:
        by_seq[event.sequence_number].append(event)
    for seq, seq_events in by_seq.items():
        kinds = [e.kind if isinstance(e, Caption) else "dub" for e in seq_events]
        n = kinds.count("interim")
        assert n >= 1, kinds
        assert kinds == ["interim"] * n + ["final", "translation", "dub"], (seq, kinds)
        interims = [e for e in seq_events if isinstance(e, Caption) and e.kind == "interim"]
        for before, after in itertools.pairwise(interims):
            assert after.text.startswith(before.stable_text)  # the stable prefix never shrinks
            assert after.stable_chars >= before.stable_chars
        final = seq_events[n]
        assert isinstance(final, Caption) and final.fragment_id == seq_events[-1].fragment_id
        assert final.text == growing_text(
            ASRRequest(audio=stsdub.AudioBuffer(tone([1.2, 0.8, 1.0][seq]), RATE))
        )
        assert final.stable_chars == len(final.text) and final.language == "en"
        translation = seq_events[n + 1]
        assert isinstance(translation, Caption) and translation.source_text == final.text
        assert translation.text == seq_events[-1].translation.text  # type: ignore[union-attr]
        assert translation.target_language == "de"
    assert status.finals == 3 and status.translations == 3 and status.interims >= 3
    # The interim passes were fast passes, prompted with nothing.
    interim_requests = [r for r in asr.requests if r.interim]
    assert interim_requests and all(r.previous_transcript is None for r in interim_requests)
    assert len([r for r in asr.requests if not r.interim]) == 3


@pytest.mark.anyio
async def test_interims_give_way_under_load_while_finals_and_dubs_all_arrive() -> None:
    # A slow final pass and one fragment in flight at a time: interim passes find the stream
    # or the ASR busy and are skipped; nothing else is.
    asr = FakeASR(
        text=growing_text, latency=lambda r: 0.01 if r.interim else 0.4, mode="async", concurrency=1
    )
    *events, status = await run(dubber(asr, max_inflight=1), [0.6, 0.6, 0.6, 0.6])
    results = [e for e in events if isinstance(e, DubResult)]
    finals = [e for e in events if isinstance(e, Caption) and e.kind == "final"]
    assert [r.sequence_number for r in results] == [0, 1, 2, 3]
    assert [c.sequence_number for c in finals] == [0, 1, 2, 3]
    assert status.interims_dropped > 0
    assert all(r.status is stsdub.Status.SUCCESS for r in results)
    seen = [(e.kind, e.sequence_number, e.text, e.stable_chars) for e in events if isinstance(e, Caption)]
    assert len(seen) == len(set(seen))  # nothing twice


@pytest.mark.anyio
async def test_unread_interims_are_replaced_by_newer_ones() -> None:
    asr = FakeASR(text=growing_text, mode="async")
    d = dubber(asr)
    async with d, d.open_stream("live", captions="interim", caption_interval=0.02) as s:
        audio = tone(2.0)
        for start in range(0, audio.size, 1600):
            s.send_audio(audio[start : start + 1600], RATE)
            await anyio.sleep(0.04)  # passes run; nobody reads
        await s.send(stsdub.Fragment(0, audio, RATE))
        await s.end()
        events = [e async for e in s.events()]
    kinds = [e.kind if isinstance(e, Caption) else "dub" for e in events]
    # At most one interim was left waiting (read before the final came, or superseded by it).
    assert kinds in (["final", "translation", "dub"], ["interim", "final", "translation", "dub"]), kinds
    assert s.caption_status is not None and s.caption_status.interims_dropped >= 2


@pytest.mark.anyio
async def test_finals_only_and_a_revoicing_stream_has_no_translation_captions() -> None:
    d = stsdub.Dubber(FakeASR(), None, FakeSynthesizer(), source_language="en", target_language="en")
    async with d, d.open_stream("s", captions="final") as s:
        s.send_audio(tone(1.0), RATE)  # taken, but a "final" stream makes no interims
        await s.send(stsdub.Fragment(0, tone(0.5), RATE))
        await s.send(stsdub.Fragment(1, np.zeros(RATE // 2, np.float32), RATE))  # silence
        await s.end()
        events = [e async for e in s.events()]
    kinds = [e.kind if isinstance(e, Caption) else f"dub {e.sequence_number}" for e in events]
    assert kinds == ["final", "dub 0", "final", "dub 1"] or kinds == ["final", "final", "dub 0", "dub 1"]
    finals = [e for e in events if isinstance(e, Caption)]
    assert [c.text for c in finals] == ["speech 0", ""]
    assert s.caption_status is not None and s.caption_status.interim_passes == 0


@pytest.mark.anyio
async def test_a_stream_ended_mid_utterance_captions_what_was_heard() -> None:
    asr = FakeASR(text=growing_text, mode="async")
    d = dubber(asr)
    async with d, d.open_stream("live", captions="interim", caption_interval=0.05) as s:
        await speak(s, 0, 0.6)
        s.send_audio(tone(1.0), RATE)  # spoken, never sent as a fragment
        await s.end()
        events = [e async for e in s.events()]
    unsent = [e for e in events if isinstance(e, Caption) and e.kind == "final" and e.fragment_id is None]
    assert [(c.kind, c.sequence_number) for c in unsent] == [("final", 1)]
    assert unsent[0].text == " ".join(WORDS[:4]) and "not dubbed" in (unsent[0].note or "")
    assert [e.sequence_number for e in events if isinstance(e, DubResult)] == [0]
    with pytest.raises(stsdub.StreamClosedError):
        s.send_audio(tone(0.1), RATE)


@pytest.mark.anyio
async def test_a_failed_transcription_still_gets_a_final_that_says_so() -> None:
    asr = FakeASR(fail={1: "INVALID_AUDIO_FORMAT"}, mode="async")
    d = dubber(asr)
    async with d, d.open_stream("s", captions="final") as s:
        for seq in range(2):
            await s.send(stsdub.Fragment(seq, tone(0.3), RATE))
        await s.end()
        events = [e async for e in s.events()]
    finals = {e.sequence_number: e for e in events if isinstance(e, Caption) and e.kind == "final"}
    assert finals[0].text == "speech 0" and finals[0].note is None
    assert finals[1].text == "" and "INVALID_AUDIO_FORMAT" in (finals[1].note or "")
    assert [e.status for e in events if isinstance(e, DubResult)] == [
        stsdub.Status.SUCCESS,
        stsdub.Status.FAILED,
    ]


@pytest.mark.anyio
async def test_plain_iteration_of_a_caption_stream_yields_results_only() -> None:
    d = dubber(FakeASR(mode="async"))
    async with d, d.open_stream("s", captions="final") as s:
        for seq in range(3):
            await s.send(stsdub.Fragment(seq, tone(0.3), RATE))
        await s.end()
        results = [r async for r in s]
    assert [r.sequence_number for r in results] == [0, 1, 2]


@pytest.mark.anyio
async def test_bad_caption_settings_and_audio_are_refused_clearly() -> None:
    d = dubber(FakeASR())
    async with d:
        with pytest.raises(stsdub.ConfigurationError, match="captions must be one of"):
            async with d.open_stream("bad", captions="live"):
                pass
        with pytest.raises(stsdub.ConfigurationError, match="caption_interval"):
            async with d.open_stream("bad", captions="interim", caption_interval=0):
                pass
        async with d.open_stream("plain") as s:
            with pytest.raises(stsdub.ConfigurationError, match="without captions"):
                s.send_audio(tone(0.1), RATE)
            with pytest.raises(stsdub.ConfigurationError, match="without captions"):
                s.events()
            assert s.caption_status is None
        async with d.open_stream("c", captions="interim") as s:
            with pytest.raises(stsdub.InvalidAudioError, match="1-D float"):
                s.send_audio(np.zeros((2, 10), np.float32), RATE)
            with pytest.raises(stsdub.InvalidAudioError, match="sample_rate"):
                s.send_audio(tone(0.1), 0)
            with pytest.raises(stsdub.InvalidAudioError, match="max_fragment_seconds"):
                s.send_audio(np.zeros(round(d.max_fragment_seconds * RATE) + 10, np.float32), RATE)


@pytest.mark.anyio
async def test_audio_named_for_the_next_fragment_survives_the_previous_send() -> None:
    # A service queues fragments: audio of utterance 1 may arrive before fragment 0 is sent.
    asr = FakeASR(text=growing_text, mode="async")
    d = dubber(asr)
    async with d, d.open_stream("live", captions="interim", caption_interval=0.02) as s:
        s.send_audio(tone(0.6), RATE, sequence_number=0)
        s.send_audio(tone(0.6), RATE, sequence_number=1)  # a new utterance: 0 comes as a fragment
        await s.send(stsdub.Fragment(0, tone(0.6), RATE))
        await anyio.sleep(0.1)
        with pytest.raises(stsdub.SequenceError, match="utterance in progress is fragment 1"):
            s.send_audio(tone(0.1), RATE, sequence_number=0)
        await s.end()
        events = [e async for e in s.events()]
    unsent = [e for e in events if isinstance(e, Caption) and e.fragment_id is None]
    # Utterance 1 kept its 0.6 s of audio: its final (it was never sent) says what it heard.
    assert [(c.kind, c.sequence_number, c.text) for c in unsent if c.kind == "final"] == [
        ("final", 1, "the quick")
    ]
