"""Audio helpers: validation, PCM16 conversion, resampling, WAV encoding.

Audio inside stsdub is always a 1-D float32 NumPy array in [-1, 1] plus an explicit sample
rate. These helpers are the only places where other representations are converted.
"""

from __future__ import annotations

import base64
import binascii
import io
from typing import TYPE_CHECKING

import numpy as np

from ..errors import InvalidAudioError

if TYPE_CHECKING:
    from numpy.typing import NDArray

    FloatArray = NDArray[np.float32]

#: Highest sample rate accepted anywhere (a typo guard, not a technical limit of any stage).
MAX_SAMPLE_RATE = 384_000
#: Most interleaved channels in PCM16 data (FFmpeg's limit; a typo guard like the rate's:
#: duplicating audio to a billion channels would only exhaust memory).
MAX_CHANNELS = 64
# Float processing elsewhere may overshoot full scale by a hair; accept that, refuse the rest.
_FULL_SCALE_TOLERANCE = 1e-4


def check_sample_rate(sample_rate: object, *, what: str = "audio") -> int:
    """Return ``sample_rate`` as an int, or raise InvalidAudioError."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)):
        raise InvalidAudioError(
            f"{what}: sample_rate must be an int (samples per second), got {sample_rate!r}"
        )
    rate = int(sample_rate)
    if not 0 < rate <= MAX_SAMPLE_RATE:
        raise InvalidAudioError(f"{what}: sample_rate must be between 1 and {MAX_SAMPLE_RATE} Hz, got {rate}")
    return rate


def check_samples(samples: object, *, what: str = "audio", allow_empty: bool = False) -> None:
    """Raise InvalidAudioError unless ``samples`` is finite 1-D float32 audio in [-1, 1]."""
    if not isinstance(samples, np.ndarray):
        raise InvalidAudioError(
            f"{what}: samples must be a numpy.ndarray of float32, got {type(samples).__name__}"
            " (use stsdub.pcm16_to_float() for PCM16 bytes)"
        )
    if samples.dtype != np.float32:
        raise InvalidAudioError(
            f"{what}: samples must be float32, got {samples.dtype}"
            " (convert with samples.astype(numpy.float32); PCM16 with stsdub.pcm16_to_float())"
        )
    if samples.ndim != 1:
        raise InvalidAudioError(
            f"{what}: samples must be 1-D mono, got shape {samples.shape}"
            " (mix down with samples.mean(axis=1) for frames x channels)"
        )
    if samples.size == 0 and not allow_empty:
        raise InvalidAudioError(f"{what}: samples are empty")
    if samples.size:
        # One pass for both checks: max(|x|) is NaN if any sample is NaN, inf if any is inf.
        # np.asarray: the plain values, so that a masked array cannot hide NaN from the check.
        peak = float(np.max(np.abs(np.asarray(samples))))
        if not np.isfinite(peak):
            raise InvalidAudioError(f"{what}: samples contain NaN or infinity")
        if peak > 1.0 + _FULL_SCALE_TOLERANCE:
            raise InvalidAudioError(
                f"{what}: samples must lie in [-1, 1], peak is {peak:.4g}"
                " (scale or numpy.clip the audio first)"
            )


def _check_channels(channels: object) -> int:
    if isinstance(channels, bool) or not isinstance(channels, (int, np.integer)):
        raise InvalidAudioError(f"channels must be a positive int, got {channels!r}")
    if not 1 <= channels <= MAX_CHANNELS:
        raise InvalidAudioError(f"channels must be between 1 and {MAX_CHANNELS}, got {channels}")
    return int(channels)


def pcm16_to_float(data: bytes | bytearray | memoryview, *, channels: int = 1) -> FloatArray:
    """Decode little-endian signed 16-bit PCM to float32 mono in [-1, 1).

    Args:
        data: Raw PCM16 bytes, interleaved when ``channels > 1``.
        channels: Number of interleaved channels (1 to :data:`MAX_CHANNELS`); they are
            averaged to mono.

    Raises:
        InvalidAudioError: ``data`` is not bytes, is empty, or is not a whole number of frames,
            or ``channels`` is out of range.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidAudioError(f"PCM16 data must be bytes, got {type(data).__name__}")
    channels = _check_channels(channels)
    frame_bytes = 2 * channels
    if isinstance(data, memoryview):
        # A memoryview counts items, not bytes (an int32 view of 12 bytes has len() 3), and
        # np.frombuffer refuses strided ones with BufferError; its bytes in order have neither.
        try:
            data = data.tobytes()
        except ValueError as exc:  # a released view
            raise InvalidAudioError(f"PCM16 data cannot be read: {exc}") from exc
    if len(data) == 0:
        raise InvalidAudioError("PCM16 data is empty")
    if len(data) % frame_bytes:
        raise InvalidAudioError(
            f"PCM16 data has {len(data)} bytes, not a whole number of {channels}-channel"
            f" 16-bit frames ({frame_bytes} bytes each)"
        )
    ints = np.frombuffer(data, dtype="<i2")
    samples: FloatArray = ints.astype(np.float32) / np.float32(32768.0)
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1, dtype=np.float32)
    return samples


