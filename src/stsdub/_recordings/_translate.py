"""Whole sentences for a recording: every piece heard first, each sentence translated once.

A file is cut into pieces where its speakers pause, and a translator given one piece at a time
translates half-sentences. So a file dub (and a project) runs two phases before synthesis:

1. every piece is transcribed, in order, each with the transcript before it as the ASR's
   prompt; the words (with their times) are joined into sentences across the pieces
   (:mod:`stsdub._pipeline._sentences`);
2. every sentence is translated once, as a whole, with the same speaker's preceding sentences
   and their translations as context for a translator that declares ``supports_context``;
   its translation is split back over the pieces it spans, in proportion to the source text
   each piece holds.

Each piece then goes through the stream with its transcript and translation given, so the
stream only synthesizes and fits it to the piece's own time. A piece whose phase failed gets
nothing given and takes the stream's ordinary path (its own ASR and translator calls), so no
piece is lost and its result says what happened.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import attrs

from .._core._languages import base_language, same_language
from .._core._values import (
    DubResult,
    Transcript,
    Translation,
    TranslationRequest,
)
from .._media import ANALYSIS_RATE, Cue, Piece
from .._pipeline._sentences import Sentence, sentences, split_text, tokens_of
from ..errors import ConfigurationError, StageError
from ._calls import call_stage
from ._transcribe import transcribe_pieces

if TYPE_CHECKING:
    from .._core._audio import FloatArray
    from .._dubber import Dubber

__all__ = [
    "CONTEXT_SENTENCES",
    "UNITS",
    "SentencePlan",
    "Unit",
    "check_units",
    "file_cues",
    "piece_translations",
    "plan_sentences",
    "subtitle_sets",
    "translate_units",
    "unit_cues",
]

#: What a file dub translates at a time (the ``units`` argument): whole ``sentences`` (the
#: default) or each ``fragments`` alone, as a live stream does.
UNITS = ("sentences", "fragments")
#: How many of the speaker's preceding sentences a context-reading translator is given.
CONTEXT_SENTENCES = 3
#: A subtitle cue holds at most two lines of this many characters (the usual broadcast limit)...
CUE_LINE_CHARS = 42
CUE_LINES = 2
#: ...and stays on screen at most this long; a longer sentence is shown in several cues.
CUE_MAX_SECONDS = 7.0

Report = Callable[[str, int, int], None]


def check_units(units: str) -> str:
    if units not in UNITS:
        raise ConfigurationError(f"units must be one of {UNITS}, got {units!r}")
    return units


@attrs.frozen
class Unit:
    """One sentence and what became of its translation."""

    sentence: Sentence
    #: Its translation; a StageError when the translator failed, ``None`` when it was not
    #: translated here (no translator: the stream says why).
    translation: Translation | StageError | None
    #: The translation's part for each of ``sentence.pieces``, in order (empty when untranslated).
    parts: tuple[str, ...] = ()

    @property
    def translated(self) -> bool:
        return isinstance(self.translation, Translation)


@attrs.frozen
class SentencePlan:
    """What the two phases made for each piece of a recording, and the sentences."""

    #: The piece's transcript; ``None`` where the ASR failed (the stream tries again).
    transcripts: tuple[Transcript | None, ...]
    #: The piece's share of its sentences' translations; ``None`` where one of them was not
    #: translated (the stream translates the piece alone).
    translations: tuple[str | None, ...]
    units: tuple[Unit, ...]

    def given(self, piece: int) -> tuple[Transcript | None, str | None]:
        """The transcript and translation a piece's fragment carries into the stream."""
        transcript = self.transcripts[piece]
        translation = self.translations[piece] if transcript is not None else None
        return transcript, translation

    def silent_share(self, piece: int) -> bool:
        """Whether the piece has words but its sentences' translations left it none to say."""
        transcript, translation = self.given(piece)
        has_words = transcript is not None and bool(transcript.text.strip())
        return has_words and translation is not None and not translation.strip()


def _context(units: Sequence[Unit], sentence: Sentence) -> tuple[tuple[str, str], ...]:
    """The speaker's last translated sentences before ``sentence`` (the recording's, unlabelled)."""
    pairs: list[tuple[str, str]] = []
    for unit in reversed(units):
        if len(pairs) == CONTEXT_SENTENCES:
            break
        if unit.sentence.speaker == sentence.speaker and isinstance(unit.translation, Translation):
            pairs.append((unit.sentence.text, unit.translation.text))
    return tuple(reversed(pairs))


