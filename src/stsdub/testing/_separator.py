"""A fake separator: splits audio by frequency band, without a model."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import anyio
import numpy as np

from .._model import AudioBuffer
from .._separation import Separation, SeparationRequest
from ..errors import ErrorCode, StageError

__all__ = ["FakeSeparator"]


class FakeSeparator:
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
    concurrency = 1

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
        if mode not in ("sync", "async"):
            raise ValueError(f"mode must be 'sync' or 'async', got {mode!r}")
        low, high = band
        if not 0 <= low < high:
            raise ValueError(f"band must be (low, high) with 0 <= low < high, got {band!r}")
        self.band = (float(low), float(high))
        self.latency = latency
        self.fail = dict(fail or {})
        self.mode = mode
        self.device = device
        self.record = record
        self.requests: list[SeparationRequest] = []
        self.calls = 0
        self.closed = False
        self._lock = threading.Lock()
        self.separate: Callable[[SeparationRequest], Any] = (
            self._separate_async if mode == "async" else self._separate_sync
        )

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

    def _enter(self, request: SeparationRequest) -> ErrorCode | None:
        with self._lock:
            self.calls += 1
            if self.record:
                self.requests.append(request)
        code = self.fail.get(request.sequence_number)
        return None if code is None else ErrorCode(code)

    def _outcome(self, request: SeparationRequest, code: ErrorCode | None) -> Separation:
        if code is not None:
            raise StageError(code, f"fake separator failure for {request.sequence_number}", "separation")
        return self.split(request.audio)

    def _separate_sync(self, request: SeparationRequest) -> Separation:
        code = self._enter(request)
        time.sleep(self.latency)
        return self._outcome(request, code)

    async def _separate_async(self, request: SeparationRequest) -> Separation:
        code = self._enter(request)
        await anyio.sleep(self.latency)
        return self._outcome(request, code)

    def close(self) -> None:
        self.closed = True
