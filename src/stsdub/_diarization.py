"""Values of the diarizer stage (who speaks when) and the live speaker tracker a stream keeps."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import attrs
import numpy as np

from ._model import AudioBuffer, _StageRequest
from .errors import ConfigurationError

__all__ = ["Diarization", "DiarizationRequest", "SpeakerTracker", "SpeakerTurn"]

#: A speaker turn: (start, end) seconds from the start of the recording and the speaker's label.
SpeakerTurn = tuple[float, float, str]

#: Cosine similarity over which a live fragment is taken for a known speaker (see
#: :class:`SpeakerTracker`); a diarizer may offer its own as ``match_threshold``.
DEFAULT_MATCH_THRESHOLD = 0.75


def _check_num_speakers(_inst: object, _attr: object, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigurationError(f"num_speakers must be None or an int >= 1, got {value!r}")


@attrs.frozen(kw_only=True)
class DiarizationRequest(_StageRequest):
    """Input of :meth:`stsdub.stages.Diarizer.diarize`.

    ``stream_id`` / ``sequence_number`` / ``fragment_id`` name what the audio belongs to (a
    file dub uses the file's stream and 0); ``options`` carries per-call options for code that
    calls a diarizer directly.
    """

    #: The recording: speech of one or several speakers, with pauses.
    audio: AudioBuffer
    #: How many speakers there are, when known; ``None``: the diarizer estimates it.
    num_speakers: int | None = attrs.field(default=None, validator=_check_num_speakers)


def speaker_label(n: int) -> str:
    """The label of the ``n``-th speaker (from 1) in order of first appearance: ``S1``, ``S2``…"""
    return f"S{n}"


def _turns(value: Iterable[Sequence[object]]) -> tuple[SpeakerTurn, ...]:
    turns: list[SpeakerTurn] = []
    for turn in value:
        if len(turn) != 3:
            raise ValueError(f"a speaker turn is (start, end, label), got {turn!r}")
        start, end, label = turn
        if (
            isinstance(start, bool)
            or isinstance(end, bool)
            or not isinstance(start, (int, float))
            or not isinstance(end, (int, float))
            or not 0 <= start < end < math.inf
        ):
            raise ValueError(f"a speaker turn needs 0 <= start < end (seconds), got {turn!r}")
        if not isinstance(label, str) or not label:
            raise ValueError(f"a speaker label must be a non-empty str, got {label!r}")
        turns.append((float(start), float(end), label))
    turns.sort(key=lambda t: (t[0], t[1]))
    return tuple(turns)


@attrs.frozen
class Diarization:
    """What a diarizer returns: who speaks when, as turns sorted by start.

    Turns of one speaker never need to be contiguous; turns may leave gaps (pauses, or speech
    the diarizer could not place). Labels are free-form strings; the built-in diarizers name
    speakers ``S1``, ``S2``… in order of first appearance.

    Raises:
        ValueError: A turn is not ``(start, end, label)`` with ``0 <= start < end``.
    """

    #: ``(start, end, label)`` per turn, seconds from the start of the recording.
    turns: tuple[SpeakerTurn, ...] = attrs.field(default=(), converter=_turns)

    @property
    def speakers(self) -> tuple[str, ...]:
        """The labels, in order of first appearance."""
        return tuple(dict.fromkeys(label for _, _, label in self.turns))

    def speaker_at(self, seconds: float) -> str | None:
        """The speaker of the turn that holds ``seconds``; ``None`` in a gap."""
        for start, end, label in self.turns:
            if start <= seconds < end:
                return label
        return None

    def speaker_between(self, start: float, end: float) -> str | None:
        """The speaker who speaks longest in ``[start, end)``; ``None`` when no turn overlaps."""
        spoken: dict[str, float] = {}
        for a, b, label in self.turns:
            overlap = min(b, end) - max(a, start)
            if overlap > 0:
                spoken[label] = spoken.get(label, 0.0) + overlap
        return max(spoken, key=lambda k: spoken[k]) if spoken else None

    def changes(self, start: float, end: float) -> list[float]:
        """Times inside ``(start, end)`` where the speaker changes from one turn to the next."""
        found: list[float] = []
        for previous, turn in zip(self.turns, self.turns[1:], strict=False):
            if previous[2] == turn[2]:
                continue
            # Between two turns with a pause, the change is taken in the middle of the pause.
            at = turn[0] if turn[0] <= previous[1] else (previous[1] + turn[0]) / 2
            if start < at < end:
                found.append(at)
        return found


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
