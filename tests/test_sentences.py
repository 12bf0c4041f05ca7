"""Translation units: sentences joined across pieces, split when too long, translations split back."""

from __future__ import annotations

import pytest

from stsdub import Segment, Transcript, Word
from stsdub._pipeline._sentences import Token, sentences, split_text, tokens_of


def _tokens(*pieces: tuple[int, float, str], speaker: str | None = None) -> list[Token]:
    out = []
    for piece, start, text in pieces:
        for k, word in enumerate(text.split()):
            out.append(Token(piece, start + 0.4 * k, start + 0.4 * k + 0.3, word, speaker))
    return out


def test_a_sentence_spans_the_pieces_it_was_cut_into() -> None:
    tokens = _tokens(
        (0, 0.0, "And so, my fellow Americans,"),
        (1, 2.5, "ask not what your country can do for you,"),
        (2, 7.0, "ask what you can do for your country."),
        (3, 11.0, "Thank you."),
    )
    units = sentences(tokens)
    assert [u.pieces for u in units] == [(0, 1, 2), (3,)]
    assert units[0].text.startswith("And so,") and units[0].text.endswith("your country.")
    assert units[0].text_in(1) == "ask not what your country can do for you,"


def test_long_pauses_speakers_and_durations_end_units_without_punctuation() -> None:
    first = _tokens((0, 0.0, "no punctuation here at all"))
    later = _tokens((1, 5.0, "after a long pause"))
    assert [u.pieces for u in sentences(first + later)] == [(0,), (1,)]
    a = _tokens((0, 0.0, "one speaker talks"), speaker="S1")
    b = _tokens((0, 1.3, "another answers"), speaker="S2")
    assert [u.speaker for u in sentences(a + b)] == ["S1", "S2"]
    # A monologue with no pause and no full stop: split at clause boundaries, each part short.
    words = " ".join(f"word{k}," if k % 7 == 6 else f"word{k}" for k in range(200))
    units = sentences(_tokens((0, 0.0, words)), max_seconds=15.0)
    assert len(units) > 1
    assert all(u.end - u.start <= 15.0 for u in units)
    assert " ".join(u.text for u in units) == words
    assert sentences([]) == []


def test_a_translation_splits_back_in_proportion_at_word_boundaries() -> None:
    text = "Y así, mis compatriotas, no pregunten qué puede hacer su país por ustedes"
    parts = split_text(text, [10, 30])
    assert len(parts) == 2 and all(parts)
    assert " ".join(parts) == text
    assert parts[0].endswith("compatriotas,")  # the cut prefers a comma near its place
    assert split_text("una", [1, 1, 1]) == ["una", "", ""]
    assert split_text("dos palabras", [1]) == ["dos palabras"]
    assert split_text("", [1, 2]) == ["", ""]


def test_tokens_come_from_word_times_or_are_spread_over_the_segment() -> None:
    timed = Transcript(
        "Hello there.",
        "en",
        (Segment(0.5, 1.5, "Hello there.", (Word(0.5, 0.9, " Hello"), Word(1.0, 1.5, " there."))),),
    )
    tokens = tokens_of(3, timed, offset=10.0, duration=2.0, speaker="S1")
    assert [(t.piece, t.start, t.text, t.speaker) for t in tokens] == [
        (3, 10.5, "Hello", "S1"),
        (3, 11.0, "there.", "S1"),
    ]
    plain = tokens_of(0, Transcript("three plain words"), offset=0.0, duration=3.0)
    assert [t.text for t in plain] == ["three", "plain", "words"]
    assert plain[0].start == 0.0 and abs(plain[-1].end - 3.0) < 1e-9


def test_a_full_stop_at_a_pieces_end_is_believed_only_before_a_real_pause() -> None:
    # Whisper ends every piece with a full stop, half-sentences too.
    first = _tokens((0, 0.0, "As many of you know."))
    after_breath = _tokens((1, 1.9, "The old building is closed."))
    (joined,) = sentences(first + after_breath)
    assert joined.text == "As many of you know the old building is closed."
    assert joined.pieces == (0, 1) and joined.text_in(0) == "As many of you know"
    after_pause = _tokens((1, 2.6, "The old building is closed."))
    assert [u.text for u in sentences(first + after_pause)] == [
        "As many of you know.",
        "The old building is closed.",
    ]
    # A question is a question, however short the pause; so is a full stop inside a piece.
    asked = _tokens((0, 0.0, "Really?")) + _tokens((1, 0.6, "I think so."))
    assert len(sentences(asked)) == 2
    inside = _tokens((0, 0.0, "Yes. I think so."))
    assert len(sentences(inside)) == 2
    # "I" and names keep their capital.
    mine = _tokens((0, 0.0, "So.")) + _tokens((1, 0.7, "I went to Paris."))
    assert sentences(mine)[0].text == "So I went to Paris."


def test_one_source_subtitle_file_per_language_heard() -> None:
    from stsdub._media import Cue
    from stsdub._recordings._translate import subtitle_sets

    heard = [
        Cue(0.0, 1.0, "Good morning.", language="en"),
        Cue(1.5, 3.0, "Guten Morgen.", language="de"),
        Cue(3.5, 4.0, "Thanks.", language="en"),
        Cue(4.5, 5.0, "No language said."),
    ]
    said = [Cue(0.0, 1.0, "Buenos días."), Cue(3.5, 4.0, "Gracias.")]
    sets = subtitle_sets(heard, said, None, "es")
    assert {k: [c.text for c in v] for k, v in sets.items()} == {
        "es": ["Buenos días.", "Gracias."],
        "en": ["Good morning.", "Thanks."],
        "de": ["Guten Morgen."],
        "source": ["No language said."],
    }
    # Given a source language, a cue without one is in it; re-voicing writes the one set.
    assert list(subtitle_sets(heard[3:], said, "en-US", "es")) == ["es", "en"]
    assert list(subtitle_sets(heard[:1], heard[:1], "en", "en")) == ["en"]
    assert subtitle_sets([], [], None, "es") == {"es": [], "source": []}


def test_a_sentence_is_shared_out_by_the_time_its_words_take_in_each_piece() -> None:
    # Three short words said slowly in piece 0, many long ones said fast in piece 1.
    slow = [Token(0, 0.0, 0.6, "So,"), Token(0, 0.8, 1.4, "you"), Token(0, 1.6, 2.0, "see")]
    fast = [
        Token(1, 2.6 + 0.2 * k, 2.75 + 0.2 * k, w)
        for k, w in enumerate(["everything", "works", "wonderfully", "today."])
    ]
    (sentence,) = sentences(slow + fast)
    assert sentence.pieces == (0, 1)
    assert sentence.weights() == [2.0, pytest.approx(0.75)]
    # Shared by time, piece 0 says most of the translation though its words are fewer.
    first, second = split_text("Así que, ya ves, todo funciona de maravilla hoy.", sentence.weights())
    assert len(first.split()) > len(second.split())
    # Words without times: their characters.
    timeless = sentences([Token(0, 0.0, 0.0, "Hello"), Token(1, 0.0, 0.0, "there, friend.")])
    assert timeless[0].weights() == [5.0, 14.0]
