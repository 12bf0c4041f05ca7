"""The wire protocol: event names, payload parsing and validation, payload building.

Everything a client sends is checked here before it reaches the library: types, required
fields, identifiers, languages, the declared audio format, strict base64, sizes. A payload
that fails a check becomes a :class:`ProtocolError` with a code, which the service answers
without disturbing the connection or any other stream. ``docs/protocol.md`` describes the
same schemas for client authors.
"""

from __future__ import annotations

import base64
import binascii
import enum
import re
from collections.abc import Mapping
from typing import Any

import attrs
import numpy as np

from .._core._captions import Caption
from .._core._values import DubResult, Fragment
from ..errors import InvalidFragmentError, StageError
from ._settings import ALLOWED_SAMPLE_RATES

__all__ = [
    "AudioFormat",
    "FragmentData",
    "ProtocolError",
    "ProtocolErrorCode",
    "StreamInit",
    "error_payload",
    "processed_payload",
]

#: The only audio encoding on the wire: little-endian signed 16-bit PCM.
PCM_FORMAT = "pcm_s16le"
_FORMAT_ALIASES = {"pcm_s16le": PCM_FORMAT, "pcm16": PCM_FORMAT, "s16le": PCM_FORMAT}
# Identifiers travel into logs, metrics labels and artifact paths: keep them plain.
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
_LANGUAGE = re.compile(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")
_VOICE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._:/-]{0,127}$")
_STAGE_NAMES = {
    "asr": "asr",
    "translation": "translation",
    "synthesis": "tts",
    "duration": "duration_matching",
    "queued": "pipeline_queue",
    "total": "pipeline",
}


class ProtocolErrorCode(str, enum.Enum):
    """Codes of errors about a request itself (the library's ErrorCode covers the stages)."""

    INVALID_PAYLOAD = "INVALID_PAYLOAD"
    INVALID_AUDIO_FORMAT = "INVALID_AUDIO_FORMAT"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    SEQUENCE_ERROR = "SEQUENCE_ERROR"
    UNSUPPORTED_LANGUAGE = "UNSUPPORTED_LANGUAGE"
    INVALID_CONFIG = "INVALID_CONFIG"
    #: The stream needs translation and the service runs without a translator.
    TRANSLATOR_UNAVAILABLE = "TRANSLATOR_UNAVAILABLE"
    STREAM_NOT_FOUND = "STREAM_NOT_FOUND"
    STREAM_EXISTS = "STREAM_EXISTS"
    STREAM_LIMIT_REACHED = "STREAM_LIMIT_REACHED"
    STREAM_PAUSED = "STREAM_PAUSED"
    STREAM_ENDING = "STREAM_ENDING"
    BACKPRESSURE_REJECTED = "BACKPRESSURE_REJECTED"
    NOT_READY = "NOT_READY"
    UNAUTHORIZED = "UNAUTHORIZED"

    @property
    def retryable(self) -> bool:
        """Whether the same request may succeed later without change."""
        return self in (ProtocolErrorCode.BACKPRESSURE_REJECTED, ProtocolErrorCode.NOT_READY)

    def __str__(self) -> str:
        return self.value


