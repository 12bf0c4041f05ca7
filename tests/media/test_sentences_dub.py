"""File dubs and projects translate whole sentences, once each, with context, and put them back.

The recordings are Piper speech cut at its pauses; the transcripts are given by the fake ASR
(so a test knows which words each piece holds); the translator is the real ``deepl`` client
against the loopback DeepL server, or the testing fake counting its calls.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import attrs
import numpy as np
import pytest
import soundfile

import stsdub
from stsdub import ASRRequest, ErrorCode, Status
from stsdub._recordings._files import dub_file
from stsdub._recordings._translate import CUE_LINE_CHARS
from stsdub.testing import FakeASR, FakeSynthesizer, FakeTranslator
from tests.media.media import recording, write_recording
from tests.speech import SENTENCES
from tests.stages.deepl_server import DeepLServer, deepl_server

#: What the fake ASR hears in each piece: a short sentence, then one cut into three pieces.
HEARD = (
    "Thank you all.",
    "And so, my fellow Americans,",
    "ask not what your country can do for you,",
    "ask what you can do for your country.",
)
WHOLE = " ".join(HEARD[1:])


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray, int]:
    # A long pause after the first piece (a sentence's end), short ones inside the next three;
    # each piece says what the fake ASR hears in it, so its length is that of its words.
    samples, rate, _ = recording(list(HEARD), pauses=[1.2, 0.6, 0.6, 1.0])
    return write_recording(tmp_path_factory.mktemp("in") / "speech.wav", samples, rate), samples, rate


@pytest.fixture
def server() -> Iterator[DeepLServer]:
    with deepl_server() as state:
        yield state


def heard(texts: tuple[str, ...]) -> FakeASR:
    return FakeASR(text=lambda r: texts[r.sequence_number] if r.sequence_number < len(texts) else "")


def fakes(asr: FakeASR, translator: object, **kwargs) -> stsdub.Dubber:
    return stsdub.Dubber(
        asr, translator, FakeSynthesizer(), source_language="en", target_language="es", **kwargs
    )


def test_a_sentence_across_three_fragments_is_translated_once_with_context_and_lands_in_them(
    speech, server: DeepLServer, tmp_path: Path
) -> None:
    path, samples, rate = speech
    translator = {"auth_key": server.auth_key, "server_url": server.url}
    dubber = stsdub.Dubber(
        heard(HEARD),
        "deepl",
        FakeSynthesizer(),
        source_language="en",
        target_language="es",
        translator_options=translator,
    )
    dubbed = dub_file(dubber, path, tmp_path / "out.wav")
    assert len(dubbed.spans) == 4 and dubbed.ok
    sent = server.translate_requests()
    # One request per sentence; the long one whole, with the sentence before it as context.
    assert [r.body["text"] for r in sent] == [[HEARD[0]], [WHOLE]]
    assert [r.body.get("context") for r in sent] == [None, HEARD[0]]
    # The translation is split back over the three pieces at word boundaries, in order.
    parts = [r.translation.text for r in dubbed.results]
    assert parts[0] == f"ES: {HEARD[0]}"
    assert " ".join(parts[1:]) == f"ES: {WHOLE}" and all(parts[1:])
    # Shared by the time each piece's words take: about a third each, cut at words.
    assert parts[1].startswith("ES: And so, my fellow Americans,") and parts[3].endswith("country.")
    assert all(3 <= len(p.split()) <= 9 for p in parts[1:])
    # Each piece speaks its share inside its own time span; the pauses stay silent.
    data, out_rate = soundfile.read(str(tmp_path / "out.wav"), dtype="float32")
    assert out_rate == rate and data.size == samples.size
    for start, end in dubbed.spans:
        assert np.abs(data[round(start * rate) : round(end * rate)]).max() > 0.05
    for (_, end), (start, _) in itertools.pairwise(dubbed.spans):
        assert not np.any(data[round(end * rate) + 1 : round(start * rate) - 1])
    # Subtitles by sentence (this one, 8 s long, in two cues), the same cues in both languages.
    shown = [c.text.replace("\n", " ") for c in dubbed.source_cues]
    assert shown[0] == HEARD[0] and " ".join(shown[1:]) == WHOLE and len(shown) == 3
    assert [(c.start, c.end) for c in dubbed.source_cues] == [(c.start, c.end) for c in dubbed.target_cues]
    assert " ".join(c.text.replace("\n", " ") for c in dubbed.target_cues[1:]) == f"ES: {WHOLE}"
    first, last = dubbed.source_cues[1], dubbed.source_cues[2]
    assert first.start >= dubbed.spans[1][0] - 1e-3 and last.end <= dubbed.spans[3][1] + 1e-3


def test_units_fragments_translates_each_piece_alone(speech) -> None:
    path, _, _ = speech
    translator = FakeTranslator(context=True)
    dubbed = dub_file(fakes(heard(HEARD), translator), path, None, units="fragments")
    assert [r.text for r in translator.requests] == list(HEARD)
    # Each piece alone, with the stream's last pieces (up to three) as its context.
    assert [len(r.context) for r in translator.requests] == [min(n, 3) for n in range(len(HEARD))]
    assert len(dubbed.source_cues) == 4
    with pytest.raises(stsdub.ConfigurationError, match="units"):
        dub_file(fakes(heard(HEARD), translator), path, None, units="words")


@pytest.fixture(scope="module")
def spaced(tmp_path_factory: pytest.TempPathFactory) -> Path:
    samples, rate, _ = recording(SENTENCES[:4], pauses=1.2)
    return write_recording(tmp_path_factory.mktemp("in") / "spaced.wav", samples, rate)


def test_context_is_the_same_speakers_preceding_sentences_for_translators_that_read_it(spaced) -> None:
    path = spaced
    said = ("One.", "Two.", "Three.", "Four.")
    reading, plain = FakeTranslator(context=True), FakeTranslator()
    dub_file(fakes(heard(said), reading), path, None)
    dub_file(fakes(heard(said), plain), path, None)
    contexts = [r.context for r in reading.requests]
    assert contexts[0] == () and contexts[1] == (("One.", "[es] One."),)
    assert contexts[3] == tuple((s, f"[es] {s}") for s in said[:3])  # at most three
    # A translator that does not read context gets whole sentences alone, and the one before.
    assert all(r.context == () for r in plain.requests)
    assert [r.previous_text for r in plain.requests] == [None, "One.", "Two.", "Three."]


def test_long_sentences_make_several_cues_aligned_one_to_one(speech) -> None:
    path, _, _ = speech
    long = (
        "We have been talking for a long time about the plans for the new library,",
        "and about the concert that will open it next Monday in the square outside,",
        "where everyone from the neighbourhood is invited to come and listen",
        "to the children's choir and the brass band from the school.",
    )
    translator = FakeTranslator()
    dubbed = dub_file(fakes(heard(long), translator), path, None)
    assert len(translator.requests) == 1  # one sentence, one call
    source, target = dubbed.source_cues, dubbed.target_cues
    assert len(source) == len(target) > 1
    assert [(c.start, c.end) for c in source] == [(c.start, c.end) for c in target]
    for cue in (*source, *target):
        lines = cue.text.split("\n")
        assert len(lines) <= 2 and all(len(line) <= CUE_LINE_CHARS + 12 for line in lines)
    assert " ".join(c.text.replace("\n", " ") for c in source) == " ".join(long)
    assert all(a.end <= b.start for a, b in itertools.pairwise(source))


def test_unpunctuated_speech_a_single_word_and_short_translations(speech) -> None:
    path, _, _ = speech
    # No punctuation anywhere: the pauses are short, so all four pieces make one unit.
    plain = ("so we went out", "and then it rained", "yes", "we came back home")
    translator = FakeTranslator()
    dubbed = dub_file(fakes(heard(plain), translator), path, None)
    assert [r.text for r in translator.requests] == [" ".join(plain)]
    assert all(r.translation is not None and r.translation.text for r in dubbed.results)
    # A translation with fewer words than the pieces it spans: the pieces left without words
    # stay silent, and say why.
    short = FakeTranslator()
    short._produce = lambda request: stsdub.Translation("Sí.")  # type: ignore[method-assign]
    dubbed = dub_file(fakes(heard(("Yes,", "yes,", "yes.", "")), short), path, None)
    assert [r.translation.text if r.translation else None for r in dubbed.results][:3] == ["Sí.", "", ""]
    assert all(r.ok for r in dubbed.results)
    assert all("fewer words" in " ".join(r.warnings) for r in dubbed.results[1:3])
    assert dubbed.results[3].translation is None or not dubbed.results[3].translation.text


def test_a_piece_whose_phase_failed_takes_the_stream_path(speech) -> None:
    path, _, _ = speech
    # The ASR fails once on piece 2 (a permanent code, so not retried): the stream hears it.
    asr = FakeASR(
        text=lambda r: HEARD[r.sequence_number], fail={2: ErrorCode.INVALID_AUDIO_FORMAT}, fail_times=1
    )
    translator = FakeTranslator()
    dubbed = dub_file(fakes(asr, translator), path, None)
    assert [r.status for r in dubbed.results] == [Status.SUCCESS] * 4
    texts = [r.text for r in translator.requests]
    # The sentence is cut where the words are missing; piece 2 is translated alone, later.
    assert texts == [HEARD[0], HEARD[1], HEARD[3], HEARD[2]]
    assert dubbed.results[2].translation.text == f"[es] {HEARD[2]}"


def test_a_project_translates_sentences_and_keeps_each_segments_share(speech, tmp_path: Path) -> None:
    path, _, _ = speech
    translator = FakeTranslator()
    stopped = dub_file(fakes(heard(HEARD), translator), path, tmp_path / "o.wav", stop_after="translate")
    project = stopped.project
    assert project is not None
    assert [r.text for r in translator.requests] == [HEARD[0], WHOLE]
    shares = [s.translation for s in project.segments]
    assert shares[0] == f"[es] {HEARD[0]}" and " ".join(shares[1:]) == f"[es] {WHOLE}"
    # Resuming speaks those shares without asking the translator again.
    dubbed = dub_file(fakes(heard(HEARD), translator), resume=project.folder)
    assert len(translator.requests) == 2 and dubbed.ok
    assert [r.translation.text for r in dubbed.results] == shares


def test_the_asr_of_the_first_phase_is_prompted_with_the_transcript_before(speech) -> None:
    path, _, _ = speech
    asr = heard(HEARD)
    dub_file(fakes(asr, FakeTranslator()), path, None)
    requests: list[ASRRequest] = asr.requests
    assert [r.previous_transcript for r in requests] == [None, *HEARD[:3]]
    assert len(requests) == 4  # heard once: the stream does not transcribe again


def test_a_pieces_share_is_still_shortened_when_its_speech_will_not_fit(speech) -> None:
    path, _, _ = speech
    translator = FakeTranslator(length_budget=True)
    # Speech twice as long as its time: a translator that keeps to budgets is asked again.
    dubber = stsdub.Dubber(
        heard(HEARD),
        translator,
        FakeSynthesizer(duration_ratio=2.0),
        source_language="en",
        target_language="es",
    )
    dubbed = dub_file(dubber, path, None)
    whole = [r for r in translator.requests if r.budget is None]
    asked = [r for r in translator.requests if r.budget is not None]
    assert [r.text for r in whole] == [HEARD[0], WHOLE]  # the sentences, once each
    # Each piece's share is shortened alone, from its own source words and the share it had.
    shortened = [r for r in dubbed.results if r.fit is not None and r.fit.shortened]
    assert shortened
    for result in shortened:
        (request,) = [a for a in asked if a.sequence_number == result.sequence_number]
        assert request.text == HEARD[result.sequence_number]
        assert request.budget is not None and request.budget.previous == result.fit.long_text


@pytest.mark.model
def test_real_whisper_pieces_of_one_sentence_make_one_translator_call(tmp_path: Path) -> None:
    # Whisper ends each piece with a full stop; the short pauses say the sentence goes on.
    groups = ("As many of you know,", "the old library on the hill", "has been closed since the winter.")
    samples, rate, _ = recording([*groups, "Thank you very much for your help."], pauses=[0.4, 0.4, 1.5, 1.0])
    path = write_recording(tmp_path / "talk.wav", samples, rate)
    translator = FakeTranslator(context=True)
    dubber = stsdub.Dubber(
        "faster-whisper",
        translator,
        FakeSynthesizer(),
        source_language="en",
        target_language="es",
        device="cpu",
        fragment_timeout=60,
    )
    dubbed = dub_file(dubber, path, None)
    assert len(dubbed.results) == 4 and dubbed.ok
    first, second = translator.requests
    words = first.text.lower()
    assert all(w in words for w in ("know", "library", "hill", "winter"))
    assert first.text.count(".") == 1 and first.text.endswith(".")
    assert "thank you" in second.text.lower() and second.context == ((first.text, f"[es] {first.text}"),)
    assert " ".join(r.translation.text for r in dubbed.results[:3]) == f"[es] {first.text}"


class _Languages:
    """An ASR that hears given words in a given language per piece (for mixed-language input)."""

    def __init__(self, heard: tuple[tuple[str, str], ...]) -> None:
        self.heard = heard

    def transcribe(self, request: ASRRequest) -> stsdub.Transcript:
        text, language = self.heard[request.sequence_number]
        return stsdub.Transcript(text, language)


def test_a_change_of_language_ends_a_sentence(speech) -> None:
    path, _, _ = speech
    asr = _Languages((("thank you", "en"), ("so we went", "en"), ("und dann", "de"), ("nach Hause", "de")))
    translator = FakeTranslator()
    dubber = stsdub.Dubber(asr, translator, FakeSynthesizer(), target_language="es")
    dubbed = dub_file(dubber, path, None)
    assert [(r.text, r.source_language) for r in translator.requests] == [
        ("thank you so we went", "en"),
        ("und dann nach Hause", "de"),
    ]
    assert all(r.ok for r in dubbed.results)


def test_three_minutes_without_a_pause_or_a_full_stop(tmp_path: Path) -> None:
    rate = 16_000
    noise = np.random.default_rng(0).uniform(-0.3, 0.3, 180 * rate).astype(np.float32)
    path = write_recording(tmp_path / "monologue.wav", noise, rate)
    words = " ".join(f"word{k}" for k in range(12))
    translator = FakeTranslator()
    dubbed = dub_file(fakes(FakeASR(text=words), translator), path, None, segmentation="fixed")
    assert len(dubbed.results) == 30 and all(r.ok for r in dubbed.results)
    # 180 s of words with no pause and no stop: cut into sentences of at most 15 s, each
    # translated once, and every piece still speaks its share.
    assert 12 <= len(translator.requests) <= 30
    assert sum(len(r.text.split()) for r in translator.requests) == 30 * 12
    assert all(r.translation is not None and r.translation.text for r in dubbed.results)
    assert all(c.end - c.start <= 15.0 + 1e-6 for c in dubbed.source_cues)


def test_a_project_shows_and_edits_sentences_not_segments(speech, tmp_path: Path) -> None:
    path, _, _ = speech
    translator, synthesizer = FakeTranslator(), FakeSynthesizer()
    dubber = stsdub.Dubber(heard(HEARD), translator, synthesizer, source_language="en", target_language="es")
    project = dub_file(dubber, path, tmp_path / "o.wav", stop_after="translate").project
    assert project is not None
    assert [s.sentence for s in project.segments] == [None, 1, 1, 1]
    srt = project.folder / "translation.srt"
    cues = srt.read_text().split("\n\n")
    assert len([c for c in cues if c.strip()]) == 2 and f"[es] {WHOLE}" in srt.read_text()
    # The sentence is edited as one cue; the edit is split back over its three segments.
    edited = "Y así, compatriotas, no pregunten qué puede hacer su país por ustedes, sino qué pueden hacer."
    srt.write_text(srt.read_text().replace(f"[es] {WHOLE}", edited))
    dubbed = dub_file(dubber, resume=project.folder)
    shares = [r.translation.text for r in dubbed.results]
    assert shares[0] == f"[es] {HEARD[0]}" and " ".join(shares[1:]) == edited and all(shares)
    assert len(translator.requests) == 2  # an edited translation is not translated again
    # The dub's subtitles show the sentence, as edited, however many cues it needs.
    shown = [c.text.replace("\n", " ") for c in dubbed.target_cues]
    assert shown[0] == f"[es] {HEARD[0]}" and " ".join(shown[1:]) == edited
    assert len(dubbed.source_cues) == len(dubbed.target_cues) == len(shown)
    assert [r.text for r in synthesizer.requests] == shares  # stop_after made no audio before
    # A transcript edit of the sentence has the whole sentence translated again, once.
    tsrt = project.folder / "transcript.srt"
    tsrt.write_text(tsrt.read_text().replace("my fellow Americans", "my fellow citizens"))
    again = dub_file(dubber, resume=project.folder, stop_after="translate").project
    assert again is not None
    assert translator.requests[-1].text == WHOLE.replace("Americans", "citizens")
    assert len(translator.requests) == 3
    # So does one made in Python.
    changed = again.with_transcript(3, "ask what you can do for the world.")
    assert [s.translation is None for s in changed.segments] == [False, True, True, True]


def test_revoicing_speaks_each_pieces_own_words(speech) -> None:
    path, _, _ = speech
    said = ("Thank you all.", "And so, my fellow Americans.", "Ask not what your country can do.", "For you.")
    dubber = stsdub.Dubber(heard(said), None, FakeSynthesizer(), source_language="en", target_language="en")
    dubbed = dub_file(dubber, path, None)
    # Joined into sentences for the subtitles, but each piece says exactly what it heard.
    assert [r.translation.text for r in dubbed.results] == list(said)
    assert len(dubbed.source_cues) < 4


def test_an_edited_sentence_is_shared_by_the_time_speech_was_heard_in_each_segment() -> None:
    from stsdub._media import Cue
    from stsdub._recordings._project import ProjectSegment, assign_grouped

    # Few words said slowly over 3 s, then many said fast in 1 s.
    segments = [
        ProjectSegment(0, 0.0, 3.5, "So, you see", "Así", speech=(0.2, 3.2), sentence=0),
        ProjectSegment(
            1, 3.5, 5.0, "everything works wonderfully today.", "que", speech=(0.1, 1.1), sentence=0
        ),
    ]
    edited = [Cue(0.0, 5.0, "uno dos tres cuatro cinco seis siete ocho")]
    shares = assign_grouped(edited, segments, "translation", "edited.srt")
    assert shares == {0: "uno dos tres cuatro cinco seis", 1: "siete ocho"}
    # Where the speech is not known, the transcripts' characters share it out instead.
    unheard = [attrs.evolve(s, speech=None) for s in segments]
    assert assign_grouped(edited, unheard, "translation", "edited.srt") == {
        0: "uno dos",
        1: "tres cuatro cinco seis siete ocho",
    }
