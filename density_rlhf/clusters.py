"""Prompt clusters for the `cluster` estimator: spherical k-means with FAISS, or groups the caller names (a topic or
category column). Every prompt of a cluster gets the cluster's size as its density, so at alpha = 1 each cluster
carries the same total mass (see `density_rlhf.estimators`)."""

import math
from collections.abc import Sequence
from typing import Any

import numpy as np


KMEANS_ITERATIONS = 20


def default_n_clusters(n: int) -> int:
    """k-means clusters for `n` distinct prompts: round(sqrt(n)), at least 2 and at most `n` (21 for the demo's 457
    prompts, 1,000 at 10^6): the common rule of thumb, which also sizes FAISS's IVF lists."""
    return max(2, min(n, round(math.sqrt(n))))


def kmeans(
    embeddings: np.ndarray, n_clusters: int, *, seed: int = 0, use_gpu: bool | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Spherical k-means (FAISS, `KMEANS_ITERATIONS` iterations, seeded) of unit `embeddings`: the label of every
    row and the unit centroids."""
    import faiss

    from .knn import _use_gpu

    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    n, d = x.shape
    if not 2 <= n_clusters <= n:
        raise ValueError(f"n_clusters={n_clusters} must be between 2 and the number of distinct prompts ({n}).")
    km = faiss.Kmeans(
        d,
        n_clusters,
        niter=KMEANS_ITERATIONS,
        seed=seed,
        spherical=True,
        gpu=_use_gpu(use_gpu),
        verbose=False,
        min_points_per_centroid=1,  # small clusters are the point here, not a warning
    )
    km.train(x)
    centroids = np.ascontiguousarray(km.centroids, dtype=np.float32)
    return nearest_centroid(x, centroids), centroids


def nearest_centroid(embeddings: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """The label of the most similar (inner product) centroid of each unit embedding."""
    import faiss

    index = faiss.IndexFlatIP(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    _, hits = index.search(np.ascontiguousarray(embeddings, dtype=np.float32), 1)
    return hits[:, 0].astype(np.int64)


def labels_from_values(values: Sequence[Any]) -> tuple[np.ndarray, list[str]]:
    """Integer labels for given group values (in order of first appearance) and the value of each label as text."""
    names: dict[Any, int] = {}
    labels = np.array([names.setdefault(value, len(names)) for value in values], dtype=np.int64)
    return labels, [str(value) for value in names]


def centroids_of(embeddings: np.ndarray, labels: np.ndarray, n_clusters: int) -> np.ndarray:
    """Unit mean embedding of each label: where a new prompt is assigned for labels the caller gave."""
    sums = np.zeros((n_clusters, embeddings.shape[1]), dtype=np.float64)
    np.add.at(sums, labels, embeddings)
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    return np.ascontiguousarray(sums / np.where(norms > 0, norms, 1.0), dtype=np.float32)
