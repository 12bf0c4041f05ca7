"""Speaker labels from embeddings: cluster numbers as labels, turns merged, the live tracker."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

import anyio
import numpy as np

from .._core._diarization import SpeakerTurn
from ..errors import ConfigurationError

__all__ = ["DEFAULT_MATCH_THRESHOLD", "SpeakerTracker", "merge_turns", "relabel", "speaker_label"]

#: Cosine similarity over which a live fragment is taken for a known speaker (see
#: :class:`SpeakerTracker`); a diarizer may offer its own as ``match_threshold``.
DEFAULT_MATCH_THRESHOLD = 0.75


def speaker_label(n: int) -> str:
    """The label of the ``n``-th speaker (from 1) in order of first appearance: ``S1``, ``S2``…"""
    return f"S{n}"


def relabel(labels: Sequence[int]) -> list[str]:
    """Cluster numbers → ``S1``, ``S2``… in order of first appearance."""
    names: dict[int, str] = {}
    for label in labels:
        if label not in names:
            names[label] = speaker_label(len(names) + 1)
    return [names[label] for label in labels]


def merge_turns(
    times: Sequence[tuple[float, float]], labels: Sequence[str], *, max_gap: float = 0.5
) -> tuple[SpeakerTurn, ...]:
    """Consecutive stretches of one speaker, separated by less than ``max_gap`` s, as one turn."""
    turns: list[list[float | str]] = []
    for (start, end), label in sorted(zip(times, labels, strict=True), key=lambda x: x[0]):
        if turns and turns[-1][2] == label and start - float(turns[-1][1]) <= max_gap:
            turns[-1][1] = max(float(turns[-1][1]), end)
        else:
            turns.append([start, end, label])
    return tuple((float(a), float(b), str(c)) for a, b, c in turns)


def _unit(vector: np.ndarray) -> np.ndarray | None:
    v = np.asarray(vector, dtype=np.float64).ravel()
    norm = float(np.linalg.norm(v))
    if v.size == 0 or not math.isfinite(norm) or norm == 0.0:
        return None
    return v / norm


class SpeakerTracker:
    """The speakers of one live stream: a centroid per speaker, labels stable for the stream.

    Each embedding is compared with every known speaker's centroid (the normalised mean of the
    embeddings taken for them); the most similar speaker wins when its cosine similarity is at
    least ``threshold`` and the embedding joins its centroid, else a new speaker is started.

    Args:
        threshold: Cosine similarity needed to be taken for a known speaker (-1 to 1).
        max_speakers: Once this many are known, an embedding goes to the most similar one.
    """

    def __init__(
        self, threshold: float = DEFAULT_MATCH_THRESHOLD, *, max_speakers: int | None = None
    ) -> None:
        if not -1.0 <= threshold <= 1.0:
            raise ConfigurationError(f"a speaker match threshold lies in [-1, 1], got {threshold!r}")
        self.threshold = float(threshold)
        self.max_speakers = max_speakers
        self._sums: list[np.ndarray] = []
        self._labels: list[str] = []

    @property
    def speakers(self) -> tuple[str, ...]:
        """The labels given so far, in order."""
        return tuple(self._labels)

    async def identify_audio(
        self, embed: Callable[[Any], Any], audio: Any, deadline: float, limiter: anyio.CapacityLimiter | None
    ) -> str | None:
        """The label of the speaker of ``audio``, embedded with the diarizer's ``embed`` (sync
        in a worker thread under ``limiter``, or async) before ``deadline``; ``None`` when it
        gives nothing (no speech) or time runs out. ``embed``'s exceptions propagate."""
        embedding: Any = None
        with anyio.CancelScope(deadline=deadline):
            if inspect.iscoroutinefunction(embed):
                embedding = await embed(audio)
            else:
                embedding = await anyio.to_thread.run_sync(
                    embed, audio, limiter=limiter, abandon_on_cancel=True
                )
        return None if embedding is None else self.identify(np.asarray(embedding))

    def identify(self, embedding: np.ndarray) -> str | None:
        """The label for ``embedding``; ``None`` when it is empty (no speech was heard)."""
        unit = _unit(embedding)
        if unit is None:
            return None
        if self._sums and self._sums[0].size != unit.size:
            raise ValueError(f"an embedding of size {unit.size}; this stream's have {self._sums[0].size}")
        best, similarity = -1, -math.inf
        for n, total in enumerate(self._sums):
            centroid = _unit(total)
            score = -1.0 if centroid is None else float(centroid @ unit)
            if score > similarity:
                best, similarity = n, score
        full = self.max_speakers is not None and len(self._labels) >= self.max_speakers
        if best >= 0 and (similarity >= self.threshold or full):
            self._sums[best] = self._sums[best] + unit
            return self._labels[best]
        self._sums.append(unit)
        self._labels.append(speaker_label(len(self._labels) + 1))
        return self._labels[-1]
