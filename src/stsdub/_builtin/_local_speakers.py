"""Diarization from local speakers: segmentation per chunk, CAM++ per local speaker, one clustering.

The recipe of pyannote's 3.x pipelines, written here for the ``campplus`` diarizer:

1. 10-s chunks every ``step`` seconds are segmented: each model frame (16.875 ms) says which
   of (up to) three *local* speakers of that chunk speak, two at most at once;
2. every local speaker with enough speech of their own in the chunk is embedded by CAM++ from
   the frames where they speak alone (all their frames when too few are alone), at most the
   middle ``MAX_EMBED`` seconds;
3. the embeddings of local speakers with at least ``min_clean`` seconds alone are clustered
   into global speakers (the count estimated, capped); then, chunk by chunk, the local speakers
   are matched one to one with the global ones (Hungarian assignment on cosine similarity);
   a local speaker left over (its chunk held more people than were found) founds a new
   speaker when it speaks ``min_clean`` seconds alone;
4. every frame of the recording averages, over the chunks that cover it, each global speaker's
   activity and the number of speakers heard; the ``count`` most active speakers speak there.

Overlapped speech is kept: two speakers may hold the same moment.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .._speakers._clustering import centroids, cluster, group

__all__ = ["LocalSpeakers", "local_diarization"]

_RATE = 16_000
#: Which local speakers each of the 7 powerset classes means: (), (0,), (1,), (2,), (0, 1),
#: (0, 2), (1, 2).
_POWERSET = np.array(
    [[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1]], dtype=bool
)
#: A frame's speaker count is the mean count over the chunks that cover it, rounded up from
#: ``1 - COUNT_BIAS`` (0.2): on meetings far more is lost to missed speech than to false alarms
#: (on the AMI excerpts, pooled DER at collar 0.25: 21.5 % rounding at 0.5, 20.5 % at 0.2).
COUNT_BIAS = 0.8
#: Seconds of a local speaker's speech that are embedded, from the middle. Neighbouring chunks
#: hold the same speech again, so more adds time, not knowledge: on the AMI excerpts 2 s gave
#: the DER of the whole speech (19.9 %) at a third of the embedding time; 3 s gave 21.2 %,
#: about the noise of ten files.
MAX_EMBED = 2.0


class LocalSpeakers:
    """The local speakers of every chunk: ``starts`` (seconds), ``active`` ``(chunks, frames,
    3)`` bools, and the model's frame timing."""

    def __init__(self, segmentation: Any, wav: np.ndarray, step: float) -> None:
        self.frame_step = float(segmentation.frame_step)
        #: Seconds from a chunk's start to the centre of its first frame.
        self.frame_offset = float(segmentation.frame_start + segmentation.frame_duration / 2)
        self.chunk = float(segmentation.chunk_s)
        starts, probabilities = segmentation.chunks(wav, step)
        self.starts = starts / _RATE
        #: ``(chunks, frames, 3)``: whether each local speaker speaks, from the likeliest class.
        self.active = _POWERSET[probabilities.argmax(-1)]

    def samples(self, wav: np.ndarray, c: int, mask: np.ndarray) -> np.ndarray:
        """The samples of chunk ``c`` under the frames ``mask`` selects, joined."""
        t0 = self.starts[c] + self.frame_offset - self.frame_step / 2
        edges = np.flatnonzero(np.diff(np.r_[0, mask.astype(np.int8), 0]))
        pieces = [
            wav[round((t0 + a * self.frame_step) * _RATE) : round((t0 + b * self.frame_step) * _RATE)]
            for a, b in zip(edges[::2], edges[1::2], strict=True)
        ]
        return np.concatenate(pieces) if pieces else wav[:0]