def float_to_pcm16(samples: FloatArray, *, channels: int = 1) -> bytes:
    """Encode float audio in [-1, 1] as little-endian PCM16, duplicated to ``channels``.

    Raises:
        InvalidAudioError: ``samples`` is not finite float32 mono audio in [-1, 1], or
            ``channels`` is not an int from 1 to :data:`MAX_CHANNELS`.
    """
    check_samples(samples, what="float_to_pcm16", allow_empty=True)
    channels = _check_channels(channels)
    ints = np.clip(np.round(samples * 32767.0), -32768, 32767).astype("<i2")
    if channels > 1:
        ints = np.repeat(ints, channels)
    return ints.tobytes()


def base64_to_float(data: str | bytes, *, channels: int = 1) -> FloatArray:
    """Decode base64-encoded PCM16 (strict alphabet and padding) to float32 mono.

    Raises:
        InvalidAudioError: ``data`` is not base64 text, or not whole PCM16 frames.
    """
    # b64decode raises TypeError for anything else, which is the caller's data, not a bug.
    if not isinstance(data, (str, bytes, bytearray, memoryview)):
        raise InvalidAudioError(f"base64 audio must be str or bytes, got {type(data).__name__}")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidAudioError(f"audio is not valid base64: {exc}") from exc
    return pcm16_to_float(raw, channels=channels)


def float_to_base64(samples: FloatArray, *, channels: int = 1) -> str:
    """Encode float audio as base64 PCM16 text."""
    return base64.b64encode(float_to_pcm16(samples, channels=channels)).decode("ascii")


def resample(samples: FloatArray, from_rate: int, to_rate: int) -> FloatArray:
    """Resample mono float32 audio with soxr (high quality); returns the input when equal."""
    if from_rate == to_rate or samples.size == 0:
        return samples
    import soxr

    out = soxr.resample(samples, from_rate, to_rate, quality="HQ")
    clipped: FloatArray = np.clip(out, -1.0, 1.0).astype(np.float32, copy=False)
    return clipped


def fit_length(samples: FloatArray, length: int) -> FloatArray:
    """Pad with trailing silence or cut to exactly ``length`` samples."""
    if samples.size == length:
        return samples
    if samples.size > length:
        return samples[:length]
    out = np.zeros(length, dtype=np.float32)
    out[: samples.size] = samples
    return out


def wav_bytes(samples: FloatArray, sample_rate: int) -> bytes:
    """Encode as a 16-bit PCM WAV file in memory."""
    import soundfile

    buf = io.BytesIO()
    soundfile.write(buf, samples, sample_rate, format="WAV", subtype="PCM_16")
    return buf.getvalue()