async def translate_units(
    dubber: Dubber,
    units: Sequence[Sentence],
    *,
    source_language: str | None,
    target_language: str,
    timeout: float,
    stream_id: str,
    report: Report,
) -> list[Unit]:
    """Each sentence translated once, in order, with its context; split back over its pieces.

    ``source_language`` ``None`` takes each sentence's own (the language its pieces were heard
    in). A sentence already in the target language is its own translation.
    """
    stages, _ = dubber._require_open()
    translator = stages.translator
    reads_context = translator is not None and translator.reads_context
    done: list[Unit] = []
    report("translate", 0, len(units))
    for n, sentence in enumerate(units):
        source = source_language or sentence.language
        outcome: Translation | StageError | None
        if same_language(source, target_language):
            outcome = Translation(sentence.text)
        elif translator is None:
            outcome = None
        else:
            context = _context(done, sentence)
            previous = next((u for u in reversed(done) if u.translated), None)
            request = TranslationRequest(
                text=sentence.text,
                source_language=source,
                target_language=target_language,
                previous_text=previous.sentence.text if previous is not None else None,
                previous_translation=(
                    previous.translation.text
                    if previous is not None and isinstance(previous.translation, Translation)
                    else None
                ),
                context=context if reads_context else (),
                stream_id=stream_id,
                sequence_number=n,
                fragment_id=f"sentence-{n}",
            )
            outcome = await call_stage(dubber, translator, request, "translation", Translation, timeout)
        parts: tuple[str, ...] = ()
        if isinstance(outcome, Translation):
            if same_language(source, target_language):
                parts = tuple(sentence.text_in(p) for p in sentence.pieces)
            else:
                weights = sentence.weights()
                parts = tuple(split_text(outcome.text.strip(), weights))
        done.append(Unit(sentence, outcome, parts))
        report("translate", n + 1, len(units))
    return done


def piece_translations(units: Sequence[Unit], pieces: int) -> list[str | None]:
    """Each piece's share of the translations of the sentences it holds, in order.

    ``None`` for a piece one of whose sentences was not translated: that piece is translated
    alone later, as a whole.
    """
    shares: list[list[str] | None] = [[] for _ in range(pieces)]
    for unit in units:
        spanned = unit.sentence.pieces
        for piece, part in zip(spanned, unit.parts if unit.translated else [""] * len(spanned), strict=True):
            held = shares[piece]
            if not unit.translated:
                shares[piece] = None
            elif held is not None and part:
                held.append(part)
    return [None if s is None else " ".join(s) for s in shares]


async def plan_sentences(
    dubber: Dubber,
    audio16k: FloatArray,
    spans: Sequence[tuple[int, int]],
    *,
    speakers: Sequence[str | None],
    source_language: str | None,
    target_language: str,
    timeout: float,
    stream_id: str,
    report: Report,
) -> SentencePlan:
    """Transcribe every piece (``spans``: samples of ``audio16k``), then translate its sentences.

    Pieces whose ASR failed hold no words and are left to the stream; so are pieces of a
    sentence whose translation failed.
    """
    heard = await transcribe_pieces(
        dubber, audio16k, spans, language=source_language, timeout=timeout, stream_id=stream_id, report=report
    )
    tokens = []
    for n, ((a, b), outcome) in enumerate(zip(spans, heard, strict=True)):
        if isinstance(outcome, Transcript) and outcome.text.strip():
            speaker = speakers[n] if n < len(speakers) else None
            language = source_language or outcome.language
            tokens += tokens_of(n, outcome, a / ANALYSIS_RATE, (b - a) / ANALYSIS_RATE, speaker, language)
    units = await translate_units(
        dubber,
        sentences(tokens),
        source_language=source_language,
        target_language=target_language,
        timeout=timeout,
        stream_id=stream_id,
        report=report,
    )
    shares = piece_translations(units, len(spans))
    transcripts = tuple(t if isinstance(t, Transcript) else None for t in heard)

    def given(transcript: Transcript | None, share: str | None) -> str | None:
        if transcript is None:
            return None
        if same_language(source_language or transcript.language, target_language):
            return None  # re-voiced as heard: the stream speaks the piece's own words
        # A piece with no words has nothing to translate: it stays silent, as in the stream.
        return "" if not transcript.text.strip() else share

    translations = tuple(given(t, s) for t, s in zip(transcripts, shares, strict=True))
    return SentencePlan(transcripts, translations, tuple(units))


# -- subtitles ---------------------------------------------------------------------------------


