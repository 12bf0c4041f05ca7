"""Translation units: whole sentences across the pauses and pieces a recording was cut at.

A recording is cut into pieces where people pause, and pauses are where they breathe, not
where thoughts end. The words the ASR heard (with their times) are joined back across the
pieces into sentences, by punctuation, long pauses, speaker changes and a longest duration;
an over-long sentence is split at a clause boundary. Each sentence is translated once, and
its translation is split back over the pieces it spans in proportion to the source text
each piece holds, at word boundaries, so every piece keeps its own time span and its dub
still fits it exactly.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterable, Sequence

import attrs

from .._core._values import Transcript

__all__ = ["Sentence", "Token", "ends_sentence", "sentences", "split_text", "tokens_of"]

#: A pause this long ends a sentence even without punctuation (an unpunctuated transcript,
#: a speaker who trails off).
DEFAULT_MAX_PAUSE = 2.0
#: A sentence longer than this is split at a clause boundary: longer units neither
#: translate better nor fit one subtitle.
DEFAULT_MAX_SECONDS = 15.0
#: Whisper ends every piece it is given with a full stop, a half-sentence too ("As many of
#: you know." / "The old building on Station Road."). A full stop at a piece's end is
#: believed only when the pause after it is at least this long (seconds); a shorter one is a
#: breath, and the sentence goes on. A question or exclamation mark is believed anyway.
DEFAULT_EDGE_PAUSE = 0.6
_TERMINAL = re.compile(r"[.!?…。！？؟]['\"”’»)\]]*$")
_CLAUSE = re.compile(r"[,;:—–]['\"”’»)\]]*$")
_FULL_STOP = re.compile(r"(?:\.|…|\.\.\.)$")
_SURE = re.compile(r"[!?！？؟]['\"”’»)\]]*$")
# Words a clause often starts with: an over-long sentence without commas splits before one.
_CLAUSE_STARTS = frozenset(
    {
        *("and", "but", "so", "because", "or", "which", "that", "then", "when", "while"),
        *("although", "though", "where", "if", "unless"),
        *("y", "pero", "porque", "que", "cuando", "mientras", "aunque", "donde", "si"),
        *("et", "mais", "parce", "quand", "und", "aber", "weil", "dass", "wenn"),
    }
)


@attrs.frozen
class Token:
    """One word the ASR heard, with its place in the recording."""

    #: Index of the piece (fragment) it was heard in.
    piece: int
    #: Seconds from the start of the recording.
    start: float
    end: float
    text: str
    speaker: str | None = None
    #: The language the ASR heard the piece in, when it said.
    language: str | None = None


@attrs.frozen
class Sentence:
    """A translation unit: consecutive tokens, possibly spanning several pieces."""

    tokens: tuple[Token, ...]

    @property
    def text(self) -> str:
        return " ".join(t.text for t in self.tokens)

    @property
    def start(self) -> float:
        return self.tokens[0].start

    @property
    def end(self) -> float:
        return self.tokens[-1].end

    @property
    def speaker(self) -> str | None:
        return self.tokens[0].speaker

    @property
    def language(self) -> str | None:
        return self.tokens[0].language

    @property
    def pieces(self) -> tuple[int, ...]:
        """The pieces the sentence spans, in order."""
        return tuple(dict.fromkeys(t.piece for t in self.tokens))

    def text_in(self, piece: int) -> str:
        """The part of the sentence heard in ``piece``."""
        return " ".join(t.text for t in self.tokens if t.piece == piece)

    def weights(self) -> list[float]:
        """How much of the sentence's translation each of :attr:`pieces` should say: the
        seconds its words take there (first word's start to last word's end), so that the
        voice keeps one pace across the sentence's pieces. Where the words carry no times,
        their characters."""
        spans = []
        for piece in self.pieces:
            own = [t for t in self.tokens if t.piece == piece]
            spans.append(max(own[-1].end - own[0].start, 0.0))
        if sum(spans) <= 0:
            return [float(len(self.text_in(p))) for p in self.pieces]
        return spans


def _spread(text: str, start: float, end: float) -> list[tuple[float, float, str]]:
    """Words of ``text`` with times spread over ``[start, end]`` in proportion to their length."""
    words = text.split()
    if not words:
        return []
    total = sum(len(w) + 1 for w in words)
    span = max(end - start, 0.0)
    out, at = [], start
    for word in words:
        step = span * (len(word) + 1) / total
        out.append((at, at + step, word))
        at += step
    return out


def tokens_of(
    piece: int,
    transcript: Transcript,
    offset: float,
    duration: float,
    speaker: str | None = None,
    language: str | None = None,
) -> list[Token]:
    """The words of one piece's transcript, placed in the recording (``offset`` s in).

    Word times come from the ASR's word timestamps; a segment without words has its text
    spread over the segment, and a transcript without segments over the whole piece.
    ``language`` defaults to the transcript's.
    """
    language = language or transcript.language
    found: list[tuple[float, float, str]] = []
    if transcript.segments:
        for segment in transcript.segments:
            words = [(w.start, w.end, w.word.strip()) for w in segment.words if w.word.strip()]
            found += words or _spread(segment.text, segment.start, segment.end)
    else:
        found = _spread(transcript.text, 0.0, duration)
    return [
        Token(piece, offset + max(0.0, a), offset + max(a, b, 0.0), text, speaker, language)
        for a, b, text in found
        if text
    ]


def _ends_sentence(token: Token) -> bool:
    return bool(_TERMINAL.search(token.text))


def ends_sentence(word: str, pause: float, edge_pause: float = DEFAULT_EDGE_PAUSE) -> bool:
    """Whether a piece's last ``word``, followed by ``pause`` seconds of silence, ends its
    sentence, as :func:`sentences` would decide it at a piece's edge: a question or
    exclamation mark, a full stop before a pause of ``edge_pause``, or a pause longer than
    :data:`DEFAULT_MAX_PAUSE` (punctuated or not)."""
    if pause > DEFAULT_MAX_PAUSE or _SURE.search(word):
        return True
    return bool(_TERMINAL.search(word)) and (pause >= edge_pause or not _FULL_STOP.search(word))


def _split_long(tokens: list[Token], max_seconds: float) -> list[list[Token]]:
    """``tokens`` cut into parts of at most ``max_seconds`` at clause boundaries (then pauses)."""
    if len(tokens) < 2 or tokens[-1].end - tokens[0].start <= max_seconds:
        return [tokens]
    middle = (tokens[0].start + tokens[-1].end) / 2

    def score(k: int) -> tuple[int, float]:
        # Cut before token k: best after a comma, then before a clause word, then at a pause.
        before, after = tokens[k - 1], tokens[k]
        kind = 0 if _CLAUSE.search(before.text) else 1 if after.text.lower() in _CLAUSE_STARTS else 2
        pause = after.start - before.end
        return kind, abs(after.start - middle) - 2.0 * pause

    cut = min(range(1, len(tokens)), key=score)
    return _split_long(tokens[:cut], max_seconds) + _split_long(tokens[cut:], max_seconds)


def _joined(before: Token, after: Token) -> tuple[Token, Token]:
    """Two tokens either side of a full stop that turned out to be a piece's edge, rejoined:
    the stop dropped, and the next word's capital too where it is a plain word."""
    text = _FULL_STOP.sub("", before.text) or before.text
    word = after.text
    if (
        len(word) > 1
        and word[0].isupper()
        and word[1:].islower()
        and word != "I"
        and not word.startswith("I'")
    ):
        word = word[0].lower() + word[1:]
    return attrs.evolve(before, text=text), attrs.evolve(after, text=word)


