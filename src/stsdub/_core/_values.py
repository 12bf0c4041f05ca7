"""Values that cross a stage boundary: audio, fragments, requests, assets and results.

All are frozen attrs classes. Arrays compare by value.
"""

from __future__ import annotations

import base64
import enum
import html
import math
import numbers
import uuid
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import attrs
import numpy as np

from ..errors import InvalidAudioError, InvalidFragmentError, StageError
from . import _audio

if TYPE_CHECKING:
    from ._audio import FloatArray

__all__ = [
    "ASRRequest",
    "Action",
    "AudioAsset",
    "AudioBuffer",
    "BackpressureEvent",
    "DubResult",
    "Fit",
    "Fragment",
    "LengthBudget",
    "Segment",
    "Severity",
    "Status",
    "SynthesisRequest",
    "Transcript",
    "TranscriptAsset",
    "Translation",
    "TranslationAsset",
    "TranslationRequest",
    "Word",
]

_array_eq = attrs.cmp_using(eq=np.array_equal)


class Status(str, enum.Enum):
    """Outcome of one fragment. Values are the reference protocol's wire values."""

    SUCCESS = "success"
    #: Dubbed, but something was degraded (e.g. duration off by 10-20 %); see ``warnings``.
    PARTIAL = "partial"
    #: Not dubbed; the result carries fallback audio and an error.
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value


