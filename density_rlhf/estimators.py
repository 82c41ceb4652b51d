"""Density estimators and sampling weights as pure functions of kNN distances (no FAISS, no I/O).

Density estimator
-----------------
For unit-normalized embeddings x_i, the k nearest *distinct* neighbours (self excluded) lie at Euclidean distances
r_i1 <= ... <= r_ik. The textbook kNN estimator is p_i = k / (N * V_d * r_ik^d), but with d = 384 the factor r^d
under- or overflows float64 and, even in log space, turns small distance differences into weight ratios of e^100 and
more. Three estimators, all monotone in the neighbourhood radius and all computed in log space:

- `"intrinsic"` (default): log p_i = -d_hat * log r_ik, with d_hat the Levina-Bickel maximum-likelihood intrinsic
  dimension of the data (typically 5-20 for sentence embeddings, not 384): the kNN estimator on the data manifold.
- `"mean_distance"`: log p_i = -log(mean_j r_ij), i.e. d = 1 with all k distances averaged. Much flatter weights.
- `"kth_distance"`: log p_i = -log r_ik (the kNN estimator with d = 1).

Duplicates
----------
Real prompt sets repeat themselves: the same opening request in many dialogues, case variants that an uncased
embedder maps to one vector. Prompts whose embeddings lie within `duplicate_tolerance` of each other (Euclidean, on
unit vectors; chained transitively) form one *group* of multiplicity m, placed once in the kNN index. Then:

- distances are measured between distinct groups, so no zero distance ever enters a logarithm (no epsilon floor),
  in the density or in the intrinsic-dimension estimate;
- the group's density counts its members: log p_group = log m + log p_one, where p_one is the estimate for one
  prompt at that place (a group of m copies is m points there, as p = m k / (N V r^d) says);
- every member gets the group's weight p_group^-alpha, so the group's total mass is m^(1 - alpha) times what one
  prompt at that place would get. At alpha = 1 the copies together weigh exactly what a single prompt would, and
  share it equally; at alpha = 0 sampling stays uniform over rows. Without the grouping, k or more copies put
  r_k = 0 and, through a floor of 1e-6, weights of 1e-43 that silently drop rows from training.

Weights
-------
w_i ∝ p_i^-alpha, clipped so that max/min <= `max_weight_ratio` (the lightest rows are raised to max/ratio), mixed
with uniform by `uniform_mix`, and normalized to sum to 1. `clip_statistics` says how much clipping changed.
"""

import numpy as np


ESTIMATORS = ("intrinsic", "mean_distance", "kth_distance")
# Euclidean on unit vectors, i.e. cosine above 0.9999995: exact copies and case variants of a prompt under MiniLM
# (distance 0 measured) fall inside, the closest distinct HH-RLHF prompts (0.35) far outside. Larger values chain dense
# clouds of distinct points into one group (3,000 points on a small plane merge entirely at 0.01).
DEFAULT_DUPLICATE_TOLERANCE = 1e-3
# Chosen on the shared HH-RLHF sample and the synthetic world (README, "Choosing the default weights"): it never binds
# on the synthetic world (max/min ~700 there) and bounds real prompt sets, whose raw ratios reach 10^3-10^5.
DEFAULT_MAX_WEIGHT_RATIO = 1000.0