def sentences(
    tokens: Iterable[Token],
    *,
    max_pause: float = DEFAULT_MAX_PAUSE,
    max_seconds: float = DEFAULT_MAX_SECONDS,
    edge_pause: float = DEFAULT_EDGE_PAUSE,
) -> list[Sentence]:
    """The sentences of a recording's tokens (in time order).

    A sentence ends after a word with terminal punctuation, before a pause longer than
    ``max_pause`` seconds, and where the speaker or the language changes; one longer than
    ``max_seconds`` is split at a clause boundary (a comma, a clause word such as "and" or
    "because", or the longest pause near its middle). Fragment edges never end one by
    themselves, and a full stop at a piece's last word ends a sentence only before a pause
    of ``edge_pause`` seconds or more (see :data:`DEFAULT_EDGE_PAUSE`); otherwise the stop is
    dropped and the sentence goes on into the next piece.
    """
    units: list[list[Token]] = []
    current: list[Token] = []
    for token in tokens:
        if current:
            last = current[-1]
            pause = token.start - last.end
            doubted = (
                token.piece != last.piece
                and pause < edge_pause
                and _ends_sentence(last)
                and not _SURE.search(last.text)
                and bool(_FULL_STOP.search(last.text))
            )
            if doubted and token.speaker == last.speaker and token.language == last.language:
                current[-1], token = _joined(last, token)
            elif (
                _ends_sentence(last)
                or pause > max_pause
                or token.speaker != last.speaker
                or token.language != last.language
            ):
                units.append(current)
                current = []
        current.append(token)
    if current:
        units.append(current)
    return [Sentence(tuple(part)) for unit in units for part in _split_long(unit, max_seconds)]


def split_text(text: str, weights: Sequence[float]) -> list[str]:
    """``text`` cut at word boundaries into ``len(weights)`` parts in proportion to ``weights``.

    Each cut goes to the word boundary nearest to its proportional place, preferring one
    right after punctuation when it is nearly as close; every part gets at least one word
    while there are words enough.
    """
    words = text.split()
    parts = len(weights)
    if parts <= 1 or not words:
        return [text.strip()] + [""] * max(parts - 1, 0)
    total = sum(max(w, 0.0) for w in weights) or float(parts)
    lengths = [len(w) + 1 for w in words]
    size = sum(lengths)
    # Character offset at the end of each word.
    ends, at = [], 0
    for n in lengths:
        at += n
        ends.append(at)
    cuts: list[int] = []
    share = 0.0
    for k, weight in enumerate(weights[:-1]):
        share += max(weight, 0.0) if total else 1.0
        aim = size * share / total
        low = (cuts[-1] + 1) if cuts else 1
        high = len(words) - (parts - 1 - k)  # leave a word for each later part
        if low > high:
            cuts.append(min(low, len(words)))
            continue

        def cost(n: int, aim: float = aim) -> float:
            punctuated = bool(_CLAUSE.search(words[n - 1]) or _TERMINAL.search(words[n - 1]))
            return abs(ends[n - 1] - aim) - (0.5 * lengths[n - 1] if punctuated else 0.0)

        cuts.append(min(range(low, high + 1), key=cost))
    bounds = [0, *cuts, len(words)]
    return [" ".join(words[a:b]) for a, b in itertools.pairwise(bounds)]
