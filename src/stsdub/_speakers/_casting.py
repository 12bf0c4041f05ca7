"""A voice per speaker: the pitch of a speaker's source speech, and the voice cast from it."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ConfigurationError

if TYPE_CHECKING:
    from .._core._audio import FloatArray

__all__ = ["PITCH_SPLIT_HZ", "LiveCast", "VoiceCast", "median_f0", "speaker_voices", "voice_map"]

#: Median F0 below which a speaker gets a lower (male-sounding) voice; adult male speech
#: centres near 120 Hz and female near 210 Hz, so the split sits between the two.
PITCH_SPLIT_HZ = 165.0
_F0_RANGE = (60.0, 400.0)
_FRAME = 0.04
_HOP = 0.01
#: Normalised autocorrelation a frame's best lag needs to count as voiced.
_VOICED = 0.5


def median_f0(samples: FloatArray, rate: int) -> float | None:
    """The median fundamental frequency (Hz) of the voiced frames of ``samples``; ``None`` if none.

    Autocorrelation per 40 ms frame over 60-400 Hz, on frames loud enough to be speech: a
    coarse estimate, which is all telling a low voice from a high one needs, and it costs a
    few milliseconds a second of audio without any model.
    """
    x = np.asarray(samples, dtype=np.float64)
    frame, hop = round(_FRAME * rate), round(_HOP * rate)
    if x.size < frame or frame < 8:
        return None
    low_lag, high_lag = max(1, math.floor(rate / _F0_RANGE[1])), math.ceil(rate / _F0_RANGE[0])
    high_lag = min(high_lag, frame - 1)
    if high_lag <= low_lag:
        return None
    starts = np.arange(0, x.size - frame + 1, hop)
    frames = np.stack([x[s : s + frame] for s in starts])
    frames = frames - frames.mean(axis=1, keepdims=True)
    energy = np.sqrt(np.mean(frames**2, axis=1))
    loud = energy > max(1e-4, 0.1 * float(np.max(energy)))
    if not np.any(loud):
        return None
    frames = frames[loud] * np.hanning(frame)
    n = 1 << (2 * frame - 1).bit_length()
    spectrum = np.fft.rfft(frames, n=n, axis=1)
    ac = np.fft.irfft(np.abs(spectrum) ** 2, n=n, axis=1)[:, :frame]
    ac = ac / np.maximum(ac[:, :1], 1e-12)
    window = ac[:, low_lag : high_lag + 1]
    best = np.argmax(window, axis=1)
    peaks = window[np.arange(window.shape[0]), best]
    voiced = peaks > _VOICED
    if not np.any(voiced):
        return None
    return float(np.median(rate / (best[voiced] + low_lag)))


def speaker_voices(
    stage: object, language: str, voice: str | None
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The synthesizer's ``(lower, higher)`` voices for distinct speakers; empty if it offers none."""
    offer = getattr(stage, "speaker_voices", None)
    if not callable(offer):
        return (), ()
    lower, higher = offer(language, voice)
    return tuple(str(v) for v in lower), tuple(str(v) for v in higher)


class VoiceCast:
    """Which voice each speaker of one file or stream speaks with; stable once given.

    A speaker in ``fixed`` (the user's ``voices`` map) speaks with that voice. Any other
    speaker gets the next voice not yet given from the pool that matches their pitch (below
    :data:`PITCH_SPLIT_HZ`: ``lower``, else ``higher``; unknown pitch: the pool with more voices
    left), then from the other pool, and only when every voice is taken, one already given
    (round robin). With empty pools a speaker keeps ``default`` (the stream's voice).

    Args:
        lower: Voices for low-pitched (male) speakers.
        higher: Voices for high-pitched (female) speakers.
        fixed: ``{speaker: voice}`` chosen by the user.
        default: The voice when the pools are empty.
    """

    def __init__(
        self,
        lower: Sequence[str],
        higher: Sequence[str],
        fixed: Mapping[str, str] | None = None,
        default: str | None = None,
    ) -> None:
        self.lower = tuple(dict.fromkeys(lower))
        self.higher = tuple(dict.fromkeys(higher))
        self.default = default
        self._given: dict[str, str | None] = dict(fixed or {})
        self._used = [v for v in self._given.values() if v is not None]

    @property
    def voices(self) -> dict[str, str | None]:
        """``{speaker: voice}`` as given so far."""
        return dict(self._given)

    def voice_for(self, speaker: str, f0: float | None = None) -> str | None:
        """The voice of ``speaker`` (given once, then the same for the whole file or stream)."""
        if speaker in self._given:
            return self._given[speaker]
        pools = [self.lower, self.higher]
        if f0 is None:
            left = [len(set(p) - set(self._used)) for p in pools]
            pools.sort(key=lambda p: -left[0] if p is self.lower else -left[1])
        elif f0 >= PITCH_SPLIT_HZ:
            pools.reverse()
        voice = next((v for pool in pools for v in pool if v not in self._used), None)
        if voice is None:
            every = [v for pool in pools for v in pool]
            voice = every[len(self._used) % len(every)] if every else self.default
        self._given[speaker] = voice
        if voice is not None:
            self._used.append(voice)
        return voice


def voice_map(value: object) -> dict[str, str] | None:
    """``voices=`` checked: speaker labels to voice names, or ``None``."""
    if value is None:
        return None
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and k and isinstance(v, str) and v for k, v in value.items()
    ):
        raise ConfigurationError(f"voices must map speaker labels to voice names (str → str), got {value!r}")
    return dict(value)


class LiveCast:
    """The voices of one live stream's speakers, cast on the first labelled fragment.

    The voice pools come from the synthesizer once (a failure gives every speaker the
    stream's voice, with a warning); each new speaker is cast by the median pitch of their
    first fragment.
    """

    def __init__(
        self, synthesizer: object, language: str, voice: str | None, fixed: Mapping[str, str] | None
    ):
        self._synthesizer = synthesizer
        self._language = language
        self._voice = voice
        self._fixed = fixed
        self._cast: VoiceCast | None = None

    def voice_for(
        self, speaker: str | None, audio: np.ndarray, sample_rate: int, warnings: list[str]
    ) -> str | None:
        """The speaker's voice (chosen, or cast by pitch once per speaker), else the stream's."""
        if speaker is None:
            return self._voice
        if self._cast is None:
            try:
                lower, higher = speaker_voices(self._synthesizer, self._language, self._voice)
            except Exception as exc:
                warnings.append(f"speaker voices: {type(exc).__name__}: {exc}; one voice for all")
                lower, higher = (), ()
            self._cast = VoiceCast(lower, higher, self._fixed, self._voice)
        f0 = None if speaker in self._cast.voices else median_f0(audio, sample_rate)
        return self._cast.voice_for(speaker, f0)
