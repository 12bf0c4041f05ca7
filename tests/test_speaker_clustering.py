"""Speaker embeddings grouped into speakers, and speakers a chunk's local speakers reveal.

Embeddings here are unit vectors scattered around a few directions, as a speaker encoder's are
around each voice; the real encoder is tested in tests/stages/test_campplus.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from stsdub._builtin._local_speakers import _new_speakers
from stsdub._speakers._clustering import cluster, group, unit


def voices(counts: list[int], *, spread: float = 0.25, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``counts[v]`` unit embeddings of voice ``v`` (orthogonal directions plus noise) and
    their voice numbers."""
    rng = np.random.default_rng(seed)
    dims = 16
    rows, truth = [], []
    for v, n in enumerate(counts):
        direction = np.eye(dims)[v]
        rows.append(direction + spread * rng.standard_normal((n, dims)) / np.sqrt(dims))
        truth += [v] * n
    return unit(np.concatenate(rows)), np.array(truth)


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    return len(set(zip(a.tolist(), b.tolist(), strict=True))) == len(np.unique(a)) == len(np.unique(b))


@pytest.mark.parametrize("counts", [[12, 9, 15], [4, 3], [20]])
def test_the_number_of_speakers_is_estimated(counts: list[int]) -> None:
    embeddings, truth = voices(counts)
    assert same_partition(cluster(embeddings), truth)


def test_a_given_number_and_the_cap_are_kept() -> None:
    embeddings, _ = voices([10, 10, 10, 10])
    assert len(np.unique(cluster(embeddings, 2))) == 2
    assert len(np.unique(cluster(embeddings, max_speakers=3))) <= 3
    assert not cluster(embeddings[:1]).any() and not cluster(embeddings, 1).any()


def test_groups_stop_at_the_threshold() -> None:
    embeddings, truth = voices([3, 2])
    assert same_partition(group(embeddings, 0.6), truth)
    assert len(np.unique(group(embeddings, -1.0))) == 1
    assert group(embeddings[:1], 0.6).tolist() == [0]


def test_a_leftover_local_speaker_who_speaks_alone_is_a_new_speaker() -> None:
    # Two speakers were found. Chunks 1 and 2 hold a third local speaker (voice 2) no one was
    # matched to, clean in chunk 2; chunk 3 holds a leftover (voice 3) heard only in overlap.
    embeddings, _ = voices([3, 2, 2, 1])
    keys = [(0, 0), (1, 0), (2, 0), (0, 1), (1, 1), (1, 2), (2, 2), (3, 2)]
    clean = [True, True, True, True, True, False, True, False]
    to_global = np.full((4, 3), -1)
    for (c, k), g in zip(keys[:5], [0, 0, 0, 1, 1], strict=True):
        to_global[c, k] = g
    mapped = to_global.copy()
    assert _new_speakers(mapped, keys, embeddings, clean, 2, 8, 0.6) == 3
    assert mapped[1, 2] == mapped[2, 2] == 2  # one new speaker, both chunks
    assert mapped[3, 2] == -1  # never alone long enough: unheard, not a speaker of its own
    capped = to_global.copy()
    assert _new_speakers(capped, keys, embeddings, clean, 2, 2, 0.6) == 2
    assert (capped == to_global).all()
