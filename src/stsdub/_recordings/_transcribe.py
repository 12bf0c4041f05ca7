"""Every piece of a recording heard in order, in the language it is spoken in.

A file dub and a project transcribe their pieces one after another, each prompted with the
transcript before it. Where the source language is left to detection, each piece's language is
Whisper's guess from that piece alone. Once all are heard, the recording's language is the one
most of its speech was heard in; a piece detected, unsure, in another one is decoded again in
the recording's and keeps it where its words fit (:func:`settle_languages`, thresholds in
:mod:`stsdub._core._languages`). A recording that really changes language keeps each piece's
own, so each is translated (or refused) from what was spoken.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import attrs

from .._core._languages import doubtful_change, kept_language
from .._core._values import ASRRequest, AudioBuffer, Transcript
from .._media import ANALYSIS_RATE
from ..errors import StageError
from ._calls import call_stage

if TYPE_CHECKING:
    from .._core._audio import FloatArray
    from .._dubber import Dubber

__all__ = ["main_language", "settle_languages", "transcribe_pieces"]

Report = Callable[[str, int, int], None]


def main_language(heard: Iterable[tuple[str | None, float]]) -> str | None:
    """The language most of the speech is in: ``heard`` holds (language, seconds) per piece."""
    spoken: dict[str, float] = {}
    for language, seconds in heard:
        if language:
            spoken[language] = spoken.get(language, 0.0) + seconds
    return max(spoken, key=lambda k: spoken[k]) if spoken else None


async def settle_languages(
    dubber: Dubber, requests: Sequence[ASRRequest], heard: list[Transcript | StageError], timeout: float
) -> str | None:
    """Decode again, in the recording's language, the pieces detected unsure in another one.

    ``heard`` (one outcome per request, detected) is updated in place where the words of the
    second decode fit; such a piece's ``language_probability`` is then ``None`` (not detected).
    Returns the recording's language.
    """
    main = main_language(
        (t.language if isinstance(t, Transcript) and t.text.strip() else None, r.audio.duration)
        for r, t in zip(requests, heard, strict=True)
    )
    if main is None:
        return None
    stages, _ = dubber._require_open()
    for n, (request, outcome) in enumerate(zip(requests, heard, strict=True)):
        if isinstance(outcome, Transcript) and doubtful_change(outcome, main):
            again = await call_stage(
                dubber, stages.asr, attrs.evolve(request, language=main), "asr", Transcript, timeout
            )
            kept = kept_language(again, main) if isinstance(again, Transcript) else None
            if kept is not None:
                heard[n] = kept
    return main


async def transcribe_pieces(
    dubber: Dubber,
    audio16k: FloatArray,
    spans: Sequence[tuple[int, int]],
    *,
    language: str | None,
    timeout: float,
    stream_id: str,
    report: Report,
) -> list[Transcript | StageError]:
    """Every piece (``spans``: samples of ``audio16k``) transcribed in order, each prompted with
    the transcript before it; ``language`` ``None`` detects each piece's, then settles them."""
    stages, _ = dubber._require_open()
    previous: str | None = None
    requests: list[ASRRequest] = []
    out: list[Transcript | StageError] = []
    report("transcribe", 0, len(spans))
    for n, (a, b) in enumerate(spans):
        request = ASRRequest(
            audio=AudioBuffer(audio16k[a:b], ANALYSIS_RATE),
            language=language,
            previous_transcript=previous,
            stream_id=stream_id,
            sequence_number=n,
            fragment_id=f"piece-{n}",
        )
        outcome: Transcript | StageError = await call_stage(
            dubber, stages.asr, request, "asr", Transcript, timeout
        )
        if isinstance(outcome, Transcript) and outcome.text.strip():
            previous = outcome.text
        requests.append(request)
        out.append(outcome)
        report("transcribe", n + 1, len(spans))
    if language is None:
        await settle_languages(dubber, requests, out, timeout)
    return out
