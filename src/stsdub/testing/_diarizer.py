"""A fake diarizer: tells speakers apart by the spectrum of their sound, without a model."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import numpy as np

from .._core._diarization import Diarization, DiarizationRequest
from .._core._values import AudioBuffer
from .._speakers._tracking import SpeakerTracker, merge_turns
from ..errors import ErrorCode
from ._whole import WholeRecordingFake

__all__ = ["FakeDiarizer"]

#: Edges (Hz) of the log-spaced bands whose energies are the fake's "embedding".
_BANDS = np.geomspace(60.0, 6000.0, 17)


class FakeDiarizer(WholeRecordingFake[DiarizationRequest, Diarization]):
    """Speakers told apart by where their energy lies in the spectrum.

    ``embed(audio)`` is the share of the audio's energy in each of 16 log-spaced bands from 60
    Hz to 6 kHz (normalised to length 1; empty for silence), so two tones, or two voices of
    clearly different pitch and timbre, embed far apart. ``diarize`` embeds windows of
    ``window`` seconds wherever the audio is not silent, gives each the label of the most
    similar speaker seen so far (cosine similarity at least ``threshold``, as a live stream
    does) or a new one, and merges consecutive windows of one speaker into turns. With
    ``turns=`` it returns those turns instead, whatever the audio.

    Args:
        turns: A fixed answer: ``[(start, end, label), ...]``.
        window: Seconds per window.
        threshold: Cosine similarity for "the same speaker" (also its ``match_threshold``).
        latency: Seconds each call takes.
        fail: ``{sequence_number: ErrorCode}``: those requests raise ``StageError``.
        mode: ``"sync"`` (the caller runs it in a thread) or ``"async"``.
        device: Exposed as ``device``, as a factory-built stage has it.
        record: Keep each request in ``requests``.

    Attributes:
        requests: Every request received (empty with ``record=False``).
        calls: How many requests were received.
        embedded: How many times ``embed`` was called.
        closed: Whether ``close()`` was called.
    """

    kind = "diarizer"
    stage = "diarization"
    method = "diarize"

    def __init__(
        self,
        *,
        turns: Sequence[tuple[float, float, str]] | None = None,
        window: float = 0.5,
        threshold: float = 0.8,
        latency: float = 0.0,
        fail: Mapping[int, ErrorCode | str] | None = None,
        mode: str = "sync",
        device: str = "cpu",
        record: bool = True,
    ) -> None:
        if not window > 0:
            raise ValueError(f"window must be > 0 seconds, got {window!r}")
        self.turns = None if turns is None else Diarization(tuple(turns)).turns
        self.window = float(window)
        self.match_threshold = float(threshold)
        self.embedded = 0
        super().__init__(latency=latency, fail=fail, mode=mode, device=device, record=record)

    def embed(self, audio: AudioBuffer) -> np.ndarray:
        """Band energies of ``audio``, normalised; an empty array when it is silent."""
        with self._lock:
            self.embedded += 1
        x = audio.samples.astype(np.float64)
        if x.size == 0 or float(np.sqrt(np.mean(x**2))) < 1e-3:
            return np.zeros(0)
        power = np.abs(np.fft.rfft(x)) ** 2
        freqs = np.fft.rfftfreq(x.size, 1.0 / audio.sample_rate)
        bands = np.array([power[(freqs >= a) & (freqs < b)].sum() for a, b in itertools.pairwise(_BANDS)])
        norm = float(np.linalg.norm(bands))
        return bands / norm if norm > 0 else np.zeros(0)

    def answer(self, request: DiarizationRequest) -> Diarization:
        return self.analyse(request)

    def analyse(self, request: DiarizationRequest) -> Diarization:
        """The diarization itself, without latency, failures or records."""
        if self.turns is not None:
            return Diarization(self.turns)
        audio = request.audio
        size = max(1, round(self.window * audio.sample_rate))
        tracker = SpeakerTracker(self.match_threshold, max_speakers=request.num_speakers)
        times: list[tuple[float, float]] = []
        labels: list[str] = []
        for start in range(0, audio.samples.size, size):
            piece = AudioBuffer(audio.samples[start : start + size], audio.sample_rate)
            label = tracker.identify(self.embed(piece))
            if label is not None:
                times.append((start / audio.sample_rate, (start + piece.samples.size) / audio.sample_rate))
                labels.append(label)
        return Diarization(merge_turns(times, labels, max_gap=self.window))
