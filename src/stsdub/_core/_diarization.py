"""Values of the diarizer stage: who speaks when in a recording."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence

import attrs

from ..errors import ConfigurationError
from ._values import AudioBuffer, _StageRequest

__all__ = ["Diarization", "DiarizationRequest", "SpeakerTurn"]

#: A speaker turn: (start, end) seconds from the start of the recording and the speaker's label.
SpeakerTurn = tuple[float, float, str]


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


def _notes(value: Iterable[str]) -> tuple[str, ...]:
    return tuple(str(note) for note in value)


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
    #: What the diarizer wants its user to know: no speech heard, a count capped, ...
    notes: tuple[str, ...] = attrs.field(default=(), converter=_notes, kw_only=True)

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

    def floor(self) -> tuple[SpeakerTurn, ...]:
        """The turns with overlaps resolved, one speaker at a time: a turn inside another's
        (a word said over someone) is left out, and where one turn runs into the next the
        change is placed in the middle of their overlap."""
        flat: list[SpeakerTurn] = []
        for start, end, label in self.turns:
            if flat and end <= flat[-1][1]:
                continue
            if flat and start < flat[-1][1]:
                middle = (start + flat[-1][1]) / 2
                flat[-1] = (flat[-1][0], middle, flat[-1][2])
                start = middle
            if flat and flat[-1][2] == label and start <= flat[-1][1]:
                flat[-1] = (flat[-1][0], end, label)
            else:
                flat.append((start, end, label))
        return tuple(flat)

    def changes(self, start: float, end: float) -> list[float]:
        """Times inside ``(start, end)`` where the speaker changes from one turn to the next
        (of :meth:`floor`: overlapped speech never makes a change of its own)."""
        found: list[float] = []
        turns = self.floor()
        for previous, turn in itertools.pairwise(turns):
            if previous[2] == turn[2]:
                continue
            # Between two turns with a pause, the change is taken in the middle of the pause.
            at = turn[0] if turn[0] <= previous[1] else (previous[1] + turn[0]) / 2
            if start < at < end:
                found.append(at)
        return found
