"""Cutting a recording into fragments: fixed windows, or speech-aware cuts at pauses.

A plan is a list of :class:`Piece` objects that tile the whole recording with no gap and no
overlap, so the dubbed timeline is exactly as long as the input. Speech pieces are dubbed;
silent pieces (speech-aware mode only) are kept as silence, or as the original audio when it
is mixed in.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from .._core._audio import resample
from ..errors import ConfigurationError, PluginError

if TYPE_CHECKING:
    from .._core._audio import FloatArray

__all__ = ["ANALYSIS_RATE", "Piece", "Segmentation", "fixed_windows", "plan", "speech_pieces"]

#: Rate of the fragments sent to the pipeline and of voice-activity detection.
ANALYSIS_RATE = 16_000
SEGMENTATION_MODES = ("speech", "fixed")
_SHORTEST_FRAGMENT = 0.1  # seconds


@attrs.frozen
class Piece:
    """A stretch of the input, in samples at the input's own rate: ``[start, end)``."""

    start: int
    end: int
    #: True when it goes through the pipeline; False for a pause kept as it is.
    speech: bool = True

    @property
    def length(self) -> int:
        return self.end - self.start


@attrs.frozen
class Segmentation:
    """How to cut a recording into fragments.

    Args:
        mode: ``"speech"``: cut at pauses found by the Silero voice-activity detector that
            faster-whisper ships, never inside a word when a pause exists; pauses become
            pieces of their own that are not dubbed. ``"fixed"``: equal windows of
            ``window_seconds``, every one dubbed (the reference service's behaviour).
        window_seconds: Length of a fixed window.
        max_seconds: Longest speech fragment in ``"speech"`` mode. Longer speech is cut at its
            last pause of at least 100 ms before the limit (only when there is none, at the limit).
        min_pause_seconds: Shortest pause that separates two fragments in ``"speech"`` mode.
        speech_pad_seconds: Audio kept on each side of detected speech, so that soft word
            onsets and endings stay inside their fragment.
        threshold: Speech probability above which the detector hears speech.
    """

    mode: str = attrs.field(default="speech")
    window_seconds: float = 6.0
    max_seconds: float = 12.0
    min_pause_seconds: float = 0.3
    speech_pad_seconds: float = 0.2
    threshold: float = 0.5

    @mode.validator
    def _check_mode(self, _attr: object, value: str) -> None:
        if value not in SEGMENTATION_MODES:
            raise ConfigurationError(f"segmentation must be one of {SEGMENTATION_MODES}, got {value!r}")

    def __attrs_post_init__(self) -> None:
        for name in ("window_seconds", "max_seconds"):
            if not getattr(self, name) > 0:
                raise ConfigurationError(f"{name} must be positive, got {getattr(self, name)!r}")
        for name in ("min_pause_seconds", "speech_pad_seconds"):
            if not getattr(self, name) >= 0:
                raise ConfigurationError(f"{name} must not be negative, got {getattr(self, name)!r}")
        if not 0 < self.threshold < 1:
            raise ConfigurationError(f"threshold must lie between 0 and 1, got {self.threshold!r}")

    def check_available(self) -> None:
        """Raise a PluginError now when speech-aware cutting cannot work here."""
        if self.mode == "speech":
            _import_vad()


def fixed_windows(length: int, rate: int, seconds: float) -> list[Piece]:
    """Windows of ``seconds`` over ``length`` samples; the last one may be shorter."""
    step = max(1, round(seconds * rate))
    return [Piece(start, min(start + step, length)) for start in range(0, length, step)]


def _import_vad() -> tuple[Any, Any]:
    try:
        from faster_whisper.vad import VadOptions, get_speech_timestamps
    except ImportError as exc:
        raise PluginError(
            "speech-aware segmentation uses the voice-activity detector of faster-whisper,"
            " which is not installed. Install it with: pip install 'stsdub[whisper]',"
            " or cut fixed windows instead (--segment fixed / segmentation='fixed')"
        ) from exc
    return VadOptions, get_speech_timestamps


def speech_pieces(audio16k: FloatArray, length: int, rate: int, options: Segmentation) -> list[Piece]:
    """Pieces at pauses, from 16 kHz audio, in samples of the input rate (``length`` long)."""
    vad_options, get_speech_timestamps = _import_vad()
    found = get_speech_timestamps(
        audio16k,
        vad_options(
            threshold=options.threshold,
            min_speech_duration_ms=250,
            max_speech_duration_s=options.max_seconds,
            min_silence_duration_ms=round(options.min_pause_seconds * 1000),
            speech_pad_ms=round(options.speech_pad_seconds * 1000),
        ),
        sampling_rate=ANALYSIS_RATE,
    )
    pieces: list[Piece] = []
    cursor = 0
    for span in found:
        start = min(length, round(span["start"] * rate / ANALYSIS_RATE))
        end = min(length, round(span["end"] * rate / ANALYSIS_RATE))
        # Padding can make neighbours touch or overlap; the earlier one keeps the overlap.
        start = max(start, cursor)
        if end <= start:
            continue
        if start > cursor:
            pieces.append(Piece(cursor, start, speech=False))
        pieces.append(Piece(start, end))
        cursor = end
    if cursor < length:
        pieces.append(Piece(cursor, length, speech=False))
    return pieces


def plan(samples: FloatArray, rate: int, options: Segmentation) -> tuple[list[Piece], FloatArray]:
    """Cut ``samples`` (at ``rate``) into pieces; also returns the 16 kHz copy fragments use."""
    audio16k = resample(samples, rate, ANALYSIS_RATE)
    if options.mode == "fixed":
        pieces = fixed_windows(samples.size, rate, options.window_seconds)
    else:
        pieces = speech_pieces(audio16k, samples.size, rate, options)
    # A sliver (the tail of the last window) holds no word to dub; keep it as it is.
    shortest = round(_SHORTEST_FRAGMENT * rate)
    return [attrs.evolve(p, speech=False) if p.length < shortest else p for p in pieces], audio16k