def _wrap(text: str) -> str:
    """``text`` on two lines, broken at the space nearest its middle, when one line is too long."""
    if len(text) <= CUE_LINE_CHARS or " " not in text:
        return text
    middle = len(text) / 2
    spaces = [k for k, c in enumerate(text) if c == " "]
    cut = min(spaces, key=lambda k: abs(k - middle))
    return f"{text[:cut]}\n{text[cut + 1 :]}"


def unit_cues(unit: Unit) -> list[tuple[Cue, Cue]]:
    """A translated sentence as subtitle cues, source and target aligned one to one.

    A sentence that does not fit one cue (two lines of :data:`CUE_LINE_CHARS`, at most
    :data:`CUE_MAX_SECONDS` on screen) is cut into as few parts as fit, at word boundaries;
    each source part keeps the times of its own words and the translation is cut in the same
    proportions, so the two sets of subtitles have the same cues at the same times.
    """
    assert isinstance(unit.translation, Translation)
    sentence = unit.sentence
    source, target = sentence.text, unit.translation.text.strip()
    limit = CUE_LINE_CHARS * CUE_LINES
    wanted = max(
        math.ceil(len(source) / limit),
        math.ceil(len(target) / limit),
        math.ceil((sentence.end - sentence.start) / CUE_MAX_SECONDS),
        1,
    )
    count = max(1, min(wanted, len(source.split()), len(target.split()) or 1))
    sources = split_text(source, [1.0] * count)
    targets = split_text(target, [len(p) for p in sources])
    cues: list[tuple[Cue, Cue]] = []
    first = 0
    for heard, said in zip(sources, targets, strict=True):
        words = len(heard.split())
        tokens = sentence.tokens[first : first + words] or sentence.tokens[-1:]
        first += words
        start, end = tokens[0].start, max(tokens[-1].end, tokens[0].start + 0.001)
        speaker = sentence.speaker
        cues.append(
            (
                Cue(start, end, _wrap(heard), speaker, language=sentence.language),
                Cue(start, end, _wrap(said), speaker),
            )
        )
    return cues


def file_cues(
    speech: list[Piece], rate: int, results: list[DubResult], units: Sequence[Unit] | None = None
) -> tuple[list[Cue], list[Cue]]:
    """One cue per translated sentence (``units``), split where it is too long to show at once;
    one per fragment, trimmed to the speech by the segment times, for fragments outside them."""
    heard: list[Cue] = []
    said: list[Cue] = []
    covered: set[int] = set()
    for unit in units or ():
        if unit.translated:
            covered.update(unit.sentence.pieces)
            for source_cue, target_cue in unit_cues(unit):
                heard.append(source_cue)
                said.append(target_cue)
    for unit in units or ():  # a piece one of whose sentences was not translated is shown alone
        if not unit.translated:
            covered.difference_update(unit.sentence.pieces)
    for n, (piece, result) in enumerate(zip(speech, results, strict=True)):
        start, end = piece.start / rate, piece.end / rate
        if n in covered or result.transcript is None or not result.transcript.text.strip():
            continue
        segments = result.transcript.transcript.segments
        if segments:
            first = start + min(s.start for s in segments)
            last = start + max(s.end for s in segments)
            if start <= first < last:
                start, end = first, min(last, end)
        heard.append(
            Cue(
                start,
                end,
                result.transcript.text.strip(),
                result.speaker,
                language=result.transcript.language,
            )
        )
        if result.translation is not None and result.translation.text.strip():
            said.append(Cue(start, end, result.translation.text.strip(), result.speaker))
    return sorted(heard, key=lambda c: c.start), sorted(said, key=lambda c: c.start)


def subtitle_sets(
    source_cues: Sequence[Cue], target_cues: Sequence[Cue], source_language: str | None, target_language: str
) -> dict[str, list[Cue]]:
    """The subtitle files of a file dub, by the language each is in (the files' ``<lang>`` part).

    The dub's cues, and one set of source cues per language heard (a recording may change
    language; ``"source"`` where none is known). Re-voicing writes one set: the transcript.
    """
    sets = {base_language(target_language): list(target_cues)}
    spoken: dict[str, list[Cue]] = {}
    for cue in source_cues:
        language = cue.language or source_language
        spoken.setdefault(base_language(language) if language else "source", []).append(cue)
    if not spoken:
        spoken[base_language(source_language) if source_language else "source"] = []
    for language, cues in spoken.items():
        sets.setdefault(language, cues)
    return sets
