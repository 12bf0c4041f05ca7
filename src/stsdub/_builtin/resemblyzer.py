"""The ``resemblyzer`` diarizer: who speaks when, from Resemblyzer's speaker embeddings.

Resemblyzer (``pip install 'stsdub[diarize]'``) carries its speaker encoder in its wheel, so the
stage works offline. A recording is split into speech regions by WebRTC's voice activity
detector (which Resemblyzer brings), each region into windows of ``window`` seconds every
``step`` seconds (a region shorter than a window gets one window centred on it), and every
window is embedded in one batch. The windows are clustered agglomeratively with cosine
distance: into ``num_speakers`` clusters when it is given, else until clusters are further
apart than ``threshold``. Each 10 ms of speech takes the label of the nearest window of its
region; consecutive stretches of one speaker become turns, labelled ``S1``, ``S2``… in order
of first appearance.

For live streams, :meth:`ResemblyzerDiarizer.embed` gives one fragment's embedding, which the
stream matches against its speakers (cosine similarity at least ``match_threshold``).
"""

from __future__ import annotations

import importlib
import threading
import warnings
from typing import Any

import numpy as np

from .._core import _audio
from .._core._diarization import Diarization, DiarizationRequest
from .._core._values import AudioBuffer
from .._speakers._tracking import merge_turns, relabel
from ..errors import ConfigurationError, ErrorCode, StageError, StageLoadError

__all__ = ["ResemblyzerDiarizer"]

_INSTALL_HINT = "pip install 'stsdub[diarize]'"
#: Resemblyzer's rate, and its mel frames' hop (10 ms).
_RATE = 16_000
_HOP = 160
#: WebRTC VAD frames are 30 ms.
_VAD_FRAME = 480
#: Windows embedded per forward pass (bounds memory on long recordings).
_BATCH = 64


def _resemblyzer() -> tuple[Any, Any, Any, Any]:
    try:
        with warnings.catch_warnings():
            # webrtcvad imports pkg_resources, which warns on current setuptools.
            warnings.filterwarnings("ignore", message="pkg_resources is deprecated", category=UserWarning)
            resemblyzer = importlib.import_module("resemblyzer")
            audio = importlib.import_module("resemblyzer.audio")
            webrtcvad = importlib.import_module("webrtcvad")
        import torch
    except ImportError as exc:
        if "pkg_resources" in str(exc):
            raise StageLoadError(
                "the resemblyzer diarizer's VAD (webrtcvad) imports pkg_resources, which setuptools"
                " 82 and later no longer have: pip install 'setuptools<82', or use the campplus"
                " diarizer, which needs neither"
            ) from exc
        raise StageLoadError(f"the resemblyzer diarizer needs Resemblyzer ({exc}); {_INSTALL_HINT}") from exc
    return resemblyzer, audio, webrtcvad, torch


