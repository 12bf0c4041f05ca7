"""Speaker embeddings grouped into speakers, with the number of speakers estimated.

The recipe the field uses for short recordings: a cosine affinity pruned to each embedding's
nearest neighbours, the number of speakers from the largest eigengap of its Laplacian
(capped), k-means on the eigenvectors (too few embeddings for that: average-linkage
agglomerative clustering); then clusters too small to be a speaker join the nearest larger
one, clusters whose centroids are more similar than a threshold merge, and every embedding is
reassigned to its nearest centroid.
"""

from __future__ import annotations

import numpy as np

__all__ = ["centroids", "cluster", "group", "unit"]

#: Fewer embeddings than this are clustered agglomeratively instead of spectrally.
_MIN_SPECTRAL = 10
#: Affinity pruning: each embedding keeps its ``max(share * n, least)`` most similar ones.
_PRUNE_SHARE, _PRUNE_LEAST = 0.05, 6


def unit(rows: np.ndarray) -> np.ndarray:
    """``rows`` scaled to length 1 (a zero row stays zero)."""
    return np.asarray(rows / np.maximum(np.linalg.norm(rows, axis=-1, keepdims=True), 1e-8))


def centroids(embeddings: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The cluster numbers in ``labels`` and the unit mean embedding of each."""
    names = np.unique(labels)
    return names, unit(np.stack([embeddings[labels == c].mean(axis=0) for c in names]))


def _spectral(embeddings: np.ndarray, k: int | None, max_speakers: int) -> np.ndarray:
    from sklearn.cluster import KMeans

    n = len(embeddings)
    similarity = embeddings @ embeddings.T
    keep = min(n, max(_PRUNE_LEAST, int(np.ceil(_PRUNE_SHARE * n))))
    nearest = np.argsort(-similarity, axis=1)[:, :keep]
    rows = np.arange(n)[:, None]
    pruned = np.zeros_like(similarity)
    pruned[rows, nearest] = similarity[rows, nearest]
    affinity = np.clip(0.5 * (pruned + pruned.T), 0.0, None)
    np.fill_diagonal(affinity, 0.0)
    values, vectors = np.linalg.eigh(np.diag(affinity.sum(axis=1)) - affinity)
    if k is None:
        k = int(np.argmax(np.diff(values[: min(max_speakers, n - 1) + 1]))) + 1
    if k <= 1:
        return np.zeros(n, dtype=int)
    return np.asarray(KMeans(n_clusters=k, n_init=10, random_state=0).fit_predict(vectors[:, :k]))


def _agglomerative(embeddings: np.ndarray, k: int | None, merge_threshold: float) -> np.ndarray:
    from sklearn.cluster import AgglomerativeClustering

    if k is not None:
        model = AgglomerativeClustering(n_clusters=k, metric="cosine", linkage="average")
    else:
        model = AgglomerativeClustering(
            n_clusters=None,
            metric="cosine",
            linkage="average",
            distance_threshold=1.0 - merge_threshold,
        )
    return np.asarray(model.fit_predict(embeddings))


def group(embeddings: np.ndarray, merge_threshold: float) -> np.ndarray:
    """A group number per unit embedding: average-linkage agglomeration that stops when the
    groups left are less alike than ``merge_threshold`` (cosine similarity)."""
    if len(embeddings) <= 1:
        return np.zeros(len(embeddings), dtype=int)
    return _agglomerative(embeddings, None, merge_threshold)


def _refine(
    embeddings: np.ndarray, labels: np.ndarray, *, fixed: bool, merge_threshold: float, min_cluster: int
) -> np.ndarray:
    """Tiny clusters absorbed and near-duplicates merged (unless the count was given), then
    every embedding reassigned to its nearest centroid."""
    labels = labels.copy()
    if not fixed:
        names, sizes = np.unique(labels, return_counts=True)
        big = names[sizes >= min_cluster]
        if not big.size:
            return np.zeros_like(labels)
        small = ~np.isin(labels, big)
        if small.any():
            kept, middle = centroids(embeddings[~small], labels[~small])
            labels[small] = kept[np.argmax(embeddings[small] @ middle.T, axis=1)]
        while len(np.unique(labels)) > 1:
            names, middle = centroids(embeddings, labels)
            similarity = middle @ middle.T
            np.fill_diagonal(similarity, -1.0)
            i, j = np.unravel_index(np.argmax(similarity), similarity.shape)
            if similarity[i, j] < merge_threshold:
                break
            labels[labels == names[j]] = names[i]
    for _ in range(2):
        names, middle = centroids(embeddings, labels)
        moved = names[np.argmax(embeddings @ middle.T, axis=1)]
        if len(np.unique(moved)) < len(names) or np.array_equal(moved, labels):
            break
        labels = moved
    return labels


def cluster(
    embeddings: np.ndarray,
    num_speakers: int | None = None,
    *,
    max_speakers: int = 8,
    merge_threshold: float = 0.6,
    min_cluster: int = 3,
) -> np.ndarray:
    """A speaker number (0, 1, …) per unit embedding.

    Args:
        embeddings: ``(n, d)`` unit vectors.
        num_speakers: The number of speakers when known; else it is estimated.
        max_speakers: The most an estimate may find.
        merge_threshold: Cosine similarity of two centroids over which they are one speaker.
        min_cluster: Clusters of fewer embeddings join the nearest larger one.
    """
    n = len(embeddings)
    if n <= 1 or num_speakers == 1:
        return np.zeros(n, dtype=int)
    k = None if num_speakers is None else min(num_speakers, n)
    if n < _MIN_SPECTRAL:
        labels = _agglomerative(embeddings, k, merge_threshold)
    else:
        labels = _spectral(embeddings, k, max_speakers)
    labels = _refine(
        embeddings, labels, fixed=k is not None, merge_threshold=merge_threshold, min_cluster=min_cluster
    )
    if k is None and len(np.unique(labels)) > max_speakers:  # merges only shrink; a safeguard
        labels = _agglomerative(embeddings, max_speakers, merge_threshold)
    return labels