class ProtocolError(Exception):
    """A request the service refuses; answered with its code and message."""

    def __init__(self, code: ProtocolErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def to_dict(self, stage: str = "ingest") -> dict[str, Any]:
        """The protocol's ``error`` object."""
        return {
            "code": self.code.value,
            "message": self.message,
            "stage": stage,
            "retryable": self.code.retryable,
        }


def _invalid(message: str) -> ProtocolError:
    return ProtocolError(ProtocolErrorCode.INVALID_PAYLOAD, message)


def _mapping(value: object, what: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise _invalid(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def _field(data: Mapping[str, Any], name: str, kind: type | tuple[type, ...], what: str) -> Any:
    if name not in data or data[name] is None:
        raise _invalid(f"{what}: missing field {name!r}")
    return _typed(data[name], name, kind, what)


def _typed(value: object, name: str, kind: type | tuple[type, ...], what: str) -> Any:
    # bool is an int in Python and never a valid number here.
    if isinstance(value, bool) and kind is not bool:
        raise _invalid(f"{what}: {name!r} must be {_kind_name(kind)}, got a boolean")
    if not isinstance(value, kind):
        raise _invalid(f"{what}: {name!r} must be {_kind_name(kind)}, got {type(value).__name__}")
    return value


def _kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    names = {int: "an integer", str: "a string", float: "a number", bool: "a boolean"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _optional(data: Mapping[str, Any], name: str, kind: type | tuple[type, ...], what: str) -> Any:
    value = data.get(name)
    return None if value is None else _typed(value, name, kind, what)


def _identifier(data: Mapping[str, Any], name: str, what: str) -> str:
    value: str = _field(data, name, str, what)
    if not _ID.match(value) or ".." in value:
        raise _invalid(
            f"{what}: {name!r} must be 1-128 letters, digits or . _ : - (starting with a letter or"
            f" digit), got {value[:40]!r}"
        )
    return value


def _language(value: str | None, name: str) -> str | None:
    if value is not None and not _LANGUAGE.match(value):
        raise ProtocolError(
            ProtocolErrorCode.UNSUPPORTED_LANGUAGE,
            f"{name} must be a language tag like 'en' or 'pt-BR', got {value[:20]!r}",
        )
    return value


@attrs.frozen
class AudioFormat:
    """The audio a stream sends: PCM16 at a declared rate and channel count."""

    sample_rate: int
    channels: int
    format: str = PCM_FORMAT

    @classmethod
    def parse(cls, data: Mapping[str, Any], what: str) -> AudioFormat:
        fmt = _optional(data, "format", str, what) or PCM_FORMAT
        if fmt.lower() not in _FORMAT_ALIASES:
            raise ProtocolError(
                ProtocolErrorCode.INVALID_AUDIO_FORMAT,
                f"{what}: audio format must be {PCM_FORMAT!r} (little-endian 16-bit PCM), got {fmt[:20]!r}",
            )
        rate: int = _field(data, "sample_rate_hz", int, what)
        if rate not in ALLOWED_SAMPLE_RATES:
            raise ProtocolError(
                ProtocolErrorCode.INVALID_AUDIO_FORMAT,
                f"{what}: sample_rate_hz must be one of {list(ALLOWED_SAMPLE_RATES)}, got {rate}",
            )
        channels = _optional(data, "channels", int, what)
        channels = 1 if channels is None else channels
        if channels not in (1, 2):
            raise ProtocolError(
                ProtocolErrorCode.INVALID_AUDIO_FORMAT, f"{what}: channels must be 1 or 2, got {channels}"
            )
        return cls(rate, channels)

    def to_dict(self) -> dict[str, Any]:
        return {"format": self.format, "sample_rate_hz": self.sample_rate, "channels": self.channels}


def _audio_fields(config: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    """The fields of a ``stream:init``'s audio format, in any of the forms clients send.

    Nested: ``audio_format: {format, sample_rate_hz, channels}``. Flat, as the reference's
    clients send it: ``audio_format: "pcm_s16le"`` (the format's name) with ``sample_rate_hz``
    and ``channels`` beside it in ``config``, or those fields in ``config`` with no
    ``audio_format`` at all.
    """
    audio_format = config.get("audio_format")
    if audio_format is None:
        return config
    if isinstance(audio_format, str):
        return {**config, "format": audio_format}
    if not isinstance(audio_format, Mapping):
        raise _invalid(
            f"{where}.audio_format must be a JSON object or a format name such as {PCM_FORMAT!r},"
            f" got {type(audio_format).__name__}"
        )
    return audio_format


@attrs.frozen
class StreamInit:
    """A parsed ``stream:init``."""

    stream_id: str
    worker_id: str | None
    source_language: str | None
    target_language: str | None
    voice: str | None
    audio: AudioFormat
    max_inflight: int | None
    timeout_ms: int | None
    fallback: str | None
    background: str | None = None
    #: ``True``: label each fragment's speaker (the service needs a diarizer); ``False``:
    #: never; ``None``: when the service has a diarizer.
    speakers: bool | None = None
    #: ``"final"`` or ``"interim"``: send ``caption`` events (see docs/captions.md).
    captions: str | None = None
    caption_interval_ms: int | None = None
    #: How long a fragment that ends mid-sentence may wait for the rest (ms; see docs/guide.md).
    sentence_wait_ms: int | None = None

    @classmethod
    def parse(cls, payload: object) -> StreamInit:
        """Check a ``stream:init`` payload.

        Raises:
            ProtocolError: Anything missing, mistyped or out of range.
        """
        what = "stream:init"
        data = _mapping(payload, what)
        stream_id = _identifier(data, "stream_id", what)
        worker_id = _optional(data, "worker_id", str, what)
        config = _mapping(data.get("config", {}), f"{what}.config")
        where = f"{what}.config"
        source = _language(_optional(config, "source_language", str, where), "source_language")
        target = _language(_optional(config, "target_language", str, where), "target_language")
        voice = _optional(config, "voice_profile", str, where)
        if voice is not None and not _VOICE.match(voice):
            raise ProtocolError(
                ProtocolErrorCode.INVALID_CONFIG, f"{where}: voice_profile {voice[:40]!r} is not a valid name"
            )
        audio = AudioFormat.parse(_audio_fields(config, where), where)
        max_inflight = _optional(data, "max_inflight", int, what)
        if max_inflight is not None and max_inflight < 1:
            raise ProtocolError(
                ProtocolErrorCode.INVALID_CONFIG, f"{what}: max_inflight must be >= 1, got {max_inflight}"
            )
        timeout_ms = _optional(data, "timeout_ms", int, what)
        if timeout_ms is not None and not 100 <= timeout_ms <= 600_000:
            raise ProtocolError(
                ProtocolErrorCode.INVALID_CONFIG,
                f"{what}: timeout_ms must be between 100 and 600000, got {timeout_ms}",
            )
        fallback = _optional(config, "fallback", str, where)
        if fallback is not None and fallback not in ("silence", "original"):
            raise ProtocolError(
                ProtocolErrorCode.INVALID_CONFIG,
                f"{where}: fallback must be 'silence' or 'original', got {fallback[:20]!r}",
            )
        background = _optional(config, "background", str, where)
        if background is not None and background not in ("duck", "separate"):
            raise ProtocolError(
                ProtocolErrorCode.INVALID_CONFIG,
                f"{where}: background must be 'duck' or 'separate', got {background[:20]!r}",
            )
        speakers = _optional(config, "speakers", bool, where)
        captions = _optional(config, "captions", str, where)
        if captions is not None and captions not in ("final", "interim"):
            raise ProtocolError(
                ProtocolErrorCode.INVALID_CONFIG,
                f"{where}: captions must be 'final' or 'interim', got {captions[:20]!r}",
            )
        interval = _optional(config, "caption_interval_ms", int, where)
        if interval is not None and not 50 <= interval <= 10_000:
            raise ProtocolError(
                ProtocolErrorCode.INVALID_CONFIG,
                f"{where}: caption_interval_ms must be between 50 and 10000, got {interval}",
            )
        sentence_wait = _optional(config, "sentence_wait_ms", int, where)
        if sentence_wait is not None and not 0 <= sentence_wait <= 30_000:
            raise ProtocolError(
                ProtocolErrorCode.INVALID_CONFIG,
                f"{where}: sentence_wait_ms must be between 0 and 30000, got {sentence_wait}",
            )
        return cls(
            stream_id,
            worker_id,
            source,
            target,
            voice,
            audio,
            max_inflight,
            timeout_ms,
            fallback,
            background,
            speakers,
            captions,
            interval,
            sentence_wait,
        )


@attrs.frozen
class FragmentData:
    """A parsed and decoded ``fragment:data``."""

    fragment: Fragment
    audio: AudioFormat

    @property
    def stream_id(self) -> str:
        assert self.fragment.stream_id is not None
        return self.fragment.stream_id

    @staticmethod
    def peek(payload: object) -> tuple[str | None, str | None, int | None]:
        """Best-effort ``(fragment_id, stream_id, sequence_number)`` of any payload, for answers."""
        if not isinstance(payload, Mapping):
            return None, None, None
        fragment_id = payload.get("fragment_id")
        stream_id = payload.get("stream_id")
        seq = payload.get("sequence_number")
        return (
            fragment_id if isinstance(fragment_id, str) and _ID.match(fragment_id) else None,
            stream_id if isinstance(stream_id, str) and _ID.match(stream_id) else None,
            seq if isinstance(seq, int) and not isinstance(seq, bool) else None,
        )

    @staticmethod
    def header(payload: object, what: str = "fragment:data") -> tuple[str, str, int, Mapping[str, Any]]:
        """The identity fields of a ``fragment:data`` (or ``audio:partial``) and its ``audio``.

        Raises:
            ProtocolError: A field is missing or mistyped.
        """
        data = _mapping(payload, what)
        fragment_id = _identifier(data, "fragment_id", what)
        stream_id = _identifier(data, "stream_id", what)
        seq: int = _field(data, "sequence_number", int, what)
        if seq < 0:
            raise _invalid(f"{what}: sequence_number must be >= 0, got {seq}")
        audio = _mapping(_field(data, "audio", Mapping, what), f"{what}.audio")
        return fragment_id, stream_id, seq, audio

    @classmethod
    def parse(
        cls,
        payload: object,
        *,
        expected: AudioFormat,
        max_payload_bytes: int,
        max_fragment_seconds: float,
        what: str = "fragment:data",
    ) -> FragmentData:
        """Check and decode a ``fragment:data`` (or ``audio:partial``: audio of the utterance
        in progress, with the same fields) of a stream that declared ``expected``.

        Raises:
            ProtocolError: Anything missing, mistyped, oversize, or not in the declared format.
        """
        fragment_id, stream_id, seq, audio_data = cls.header(payload, what)
        data = _mapping(payload, what)
        timestamp = _optional(data, "timestamp", int, what)
        metadata = _optional(data, "metadata", Mapping, what)
        encoded = _field(audio_data, "data_base64", str, f"{what}.audio")
        # Size first: never decode more than the limit allows.
        if len(encoded) > max_payload_bytes:
            raise ProtocolError(
                ProtocolErrorCode.PAYLOAD_TOO_LARGE,
                f"{what}: audio.data_base64 is {len(encoded)} characters; the limit is {max_payload_bytes}",
            )
        audio = AudioFormat.parse(audio_data, f"{what}.audio")
        if audio != expected:
            raise ProtocolError(
                ProtocolErrorCode.INVALID_AUDIO_FORMAT,
                f"{what}: audio is {audio.sample_rate} Hz, {audio.channels} channel(s); stream"
                f" {stream_id!r} declared {expected.sample_rate} Hz, {expected.channels} channel(s)",
            )
        try:
            raw = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ProtocolError(
                ProtocolErrorCode.INVALID_AUDIO_FORMAT,
                f"{what}: audio.data_base64 is not valid base64 ({exc})",
            ) from None
        frame = 2 * audio.channels
        if not raw or len(raw) % frame:
            raise ProtocolError(
                ProtocolErrorCode.INVALID_AUDIO_FORMAT,
                f"{what}: audio holds {len(raw)} bytes, not a whole (non-zero) number of"
                f" {audio.channels}-channel 16-bit frames",
            )
        frames = len(raw) // frame
        seconds = frames / audio.sample_rate
        if seconds > max_fragment_seconds:
            raise ProtocolError(
                ProtocolErrorCode.PAYLOAD_TOO_LARGE,
                f"{what}: audio lasts {seconds:.1f} s; the limit is {max_fragment_seconds:g} s",
            )
        declared_ms = _optional(audio_data, "duration_ms", (int, float), f"{what}.audio")
        if declared_ms is not None and abs(declared_ms - 1000 * seconds) > 1 + 1000 / audio.sample_rate:
            raise ProtocolError(
                ProtocolErrorCode.INVALID_AUDIO_FORMAT,
                f"{what}: audio.duration_ms says {declared_ms} ms, the data holds {1000 * seconds:.1f} ms",
            )
        try:
            fragment = Fragment.from_pcm16(
                seq,
                raw,
                audio.sample_rate,
                channels=audio.channels,
                fragment_id=fragment_id,
                stream_id=stream_id,
                timestamp_ms=timestamp,
                metadata=dict(metadata or {}),
            )
        except InvalidFragmentError as exc:
            raise ProtocolError(ProtocolErrorCode.INVALID_AUDIO_FORMAT, f"{what}: {exc}") from None
        return cls(fragment, audio)


def stage_timings(timings: Mapping[str, float]) -> dict[str, int]:
    """The library's step timings under the protocol's names (``asr_ms``, ``tts_ms``…)."""
    return {f"{_STAGE_NAMES.get(k, k)}_ms": round(v) for k, v in timings.items()}


def audio_payload(
    samples: np.ndarray[Any, Any], sample_rate: int, channels: int, data: str
) -> dict[str, Any]:
    return {
        "format": PCM_FORMAT,
        "sample_rate_hz": sample_rate,
        "channels": channels,
        "duration_ms": round(1000 * samples.size / sample_rate),
        "data_base64": data,
    }


def processed_payload(result: DubResult, *, channels: int, processing_time_ms: float) -> dict[str, Any]:
    """The ``fragment:processed`` payload of one result (``mixed_audio`` only when asked for)."""
    audio = result.audio
    extra: dict[str, Any] = {}
    if result.mixed is not None:
        mixed = result.mixed
        extra["mixed_audio"] = {
            **audio_payload(
                mixed.samples, mixed.sample_rate, channels, mixed.audio.to_base64(channels=channels)
            ),
            "kind": mixed.kind,
        }
    return {
        "fragment_id": result.fragment_id,
        "stream_id": result.stream_id,
        "sequence_number": result.sequence_number,
        "status": result.status.value,
        "dubbed_audio": {
            **audio_payload(
                audio.samples, audio.sample_rate, channels, audio.audio.to_base64(channels=channels)
            ),
            "kind": audio.kind,
        },
        "transcript": None if result.transcript is None else result.transcript.text,
        "source_language": None if result.transcript is None else result.transcript.language,
        "translated_text": None if result.translation is None else result.translation.text,
        "processing_time_ms": round(processing_time_ms),
        "stage_timings": stage_timings(result.timings),
        "duration_variance": result.duration_variance,
        "warnings": list(result.warnings),
        "error": None if result.error is None else result.error.to_dict(),
        "timestamp": result.timestamp_ms,
        "metadata": dict(result.metadata),
        "speaker": result.speaker,
        "voice": result.voice,
        **extra,
    }


def caption_payload(caption: Caption) -> dict[str, Any]:
    """The ``caption`` event's payload: an interim, final or translation caption."""
    return {
        "stream_id": caption.stream_id,
        "type": caption.kind,
        "sequence_number": caption.sequence_number,
        "fragment_id": caption.fragment_id,
        "text": caption.text,
        "stable_chars": caption.stable_chars,
        "language": caption.language,
        "target_language": caption.target_language,
        "source_text": caption.source_text,
        "words": [{"word": w.word, "start": w.start, "end": w.end} for w in caption.words],
        "audio_ms": round(1000 * caption.audio_seconds),
        "latency_ms": round(caption.latency_ms),
        "dropped": caption.dropped,
        "note": caption.note,
    }


def error_payload(
    error: ProtocolError | StageError,
    *,
    stream_id: str | None = None,
    fragment_id: str | None = None,
    sequence_number: int | None = None,
    event: str | None = None,
) -> dict[str, Any]:
    """The ``error`` event's payload."""
    body = error.to_dict()
    return {
        **body,
        "event": event,
        "stream_id": stream_id,
        "fragment_id": fragment_id,
        "sequence_number": sequence_number,
    }