def group_duplicates(n: int, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Representative (smallest row index) of each of `n` rows' duplicate group, from near-identical pairs.

    `(src[j], dst[j])` are pairs of rows within the duplicate tolerance (self pairs allowed). Groups are the connected
    components of that relation, found by propagating the smallest index until nothing changes.
    """
    label = np.arange(n, dtype=np.int64)
    src, dst = np.asarray(src, dtype=np.int64), np.asarray(dst, dtype=np.int64)
    if src.size == 0:
        return label
    while True:
        new = label.copy()
        np.minimum.at(new, src, label[dst])
        np.minimum.at(new, dst, label[src])
        new = new[new]  # pointer jumping: a label is a row of the same group, so follow it to its own label
        if np.array_equal(new, label):
            return label
        label = new


def _check_distances(knn_distances: np.ndarray) -> np.ndarray:
    r = np.asarray(knn_distances, dtype=np.float64)
    if r.ndim != 2 or r.shape[1] < 1:
        raise ValueError(f"knn_distances must be (N, k) with k >= 1, got shape {r.shape}.")
    if not (r > 0).all() or not np.isfinite(r).all():
        raise ValueError(
            "knn_distances must be finite and > 0: zero distances come from duplicate points; merge them first "
            "(DensityIndex.build groups embeddings within `duplicate_tolerance`)."
        )
    return r


def intrinsic_dimension(knn_distances: np.ndarray) -> float:
    """Levina-Bickel MLE of the intrinsic dimension (MacKay-Ghahramani average of inverses) over distinct points."""
    r = _check_distances(knn_distances)
    if r.shape[1] < 2:
        raise ValueError("the intrinsic dimension needs k >= 2 neighbours.")
    inv = np.log(r[:, -1:] / r[:, :-1]).sum(axis=1) / (r.shape[1] - 1)
    inv = inv[inv > 0]
    if inv.size == 0:
        raise ValueError("cannot estimate the intrinsic dimension: all neighbour distances are equal.")
    return float(1.0 / inv.mean())


def log_density(
    knn_distances: np.ndarray,
    estimator: str = "intrinsic",
    *,
    multiplicity: np.ndarray | None = None,
    intrinsic_dim: float | None = None,
) -> np.ndarray:
    """Log density (up to a constant) of each point from its distinct-neighbour distances; see the module docstring.

    Args:
        knn_distances: (N, k) distances to the k nearest distinct points, all > 0.
        estimator: `intrinsic`, `mean_distance` or `kth_distance`.
        multiplicity: members of each point's duplicate group (default 1); adds log m.
        intrinsic_dim: d_hat for `intrinsic`; estimated from `knn_distances` when `None`.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}.")
    r = _check_distances(knn_distances)
    if estimator == "mean_distance":
        log_p = -np.log(r.mean(axis=1))
    elif estimator == "kth_distance":
        log_p = -np.log(r[:, -1])
    else:
        d_hat = intrinsic_dimension(r) if intrinsic_dim is None else float(intrinsic_dim)
        log_p = -d_hat * np.log(r[:, -1])
    if multiplicity is not None:
        log_p = log_p + np.log(np.asarray(multiplicity, dtype=np.float64))
    return log_p


def raw_log_weights(log_p: np.ndarray, alpha: float) -> np.ndarray:
    """log of p^-alpha shifted so that the largest is 0 (before clipping and mixing)."""
    log_w = -alpha * np.asarray(log_p, dtype=np.float64)
    return log_w - log_w.max()


def density_weights(
    log_p: np.ndarray, alpha: float = 1.0, *, max_weight_ratio: float | None = None, uniform_mix: float = 0.0
) -> np.ndarray:
    """Normalized weights ∝ density^-alpha, clipped to `max_weight_ratio` and mixed with uniform by `uniform_mix`."""
    log_w = raw_log_weights(log_p, alpha)
    if max_weight_ratio is not None:
        log_w = np.maximum(log_w, -np.log(max_weight_ratio))
    w = np.exp(log_w)
    w /= w.sum()
    if uniform_mix:
        w = (1.0 - uniform_mix) * w + uniform_mix / len(w)
    return w


def clip_statistics(log_p: np.ndarray, alpha: float, max_weight_ratio: float | None) -> dict[str, float]:
    """How much `max_weight_ratio` changed the weights: rows raised to the floor, and the sampling mass moved.

    `mass_moved` is the total-variation distance between the clipped and unclipped normalized weights, i.e. the
    fraction of draws that clipping sends to other rows. `raw_ratio` is max/min before clipping (may be `inf`).
    """
    log_w = raw_log_weights(log_p, alpha)
    raw_ratio = float(np.exp(-log_w.min())) if -log_w.min() < 700 else float("inf")
    if max_weight_ratio is None:
        return {"clipped_fraction": 0.0, "mass_moved": 0.0, "raw_ratio": raw_ratio}
    floor = -np.log(max_weight_ratio)
    raw = np.exp(log_w)
    clipped = np.exp(np.maximum(log_w, floor))
    moved = 0.5 * np.abs(raw / raw.sum() - clipped / clipped.sum()).sum()
    return {"clipped_fraction": float((log_w < floor).mean()), "mass_moved": float(moved), "raw_ratio": raw_ratio}


def effective_sample_size(weights: np.ndarray) -> float:
    """ESS = 1 / sum(w^2) of normalized weights: N for uniform, 1 when one item has all the mass."""
    w = np.asarray(weights, dtype=np.float64)
    w = w / w.sum()
    return float(1.0 / np.square(w).sum())


BUCKETS = ("rare", "mid", "common")


def bucket_thresholds(log_p: np.ndarray, quantiles: tuple[float, float] = (0.2, 0.8)) -> tuple[float, float]:
    """Log-density cut points: `rare` at or below the lower quantile, `common` above the upper one."""
    lo, hi = np.quantile(log_p, quantiles)
    return float(lo), float(hi)


def assign_buckets(log_p: np.ndarray, thresholds: tuple[float, float]) -> list[str]:
    """`rare` / `mid` / `common` by the log-density `thresholds` of `bucket_thresholds`."""
    lo, hi = thresholds
    codes = np.where(log_p <= lo, 0, np.where(log_p > hi, 2, 1))
    return [BUCKETS[c] for c in codes]
