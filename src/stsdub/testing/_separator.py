"""A fake separator: splits audio by frequency band, without a model."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .._core._separation import Separation, SeparationRequest
from .._core._values import AudioBuffer
from ..errors import ErrorCode
from ._whole import WholeRecordingFake

__all__ = ["FakeSeparator"]


class FakeSeparator(WholeRecordingFake[SeparationRequest, Separation]):
    """Calls the speech band of the input the voice, and the rest the background.

    ``voice`` is the input band-passed to ``band`` (Hz, by an FFT mask, so that a tone inside
    the band is all voice and a tone outside is all background) and ``background`` is
    ``input - voice``: the two add up to the input exactly, unless one of them had to be
    clipped to [-1, 1]. Both keep the input's rate and length.

    Args:
        band: The (low, high) edges of the "speech" band in Hz.
        latency: Seconds each call takes.
        fail: ``{sequence_number: ErrorCode}``: those requests raise ``StageError``.
        mode: ``"sync"`` (the caller runs it in a thread) or ``"async"``.
        device: Exposed as ``device``, as a factory-built stage has it.
        record: Keep each request in ``requests``.

    Attributes:
        requests: Every request received (empty with ``record=False``).
        calls: How many requests were received.
        closed: Whether ``close()`` was called.
    """

    kind = "separator"
    stage = "separation"
    method = "separate"

    def __init__(
        self,
        *,
        band: tuple[float, float] = (300.0, 3400.0),
        latency: float = 0.0,
        fail: Mapping[int, ErrorCode | str] | None = None,
        mode: str = "sync",
        device: str = "cpu",
        record: bool = True,
    ) -> None:
        low, high = band
        if not 0 <= low < high:
            raise ValueError(f"band must be (low, high) with 0 <= low < high, got {band!r}")
        self.band = (float(low), float(high))
        super().__init__(latency=latency, fail=fail, mode=mode, device=device, record=record)

    def answer(self, request: SeparationRequest) -> Separation:
        return self.split(request.audio)

    def split(self, audio: AudioBuffer) -> Separation:
        """The separation itself, without latency, failures or records."""
        x = audio.samples.astype(np.float64)
        if x.size == 0:
            return Separation(audio, audio)
        spectrum = np.fft.rfft(x)
        freqs = np.fft.rfftfreq(x.size, 1.0 / audio.sample_rate)
        low, high = self.band
        spectrum[(freqs < low) | (freqs > high)] = 0.0
        voice = np.fft.irfft(spectrum, n=x.size)
        background = x - voice
        return Separation(
            AudioBuffer(np.clip(voice, -1.0, 1.0).astype(np.float32), audio.sample_rate),
            AudioBuffer(np.clip(background, -1.0, 1.0).astype(np.float32), audio.sample_rate),
        )