def _seconds_option(name: str, value: object, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ConfigurationError(f"resemblyzer {name} must lie in [{low:g}, {high:g}], got {value!r}")
    return float(value)


class ResemblyzerDiarizer:
    """Speaker turns of a recording, and speaker embeddings of live fragments, with Resemblyzer.

    Args:
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (given by the Dubber).
        window: Seconds per embedded window (the encoder was trained on 1.6 s).
        step: Seconds between window starts.
        threshold: Cosine distance (0-2) under which clusters merge when the number of speakers
            is estimated; lower finds more speakers.
        num_speakers: The number of speakers of every recording, when known (a request's own
            ``num_speakers`` wins).
        match_threshold: Cosine similarity (-1 to 1) at which a live fragment is taken for a
            speaker the stream already knows.
        vad_mode: WebRTC VAD aggressiveness, 0 (keeps most) to 3 (keeps least).
        min_gap: Pauses shorter than this (seconds) do not end a speech region.

    Raises:
        StageLoadError: Resemblyzer (or PyTorch) is not installed, or its encoder does not load.
        ConfigurationError: An option is out of range.
    """

    #: One call at a time: the encoder is one PyTorch module.
    concurrency = 1

    def __init__(
        self,
        *,
        device: str = "cpu",
        window: float = 1.5,
        step: float = 0.75,
        threshold: float = 0.4,
        num_speakers: int | None = None,
        match_threshold: float = 0.75,
        vad_mode: int = 2,
        min_gap: float = 0.3,
    ) -> None:
        self.window = _seconds_option("window", window, 0.5, 10.0)
        self.step = _seconds_option("step", step, 0.05, self.window)
        self.threshold = _seconds_option("threshold", threshold, 0.0, 2.0)
        self.match_threshold = _seconds_option("match_threshold", match_threshold, -1.0, 1.0)
        self.min_gap = _seconds_option("min_gap", min_gap, 0.0, 5.0)
        if num_speakers is not None and (
            isinstance(num_speakers, bool) or not isinstance(num_speakers, int) or num_speakers < 1
        ):
            raise ConfigurationError(f"resemblyzer num_speakers must be an int >= 1, got {num_speakers!r}")
        self.num_speakers = num_speakers
        if vad_mode not in (0, 1, 2, 3):
            raise ConfigurationError(f"resemblyzer vad_mode must be 0, 1, 2 or 3, got {vad_mode!r}")
        self.vad_mode = vad_mode
        resemblyzer, self._audio, webrtcvad, self._torch = _resemblyzer()
        try:
            self._encoder = resemblyzer.VoiceEncoder(device=device, verbose=False)
        except Exception as exc:
            raise StageLoadError(
                f"resemblyzer: the speaker encoder failed to load on {device}: {exc}"
            ) from exc
        self._vad = webrtcvad.Vad(vad_mode)
        self.device = device
        self._lock = threading.Lock()

    # -- audio --------------------------------------------------------------------------------

    @staticmethod
    def _16k(audio: AudioBuffer) -> np.ndarray:
        return _audio.resample(audio.samples, audio.sample_rate, _RATE).astype(np.float32)

    def _speech_frames(self, wav: np.ndarray) -> np.ndarray:
        """One bool per 30 ms frame: whether the VAD hears speech in it."""
        count = wav.size // _VAD_FRAME
        pcm = (np.clip(wav[: count * _VAD_FRAME], -1.0, 1.0) * 32767).astype("<i2")
        return np.array(
            [
                self._vad.is_speech(pcm[i * _VAD_FRAME : (i + 1) * _VAD_FRAME].tobytes(), _RATE)
                for i in range(count)
            ],
            dtype=bool,
        )

    def _regions(self, wav: np.ndarray) -> list[tuple[int, int]]:
        """Speech regions ``[start, end)`` in samples: VAD runs, short pauses closed."""
        voiced = self._speech_frames(wav)
        runs: list[list[int]] = []
        for i in np.flatnonzero(voiced):
            start, end = int(i) * _VAD_FRAME, (int(i) + 1) * _VAD_FRAME
            if runs and start - runs[-1][1] <= self.min_gap * _RATE:
                runs[-1][1] = end
            else:
                runs.append([start, end])
        # A lone voiced frame or two is a click or a breath, not a turn.
        return [(a, b) for a, b in runs if b - a >= 0.2 * _RATE]

    def _windows(self, regions: list[tuple[int, int]], total: int) -> list[tuple[int, int, int]]:
        """``(region, start, end)`` in samples for every window of every region."""
        size, hop = round(self.window * _RATE), round(self.step * _RATE)
        found: list[tuple[int, int, int]] = []
        for n, (a, b) in enumerate(regions):
            if b - a <= size:
                centre = (a + b) // 2
                start = min(max(0, centre - size // 2), max(0, total - size))
                found.append((n, start, min(total, start + size)))
                continue
            starts = list(range(a, b - size + 1, hop))
            if starts[-1] + size < b:
                starts.append(b - size)
            found += [(n, s, s + size) for s in starts]
        return found

    def _embed_windows(self, wav: np.ndarray, windows: list[tuple[int, int, int]]) -> np.ndarray:
        mel = self._audio.wav_to_mel_spectrogram(wav)
        frames = round(self.window * _RATE) // _HOP
        # The last window may reach past the last full mel frame: pad with silence's frames.
        needed = max(s for _, s, _ in windows) // _HOP + frames
        mel = np.pad(mel, ((0, max(0, needed - mel.shape[0])), (0, 0)))
        batch = np.stack([mel[s // _HOP : s // _HOP + frames] for _, s, _ in windows]).astype(np.float32)
        out: list[np.ndarray] = []
        with self._lock, self._torch.no_grad():
            for i in range(0, len(batch), _BATCH):
                tensor = self._torch.from_numpy(batch[i : i + _BATCH]).to(self._encoder.device)
                out.append(self._encoder(tensor).cpu().numpy())
        return np.concatenate(out).astype(np.float64)

    def _cluster(self, embeddings: np.ndarray, num_speakers: int | None) -> list[int]:
        if len(embeddings) == 1 or num_speakers == 1:
            return [0] * len(embeddings)
        from sklearn.cluster import AgglomerativeClustering

        if num_speakers is not None:
            model = AgglomerativeClustering(
                n_clusters=min(num_speakers, len(embeddings)), metric="cosine", linkage="average"
            )
        else:
            model = AgglomerativeClustering(
                n_clusters=None, metric="cosine", linkage="average", distance_threshold=self.threshold
            )
        labels = [int(x) for x in model.fit_predict(embeddings)]
        if num_speakers is None:
            labels = self._absorb_stragglers(embeddings, labels)
        return labels

    @staticmethod
    def _absorb_stragglers(embeddings: np.ndarray, labels: list[int]) -> list[int]:
        """A cluster of one window among larger ones is an outlier (a laugh, a cough, a
        crossfade of two voices), not a speaker: it joins the nearest larger cluster."""
        sizes = {c: labels.count(c) for c in set(labels)}
        big = [c for c, n in sizes.items() if n > 1]
        if not big:
            return labels
        centroids = {c: embeddings[[i for i, x in enumerate(labels) if x == c]].mean(axis=0) for c in big}
        for c in centroids:
            centroids[c] /= np.linalg.norm(centroids[c]) or 1.0
        return [
            x if x in centroids else max(big, key=lambda c: float(centroids[c] @ embeddings[i]))
            for i, x in enumerate(labels)
        ]

    # -- the stage ----------------------------------------------------------------------------

    def diarize(self, request: DiarizationRequest) -> Diarization:
        """The speaker turns of ``request.audio``; none when it holds no speech."""
        try:
            wav = self._16k(request.audio)
            regions = self._regions(wav)
            if not regions:
                return Diarization()
            windows = self._windows(regions, wav.size)
            embeddings = self._embed_windows(wav, windows)
            numbers = self._cluster(embeddings, request.num_speakers or self.num_speakers)
        except (StageError, ConfigurationError):
            raise
        except Exception as exc:
            raise StageError(ErrorCode.INTERNAL_ERROR, f"resemblyzer: {type(exc).__name__}: {exc}") from exc
        labels = relabel(numbers)
        # Every 10 ms of a region takes the label of the window of that region centred nearest.
        times: list[tuple[float, float]] = []
        names: list[str] = []
        for n, (a, b) in enumerate(regions):
            centres = np.array([(s + e) / 2 for r, s, e in windows if r == n])
            own = [labels[i] for i, (r, _, _) in enumerate(windows) if r == n]
            starts = np.arange(a, b, _HOP)
            nearest = np.abs((starts + _HOP / 2)[:, None] - centres[None, :]).argmin(axis=1)
            times += [(t / _RATE, min(b, t + _HOP) / _RATE) for t in starts.tolist()]
            names += [own[i] for i in nearest.tolist()]
        turns = merge_turns(times, names, max_gap=self.min_gap)
        return Diarization(tuple((a, min(b, request.audio.duration), s) for a, b, s in turns if b > a))

    def embed(self, audio: AudioBuffer) -> np.ndarray:
        """The speaker embedding (256 values, length 1) of ``audio``'s speech; empty without speech."""
        wav = self._16k(audio)
        regions = self._regions(wav)
        speech = np.concatenate([wav[a:b] for a, b in regions]) if regions else wav[:0]
        if speech.size < 0.3 * _RATE:
            return np.zeros(0)
        with self._lock:
            embedding = self._encoder.embed_utterance(speech)
        return np.asarray(embedding, dtype=np.float64)

    def __repr__(self) -> str:
        return (
            f"<ResemblyzerDiarizer window={self.window:g}s step={self.step:g}s"
            f" threshold={self.threshold:g} on {self.device}>"
        )
