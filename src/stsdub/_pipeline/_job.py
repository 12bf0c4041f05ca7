"""What a stream's steps hand each other: its settings, the shared stages, a job per fragment.

A :class:`Job` is one accepted fragment on its way through the stream's workers (its assets,
timings, warnings and error so far); its :class:`Ticket` is its place in the output order.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING

import anyio
import attrs

from .._core._values import (
    ASRRequest,
    AudioBuffer,
    DubResult,
    Fragment,
    SynthesisRequest,
    Transcript,
    TranscriptAsset,
    Translation,
    TranslationAsset,
    TranslationRequest,
)
from ..errors import StageError
from ._backpressure import BackpressureCallback, BackpressureLevels
from ._duration import trim_silence

if TYPE_CHECKING:
    from .._core._separation import Separation
    from ._duration import DurationMatcher
    from ._runner import StageRunner

__all__ = [
    "SHORTENABLE_KEY",
    "TAIL_KEY",
    "Job",
    "SpeakingRate",
    "Stages",
    "StreamConfig",
    "StreamRates",
    "Ticket",
]


@attrs.frozen
class StreamConfig:
    """Settings of one stream (the Dubber's, with the stream's overrides applied)."""

    stream_id: str
    source_language: str | None
    target_language: str
    voice: str | None
    max_inflight: int
    fragment_timeout: float
    fallback: str
    overflow: str
    output_sample_rate: int | None
    max_fragment_seconds: float
    retries: int
    retry_backoff: float
    levels: BackpressureLevels
    on_backpressure: BackpressureCallback | None
    #: ``{speaker: voice}`` the user chose; other speakers get voices cast by pitch.
    voices: Mapping[str, str] | None = None
    #: The soundtrack each result carries as ``mixed``: ``"duck"``, ``"separate"`` or ``None``.
    background: str | None = None
    #: Whether live fragments are labelled with their speaker (``None``: when the Dubber's
    #: diarizer can; ``False``: never).
    speakers: bool | None = None
    #: Live captions the stream yields beside its results: ``None``, ``"final"`` or
    #: ``"interim"`` (see :mod:`._captions`), and the seconds between two interim passes.
    captions: str | None = None
    caption_interval: float = 0.5
    #: Seconds a fragment that ends mid-sentence may wait for the rest of its sentence before
    #: it is translated (0: never; see :mod:`._translation`).
    sentence_wait: float = 0.0


@attrs.frozen
class Stages:
    """The stage runners a Dubber shares among its streams."""

    asr: StageRunner[ASRRequest, Transcript]
    translator: StageRunner[TranslationRequest, Translation] | None
    synthesizer: StageRunner[SynthesisRequest, AudioBuffer]
    duration: DurationMatcher
    duration_limiter: anyio.CapacityLimiter
    #: The Dubber's diarizer: a live fragment without a speaker is labelled by its ``embed``.
    diarizer: object | None = None
    diarizer_limiter: anyio.CapacityLimiter | None = None
    #: The Dubber's ``separate`` (its separator, queued by the stage's concurrency), for
    #: streams with ``background="separate"``; ``None`` without a separator.
    separate: Callable[..., Awaitable[Separation]] | None = None
    #: How fast each voice speaks (``(voice, language)`` → rate), learned by every stream of
    #: the Dubber: a new stream predicts its first fragment's speaking rate from it.
    voice_rates: dict[tuple[str | None, str], SpeakingRate] = attrs.field(factory=dict)


class Ticket:
    """The place of one accepted fragment in the output order; done when its result is."""

    __slots__ = ("done", "result")

    def __init__(self) -> None:
        self.done = anyio.Event()
        self.result: DubResult | None = None

    def resolve(self, result: DubResult | None) -> None:
        if not self.done.is_set():
            self.result = result
            self.done.set()


class Job:
    """A fragment on its way through the workers."""

    __slots__ = (
        "accepted_at",
        "deadline",
        "error",
        "fragment",
        "result",
        "separation",
        "speaker",
        "ticket",
        "timings",
        "transcript",
        "translation",
        "translation_request",
        "voice",
        "warnings",
    )

    def __init__(self, fragment: Fragment, ticket: Ticket) -> None:
        self.fragment = fragment
        self.ticket = ticket
        self.accepted_at = anyio.current_time()
        self.deadline = math.inf
        self.timings: dict[str, float] = {}
        self.warnings: list[str] = []
        #: Voice and background of the fragment (streams with ``background="separate"``).
        self.separation: Separation | None = None
        self.transcript: TranscriptAsset | None = None
        self.translation: TranslationAsset | None = None
        #: The request the translation came from (asked again, with a budget, to shorten it).
        self.translation_request: TranslationRequest | None = None
        self.error: StageError | None = None
        self.result: DubResult | None = None
        #: Who speaks (the fragment's label, or the one the diarizer's embedding matched).
        self.speaker: str | None = fragment.speaker
        #: The voice the dub is spoken with, once synthesis chose it.
        self.voice: str | None = None

    @property
    def pending(self) -> bool:
        """Still to be worked on (not failed, not answered early)."""
        return self.error is None and self.result is None

    @property
    def fragment_asset_id(self) -> str:
        return f"fragment:{self.fragment.fragment_id}"

    def asset_id(self, kind: str) -> str:
        return f"{kind}-{self.fragment.fragment_id}-{self.fragment.sequence_number}"


#: Shorter source speech than this is no reliable aim for the dubbed speech's length.
_MIN_SPAN_SECONDS = 0.3
#: The fragment metadata key a host sets to the seconds of pause it appended after the
#: fragment's own speech (see docs/duration-matching.md, "Borrowing time").
TAIL_KEY = "stsdub.tail_seconds"
#: The fragment metadata key a host sets (to ``True``) on a fragment whose given translation
#: is its share of a longer one (a file dub's sentence), not a text a person reviewed: a
#: translator that keeps to length budgets may still be asked for a shorter version of it.
SHORTENABLE_KEY = "stsdub.shortenable"


def fragment_tail(fragment: Fragment) -> float:
    """Seconds at the end of the fragment that are the pause after it (0 unless a host says)."""
    value = fragment.metadata.get(TAIL_KEY, 0.0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        return 0.0
    # Never the whole fragment: its own time stays at least a tenth of a second.
    return min(float(value), max(fragment.duration - 0.1, 0.0))


def speech_seconds(speech: AudioBuffer) -> float:
    return trim_silence(speech.samples).size / speech.sample_rate


class SpeakingRate:
    """A running estimate of how many characters a second this stream's voice speaks.

    Older syntheses count less (each new one weighs as much as the last five together,
    roughly), so a change of voice or speaker is followed within a few fragments.
    """

    _DECAY = 0.8
    # Speech shorter than this says little about the rate (a word, a breath).
    _MIN_SECONDS = 0.3

    def __init__(self) -> None:
        self.chars = 0.0
        self.seconds = 0.0

    def observe(self, chars: int, seconds: float) -> None:
        if chars <= 0 or seconds < self._MIN_SECONDS:
            return
        self.chars = self.chars * self._DECAY + chars
        self.seconds = self.seconds * self._DECAY + seconds

    def estimate(self) -> float | None:
        return self.chars / self.seconds if self.seconds > 0 else None


class StreamRates:
    """How fast a stream's voice speaks: its own estimate, and the Dubber's shared ones
    (``(voice, language)`` → rate) that a new stream predicts its first fragments from."""

    #: Seconds of a voice heard before its rate is used for predictions.
    PREDICT_AFTER_SECONDS = 1.0

    def __init__(self, shared: dict[tuple[str | None, str], SpeakingRate], language: str) -> None:
        self.own = SpeakingRate()
        self._shared = shared
        self._language = language

    def observe(self, voice: str | None, chars: int, seconds: float) -> None:
        """Learn the voice's speaking rate, for this stream and for the Dubber's later ones."""
        self.own.observe(chars, seconds)
        self._shared.setdefault((voice, self._language), SpeakingRate()).observe(chars, seconds)

    def predictable(self, voice: str | None) -> float | None:
        """The rate to predict with: the stream's own once heard enough, else the Dubber's."""
        measured = self.own
        if measured.seconds < self.PREDICT_AFTER_SECONDS:
            measured = self._shared.get((voice, self._language)) or measured
        return measured.estimate() if measured.seconds >= self.PREDICT_AFTER_SECONDS else None


def speech_span(transcript: TranscriptAsset | None) -> tuple[float, float] | None:
    """(start, length) in seconds of the speech the ASR found in the fragment, if it said."""
    if transcript is None or not transcript.transcript.segments:
        return None
    segments = transcript.transcript.segments
    start, end = segments[0].start, segments[-1].end
    if end - start < _MIN_SPAN_SECONDS:
        return None
    return start, end - start