def local_diarization(
    local: LocalSpeakers,
    wav: np.ndarray,
    embed: Callable[[list[np.ndarray]], np.ndarray],
    *,
    num_speakers: int | None,
    max_speakers: int,
    merge_threshold: float,
    min_clean: float = 1.0,
    min_embed: float = 0.5,
    max_embed: float = MAX_EMBED,
) -> tuple[list[tuple[float, float, int]], int]:
    """Turns ``(start, end, speaker number)`` (overlapping where two speak) and the number of
    speakers found. ``embed`` turns pieces of 16 kHz audio into unit embeddings; a local
    speaker is embedded from the middle ``max_embed`` seconds of their speech."""
    chunks = local.active.shape[0]
    duration = wav.size / _RATE
    alone = local.active & (local.active.sum(-1, keepdims=True) == 1)
    keys, pieces, clean = [], [], []
    for c in range(chunks):
        for k in range(3):
            own, solo = local.active[c, :, k], alone[c, :, k]
            mask = solo if solo.sum() * local.frame_step >= min_embed else own
            if mask.sum() * local.frame_step < min_embed:
                continue
            keys.append((c, k))
            piece = local.samples(wav, c, mask)
            cut = max(0, piece.size - round(max_embed * _RATE)) // 2
            pieces.append(piece[cut : piece.size - cut])
            clean.append(solo.sum() * local.frame_step >= min_clean)
    if not local.active.any():
        return [], 0
    if not keys or num_speakers == 1:
        # Too little speech to tell voices apart: it is all one speaker's.
        return _turns(local, np.zeros((chunks, 3), dtype=int), 1, duration), 1
    embeddings = embed(pieces)
    good = np.array(clean)
    if good.sum() < 2:
        good[:] = True
    labels = cluster(
        embeddings[good], num_speakers, max_speakers=max_speakers, merge_threshold=merge_threshold
    )
    names, middle = centroids(embeddings[good], labels)
    speakers = len(names)
    # Local speakers of one chunk are different people: matched one to one with the centroids.
    from scipy.optimize import linear_sum_assignment

    to_global = np.full((chunks, 3), -1)
    similarity = embeddings @ middle.T
    for c in range(chunks):
        rows = [i for i, key in enumerate(keys) if key[0] == c]
        if not rows:
            continue
        picked, columns = linear_sum_assignment(-similarity[rows])
        for r, g in zip(picked, columns, strict=True):
            to_global[c, keys[rows[r]][1]] = g
    if num_speakers is None:
        speakers = _new_speakers(to_global, keys, embeddings, clean, speakers, max_speakers, merge_threshold)
    return _turns(local, to_global, speakers, duration), speakers


def _new_speakers(
    to_global: np.ndarray,
    keys: list[tuple[int, int]],
    embeddings: np.ndarray,
    clean: list[bool],
    speakers: int,
    max_speakers: int,
    merge_threshold: float,
) -> int:
    """Speakers the clustering missed, from the local speakers no one was matched to.

    The segmentation tells the speakers of one chunk apart: a chunk with more local speakers
    than there are speakers holds someone else. Those leftovers are grouped by likeness; a
    group with a local speaker clean enough to be clustered (``min_clean`` alone) is a new
    speaker, the others stay unheard. Updates ``to_global`` and returns the new count.
    """
    left = [i for i, (c, k) in enumerate(keys) if to_global[c, k] < 0]
    if not left:
        return speakers
    groups = group(embeddings[left], merge_threshold)
    for g in np.unique(groups):
        members = [left[i] for i in np.flatnonzero(groups == g)]
        if speakers < max_speakers and any(clean[i] for i in members):
            for i in members:
                to_global[keys[i]] = speakers
            speakers += 1
    return speakers


def _turns(
    local: LocalSpeakers, to_global: np.ndarray, speakers: int, duration: float
) -> list[tuple[float, float, int]]:
    """Turns of the global speakers, from each chunk's local speakers mapped by ``to_global``
    (``(chunks, 3)``, -1 for a local speaker matched to no one)."""
    chunks, frames, _ = local.active.shape
    # Every frame of the recording: mean activity of each speaker, mean number of speakers.
    total = round(duration / local.frame_step) + 1
    activity = np.zeros((total, speakers))
    count = np.zeros(total)
    covered = np.zeros(total)
    for c in range(chunks):
        first = round((local.starts[c] + local.frame_offset) / local.frame_step)
        index = np.arange(first, first + frames)
        inside = index < total
        index, active = index[inside], local.active[c, inside]
        covered[index] += 1
        count[index] += active.sum(-1)
        for g in range(speakers):
            mine = to_global[c] == g
            if mine.any():
                activity[index, g] += active[:, mine].any(-1)
    covered = np.maximum(covered, 1)
    activity /= covered[:, None]
    heard = np.floor(count / covered + COUNT_BIAS).astype(int)
    order = np.argsort(-activity, axis=1)
    speaking = np.zeros_like(activity, dtype=bool)
    for n in range(1, min(2, speakers) + 1):
        chosen = order[:, n - 1]
        on = (heard >= n) & (activity[np.arange(total), chosen] > 0)
        speaking[np.flatnonzero(on), chosen[on]] = True
    turns: list[tuple[float, float, int]] = []
    half = local.frame_step / 2
    for g in range(speakers):
        edges = np.flatnonzero(np.diff(np.r_[0, speaking[:, g].astype(np.int8), 0]))
        for a, b in zip(edges[::2], edges[1::2], strict=True):
            start = max(0.0, a * local.frame_step - half)
            end = min(duration, (b - 1) * local.frame_step + half)
            if turns and turns[-1][2] == g and start - turns[-1][1] < 0.1:
                turns[-1] = (turns[-1][0], end, g)
            elif end > start:
                turns.append((start, end, g))
    turns.sort(key=lambda t: (t[0], t[1]))
    return turns