class Severity(str, enum.Enum):
    """Backpressure level of a stream."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"

    def __str__(self) -> str:
        return self.value


class Action(str, enum.Enum):
    """What the sender of a stream is asked to do."""

    NONE = "none"
    SLOW_DOWN = "slow_down"
    PAUSE = "pause"

    def __str__(self) -> str:
        return self.value


def _buffer_rate(rate: object) -> int:
    return _audio.check_sample_rate(rate, what="AudioBuffer")


def _fragment_rate(rate: object) -> int:
    return _audio.check_sample_rate(rate, what="fragment")


def _validate_buffer(inst: AudioBuffer, _attr: object, _value: object) -> None:
    _audio.check_samples(inst.samples, what="AudioBuffer", allow_empty=True)


@attrs.frozen(repr=False)
class AudioBuffer:
    """Mono float32 audio in [-1, 1] at an explicit sample rate.

    Use :meth:`from_pcm16` / :meth:`from_base64` to build one from PCM16 data.
    """

    samples: FloatArray = attrs.field(eq=_array_eq, validator=_validate_buffer)
    sample_rate: int = attrs.field(converter=_buffer_rate)

    @classmethod
    def from_pcm16(cls, data: bytes, sample_rate: int, *, channels: int = 1) -> AudioBuffer:
        """Decode little-endian PCM16 bytes (interleaved channels are mixed to mono)."""
        return cls(_audio.pcm16_to_float(data, channels=channels), sample_rate)

    @classmethod
    def from_base64(cls, data: str | bytes, sample_rate: int, *, channels: int = 1) -> AudioBuffer:
        """Decode base64 text of PCM16 bytes."""
        return cls(_audio.base64_to_float(data, channels=channels), sample_rate)

    @classmethod
    def silence(cls, seconds: float, sample_rate: int) -> AudioBuffer:
        """Digital silence of the given duration.

        Raises:
            InvalidAudioError: ``seconds`` is negative or not a finite number, or the rate is bad.
        """
        rate = _buffer_rate(sample_rate)
        # Checked here: NaN or a string would fail inside NumPy with ValueError or TypeError.
        if isinstance(seconds, bool) or not isinstance(seconds, numbers.Real):
            raise InvalidAudioError(f"AudioBuffer.silence: seconds must be a number, got {seconds!r}")
        # float(): a NumPy int8 of seconds times the rate would overflow in int8.
        seconds = float(seconds)
        if not 0 <= seconds < math.inf:
            raise InvalidAudioError(f"AudioBuffer.silence: seconds must be finite and >= 0, got {seconds!r}")
        return cls(np.zeros(round(seconds * rate), dtype=np.float32), rate)

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.samples.size / self.sample_rate

    def resampled(self, sample_rate: int) -> AudioBuffer:
        """The same audio at another rate (soxr).

        Raises:
            InvalidAudioError: ``sample_rate`` is not an int between 1 and 384000.
        """
        sample_rate = _buffer_rate(sample_rate)  # soxr would raise ValueError for 0
        if sample_rate == self.sample_rate:
            return self
        return AudioBuffer(_audio.resample(self.samples, self.sample_rate, sample_rate), sample_rate)

    def to_pcm16(self, *, channels: int = 1) -> bytes:
        """Little-endian PCM16 bytes, duplicated to ``channels``."""
        return _audio.float_to_pcm16(self.samples, channels=channels)

    def to_base64(self, *, channels: int = 1) -> str:
        """Base64 text of :meth:`to_pcm16`."""
        return _audio.float_to_base64(self.samples, channels=channels)

    def to_wav(self) -> bytes:
        """A 16-bit WAV file in memory."""
        return _audio.wav_bytes(self.samples, self.sample_rate)

    def __repr__(self) -> str:
        return f"AudioBuffer({self.duration:.3f} s at {self.sample_rate} Hz)"

    def _repr_html_(self) -> str:
        data = base64.b64encode(self.to_wav()).decode("ascii")
        return f'<audio controls src="data:audio/wav;base64,{data}"></audio>'


def _check_fragment_audio(inst: Fragment, _attr: object, value: object) -> None:
    _audio.check_samples(value, what=f"fragment {inst.sequence_number}")


def _check_sequence_number(_inst: Fragment, _attr: object, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise InvalidAudioError(f"sequence_number must be a non-negative int, got {_short(value)}")


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _check_fragment_id(_inst: Fragment, _attr: object, value: object) -> None:
    if not isinstance(value, str) or not value:
        raise InvalidFragmentError(f"fragment_id must be a non-empty str, got {_short(value)}")


def _check_stream_id(_inst: Fragment, _attr: object, value: Any) -> None:
    # The Dubber refuses an empty stream name too; None means "the stream it is sent to".
    if value is not None and (not isinstance(value, str) or not value):
        raise InvalidFragmentError(f"stream_id must be None or a non-empty str, got {_short(value)}")


def _check_speaker(_inst: Fragment, _attr: object, value: Any) -> None:
    if value is not None and (not isinstance(value, str) or not value):
        raise InvalidFragmentError(f"speaker must be None or a non-empty str, got {_short(value)}")


def _check_timestamp(_inst: Fragment, _attr: object, value: Any) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))):
        raise InvalidFragmentError(f"timestamp_ms must be None or an int (milliseconds), got {_short(value)}")


def _check_metadata(_inst: Fragment, _attr: object, value: object) -> None:
    if not isinstance(value, Mapping):
        raise InvalidFragmentError(f"metadata must be a mapping, got {type(value).__name__}")


def _new_id() -> str:
    return uuid.uuid4().hex


def _given_transcript(value: object) -> Transcript | None:
    if value is None or isinstance(value, Transcript):
        return value
    if isinstance(value, str):
        return Transcript(value)
    raise InvalidFragmentError(f"transcript must be None, a str or a Transcript, got {_short(value)}")


def _given_translation(value: object) -> Translation | None:
    if value is None or isinstance(value, Translation):
        return value
    if isinstance(value, str):
        return Translation(value)
    raise InvalidFragmentError(f"translation must be None, a str or a Translation, got {_short(value)}")


@attrs.frozen(repr=False)
class Fragment:
    """One piece of source audio to dub.

    Args:
        sequence_number: Position in its stream; must increase strictly within the stream.
        audio: 1-D float32 samples in [-1, 1]; see :meth:`from_pcm16` for PCM16 input.
        sample_rate: Samples per second of ``audio``.
        fragment_id: Unique id; a random one when left out.
        stream_id: The stream it belongs to; ``None`` means "the stream it is sent to".
        timestamp_ms: Optional media timestamp, carried through to the result untouched.
        metadata: Free-form data carried through to the result untouched.
        transcript: What was said, when it is already known (a reviewed transcript, a
            subtitle file): the ASR is not called for this fragment. A str or a
            :class:`Transcript`; an empty text means no speech.
        translation: What the dub should say, when it is already known: the translator is not
            called for this fragment. A str or a :class:`Translation`.
        speaker: Who speaks, when it is already known (a label such as ``"S1"``, as a file
            dub's diarization gives it); the stream's ``voices`` map, or the voice it casts for
            the speaker, speaks it. ``None``: the stream's diarizer (if any) tells.

    Raises:
        InvalidAudioError: The audio is not finite 1-D float32 in [-1, 1], the sample rate is
            not an int in 1-384000, or the sequence number is not an int >= 0.
        InvalidFragmentError: ``fragment_id``, ``stream_id``, ``timestamp_ms`` or
            ``metadata``, ``transcript``, ``translation`` or ``speaker`` has the wrong type
            (or an id is empty).
    """

    # Order matters: audio's validator names the sequence number, so it is checked first.
    sequence_number: int = attrs.field(validator=_check_sequence_number)
    audio: FloatArray = attrs.field(eq=_array_eq, validator=_check_fragment_audio)
    sample_rate: int = attrs.field(converter=_fragment_rate)
    fragment_id: str = attrs.field(factory=_new_id, validator=_check_fragment_id)
    stream_id: str | None = attrs.field(default=None, validator=_check_stream_id)
    timestamp_ms: int | None = attrs.field(default=None, validator=_check_timestamp)
    metadata: Mapping[str, Any] = attrs.field(factory=dict, eq=False, validator=_check_metadata)
    transcript: Transcript | None = attrs.field(default=None, converter=_given_transcript, kw_only=True)
    translation: Translation | None = attrs.field(default=None, converter=_given_translation, kw_only=True)
    speaker: str | None = attrs.field(default=None, validator=_check_speaker, kw_only=True)

    @classmethod
    def from_pcm16(
        cls, sequence_number: int, data: bytes, sample_rate: int, *, channels: int = 1, **kwargs: Any
    ) -> Fragment:
        """Build a fragment from little-endian PCM16 bytes."""
        return cls(sequence_number, _audio.pcm16_to_float(data, channels=channels), sample_rate, **kwargs)

    @classmethod
    def from_base64(
        cls, sequence_number: int, data: str | bytes, sample_rate: int, *, channels: int = 1, **kwargs: Any
    ) -> Fragment:
        """Build a fragment from base64 text of PCM16 bytes (the reference wire format)."""
        return cls(sequence_number, _audio.base64_to_float(data, channels=channels), sample_rate, **kwargs)

    @property
    def buffer(self) -> AudioBuffer:
        """The audio as an :class:`AudioBuffer`."""
        return AudioBuffer(self.audio, self.sample_rate)

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.audio.size / self.sample_rate

    def __repr__(self) -> str:
        return (
            f"Fragment(#{self.sequence_number}, {self.duration:.3f} s at {self.sample_rate} Hz,"
            f" id={self.fragment_id!r}, stream={self.stream_id!r})"
        )


@attrs.frozen
class Word:
    """A word with times in seconds from the start of its fragment."""

    start: float
    end: float
    word: str
    probability: float | None = None


@attrs.frozen
class Segment:
    """A stretch of a transcript with times in seconds from the start of its fragment."""

    start: float
    end: float
    text: str
    words: tuple[Word, ...] = ()
    #: Who said it (``"S1"``), when the Dubber knows (a diarizer, or the fragment's speaker).
    speaker: str | None = None


def _segments(value: Iterable[Segment]) -> tuple[Segment, ...]:
    return tuple(value)


@attrs.frozen
class Transcript:
    """What an ASR stage heard."""

    text: str
    language: str | None = None
    segments: tuple[Segment, ...] = attrs.field(default=(), converter=_segments)
    language_probability: float | None = None


@attrs.frozen
class Translation:
    """What a translator produced."""

    text: str
    #: The source language the translator detected, when it reports one.
    detected_source_language: str | None = None


@attrs.frozen(kw_only=True)
class _StageRequest:
    stream_id: str = "default"
    sequence_number: int = 0
    fragment_id: str = ""
    #: Per-request options for the stage (e.g. DeepL's ``formality``), for code that calls a
    #: stage directly; the pipeline leaves it empty and stages fall back to their own settings.
    options: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class ASRRequest(_StageRequest):
    """Input of :meth:`stsdub.stages.ASR.transcribe`."""

    audio: AudioBuffer
    #: Expected language, ``None`` to detect.
    language: str | None = None
    #: Transcript of the stream's previous fragment (for prompting), if any.
    previous_transcript: str | None = None
    #: A fast pass for a live interim caption over audio still growing: the stage may decode
    #: greedily and skip word times; the result is shown, never dubbed.
    interim: bool = False


@attrs.frozen(kw_only=True)
class LengthBudget:
    """How long a translation may be so that it can be spoken in the time there is.

    The pipeline sets one on a second :class:`TranslationRequest` when the first
    translation, spoken, would need more than the duration policy's ``comfortable_speed``;
    only translators that declare ``supports_length_budget = True`` are asked.
    """

    #: Most characters (spaces and punctuation included) the translation should have.
    max_chars: int
    #: The seconds of speech those characters stand for.
    seconds: float
    #: The translation that was too long (a translator may rewrite it rather than start over).
    previous: str | None = None
    #: The voice's measured speaking rate in this stream that the budget was estimated from.
    chars_per_second: float | None = None


def _context_pairs(value: Iterable[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    return tuple((str(source), str(translation)) for source, translation in value)


@attrs.frozen(kw_only=True)
class TranslationRequest(_StageRequest):
    """Input of :meth:`stsdub.stages.Translator.translate`."""

    text: str
    source_language: str | None
    target_language: str
    #: Source text of the stream's previous fragment, if any (DeepL's ``context``).
    previous_text: str | None = None
    #: Translation of the stream's previous fragment, if any.
    previous_translation: str | None = None
    #: A length the translation should keep to, or ``None``; set only for translators that
    #: declare ``supports_length_budget = True``.
    budget: LengthBudget | None = None
    #: The sentences said before this one (by the same speaker, or in the same recording),
    #: oldest first, as ``(source text, translation)`` pairs: what a translator that reads
    #: context needs to translate this one consistently (pronouns, terms, register). Set only
    #: for translators that declare ``supports_context = True``; never to be translated.
    context: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_context_pairs)


@attrs.frozen(kw_only=True)
class SynthesisRequest(_StageRequest):
    """Input of :meth:`stsdub.stages.Synthesizer.synthesize`."""

    text: str
    language: str
    voice: str | None = None
    #: Seconds the speech should last (the source fragment's length), or ``None``.
    target_duration: float | None = None
    #: Speaking-rate factor the pipeline asks for (>1 faster); stages that cannot, ignore it.
    speed: float = 1.0
    #: Text synthesized for the stream's previous fragment, if any.
    previous_text: str | None = None
    #: Who speaks the fragment (as :attr:`DubResult.speaker`); set by the pipeline only for a
    #: synthesizer that declares ``clones_speakers = True``.
    speaker: str | None = None
    #: The source fragment's audio, set alongside ``speaker`` for a synthesizer that clones
    #: each speaker's voice from their own speech; ``None`` otherwise.
    source_audio: AudioBuffer | None = None


@attrs.frozen
class TranscriptAsset:
    """Output of the ASR stage, with lineage."""

    asset_id: str
    parent_asset_ids: tuple[str, ...]
    transcript: Transcript

    @property
    def text(self) -> str:
        return self.transcript.text

    @property
    def language(self) -> str | None:
        return self.transcript.language


@attrs.frozen
class TranslationAsset:
    """Output of the translation stage (or the transcript, when no translation was needed)."""

    asset_id: str
    parent_asset_ids: tuple[str, ...]
    translation: Translation
    source_text: str
    #: False when source and target language were equal and the translator was not called.
    translated: bool = True

    @property
    def text(self) -> str:
        return self.translation.text


@attrs.frozen
class AudioAsset:
    """The audio a result carries, with lineage.

    ``kind`` says honestly what it is: ``"dubbed"`` speech, ``"silence"`` (no speech in the
    fragment, or the silence fallback), ``"original"`` (the original-audio fallback), or
    ``"mixed"`` (:attr:`DubResult.mixed`: the dub over the fragment's soundtrack).
    """

    asset_id: str
    parent_asset_ids: tuple[str, ...]
    audio: AudioBuffer
    kind: str = "dubbed"

    @property
    def samples(self) -> FloatArray:
        return self.audio.samples

    @property
    def sample_rate(self) -> int:
        return self.audio.sample_rate

    @property
    def duration(self) -> float:
        return self.audio.duration


@attrs.frozen
class Fit:
    """What was done to make a fragment's dubbed speech fit its time.

    All factors are tempo factors: above 1 faster, below 1 slower, 1.0 untouched.
    """

    #: True when the translator was asked again with a :class:`LengthBudget` and its shorter
    #: text was spoken.
    shortened: bool = False
    #: The translation before it was shortened (``None`` when it was not).
    long_text: str | None = None
    #: The budget the translator was asked to keep to, if one was asked for.
    budget: LengthBudget | None = None
    #: Speaking rate asked of the synthesizer.
    speed: float = 1.0
    #: Rubberband tempo applied afterwards (beyond ``max_stretch`` when the carry bound forced it).
    stretch: float = 1.0
    #: Seconds taken from the silence after the source's speech (or the pause after the
    #: fragment) instead of speeding up.
    borrowed: float = 0.0
    #: Seconds from the fragment's start at which the dubbed speech starts.
    start: float = 0.0
    #: Seconds the dubbed speech lasts, as placed (carried speech of the next fragment included).
    seconds: float = 0.0
    #: Seconds the source's speech lasted (the aim), before anything was borrowed.
    aim: float = 0.0
    #: Seconds the speech lasted as first synthesized, at the synthesizer's own speed.
    natural: float = 0.0

    @property
    def sped_up(self) -> float:
        """The overall tempo change: speaking rate times stretch."""
        return self.speed * self.stretch


@attrs.frozen(repr=False)
class DubResult:
    """The one result of one accepted fragment.

    ``audio`` is always present and always exactly as long as the fragment: dubbed speech on
    SUCCESS / PARTIAL, fallback audio (silence or the original) on FAILED.
    """

    sequence_number: int
    fragment_id: str
    stream_id: str
    status: Status
    audio: AudioAsset
    transcript: TranscriptAsset | None = None
    translation: TranslationAsset | None = None
    error: StageError | None = None
    #: Milliseconds per step: ``asr``, ``translation``, ``synthesis``, ``duration``, ``total``.
    timings: Mapping[str, float] = attrs.field(factory=dict)
    warnings: tuple[str, ...] = ()
    #: Relative difference between the dubbed speech's length and the fragment's, left after
    #: the clamped speed change and time-stretch (what the status is based on).
    duration_variance: float | None = None
    timestamp_ms: int | None = None
    metadata: Mapping[str, Any] = attrs.field(factory=dict, eq=False)
    #: How the dubbed speech was made to fit (shortened, speed, stretch, borrowed time);
    #: ``None`` when no speech was synthesized (silence, failures).
    fit: Fit | None = None
    #: Who spoke (``"S1"``), from the fragment or the stream's diarizer; ``None`` when unknown.
    speaker: str | None = None
    #: The voice the dub was spoken with (the speaker's, else the stream's); ``None`` when no
    #: speech was synthesized or no voice was named.
    voice: str | None = None
    #: The fragment's soundtrack with the dub over it, when the stream asked for it
    #: (``background="duck"`` or ``"separate"``); ``audio`` stays the dub alone. ``None``
    #: otherwise, and for fragments refused at admission.
    mixed: AudioAsset | None = None

    @property
    def ok(self) -> bool:
        """True unless the fragment FAILED."""
        return self.status is not Status.FAILED

    @property
    def assets(self) -> tuple[TranscriptAsset | TranslationAsset | AudioAsset, ...]:
        """Every asset of the result, in lineage order."""
        found = (self.transcript, self.translation, self.audio, self.mixed)
        return tuple(a for a in found if a is not None)

    def __repr__(self) -> str:
        parts = [f"#{self.sequence_number}", self.status.value.upper()]
        if self.error is not None:
            parts.append(str(self.error))
        if self.transcript is not None:
            parts.append(f"heard={self.transcript.text!r}")
        if self.translation is not None and self.translation.translated:
            parts.append(f"said={self.translation.text!r}")
        return f"DubResult({', '.join(parts)}, stream={self.stream_id!r})"

    def _repr_html_(self) -> str:
        esc = html.escape
        rows = [
            ("status", esc(self.status.value.upper())),
            ("stream / seq", esc(f"{self.stream_id} / {self.sequence_number}")),
        ]
        if self.transcript is not None:
            rows.append(("transcript", esc(self.transcript.text)))
        if self.translation is not None:
            rows.append(("translation", esc(self.translation.text)))
        if self.error is not None:
            rows.append(("error", esc(str(self.error))))
        if self.warnings:
            rows.append(("warnings", esc("; ".join(self.warnings))))
        if self.timings:
            rows.append(("timings", esc(", ".join(f"{k} {v:.0f} ms" for k, v in self.timings.items()))))
        rows.append((esc(f"audio ({self.audio.kind})"), self.audio.audio._repr_html_()))
        body = "".join(f"<tr><th style='text-align:left'>{k}</th><td>{v}</td></tr>" for k, v in rows)
        return f"<table>{body}</table>"


@attrs.frozen
class BackpressureEvent:
    """A stream's backpressure level changed.

    ``in_flight`` counts the stream's fragments that were sent and not yet answered,
    including senders waiting at the door; the pipeline itself never holds more than
    ``max_inflight``.
    """

    stream_id: str
    severity: Severity
    action: Action
    in_flight: int
    max_inflight: int
