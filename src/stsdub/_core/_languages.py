"""Language tags as users type them (``en``, ``en-US``, ``pt_BR``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from ._values import Transcript

__all__ = [
    "FITS_LANGUAGE",
    "SURE_LANGUAGE",
    "base_language",
    "doubtful_change",
    "kept_language",
    "same_language",
    "word_confidence",
]


def base_language(tag: str) -> str:
    """The primary subtag, lower-cased: ``"EN-us"`` → ``"en"``, ``"pt_BR"`` → ``"pt"``."""
    return tag.replace("_", "-").split("-")[0].lower()


def same_language(a: str | None, b: str | None) -> bool:
    """Whether two tags name the same language (``en`` = ``EN-us``); unknown is never equal."""
    if a is None or b is None:
        return False
    return base_language(a) == base_language(b)


# -- which language a piece of speech is in --------------------------------------------------
# Whisper detects a language from each piece alone, and on a few words of far-field speech its
# guess is often wrong (real English meeting pieces heard as Welsh at 0.5, German at 0.8). A
# piece detected in another language than the recording's (or the stream's) is decoded again in
# that one unless the detection is sure, and keeps it where the words fit; a sure detection is a
# real change of language.

#: A detected language this sure (0-1) is taken even where the recording's or stream's differs.
SURE_LANGUAGE = 0.85
#: Words decoded at least this sure on average: the speech is in the language decoded.
FITS_LANGUAGE = 0.6


def word_confidence(transcript: Transcript) -> float:
    """The mean probability of the transcript's words (1 when there are none to judge by)."""
    probabilities = [w.probability for s in transcript.segments for w in s.words if w.probability is not None]
    return sum(probabilities) / len(probabilities) if probabilities else 1.0


def doubtful_change(transcript: Transcript, last: str | None) -> bool:
    """Whether ``transcript``'s detected language is an unsure change from ``last`` (the
    recording's or the stream's language), worth a second decode in ``last``."""
    probability = transcript.language_probability
    return (
        last is not None
        and transcript.language is not None
        and probability is not None
        and probability < SURE_LANGUAGE
        and bool(transcript.text.strip())
        and not same_language(transcript.language, last)
    )


def kept_language(again: Transcript, last: str) -> Transcript | None:
    """The second decode (in ``last``), marked as heard in it, when its words fit; else None."""
    if word_confidence(again) < FITS_LANGUAGE:
        return None
    return attrs.evolve(again, language=last, language_probability=None)
