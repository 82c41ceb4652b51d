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

and one that needs no neighbours:

- `"cluster"`: log p_i = log n_c, the number of prompts in i's cluster (spherical k-means or groups the caller
  names, `density_rlhf.clusters`). At alpha = 1 every cluster then carries the same total mass: cluster balancing,
  the usual alternative to a kNN density.

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
w_i ∝ p_i^-alpha_eff, capped at the top, mixed with uniform by `uniform_mix` and normalized to sum to 1. Two bounds,
each `None` to lift it, keep a few prompts from deciding the weights (`bounded_log_weights`):

- `target_ess`: the effective sample size 1/Σw² stays at or above this fraction of N. The heaviest weights are capped
  (truncated importance weights): the cap is the highest one that meets the target, so only the outliers at the top
  change, and they keep more weight than every prompt below the cap.
- `max_weight_ratio`: max/min stays at or below this. alpha_eff is the largest alpha' <= alpha whose capped weights
  meet the bound (bisection); tempering keeps the order of all prompts and raises no prompt to a floor.

Equal densities get equal weights and a denser prompt never gets more weight. With both bounds `None` the weights are
the raw p^-alpha. `bounded_log_weights` reports alpha_eff, the share of prompts at the cap, the sampling mass the
bounds moved and which bound is active.
"""

import numpy as np


KNN_ESTIMATORS = ("intrinsic", "mean_distance", "kth_distance")
ESTIMATORS = (*KNN_ESTIMATORS, "cluster")
# Euclidean on unit vectors, i.e. cosine above 0.9999995: exact copies and case variants of a prompt under MiniLM
# (distance 0 measured) fall inside, the closest distinct HH-RLHF prompts (0.35) far outside. Larger values chain dense
# clouds of distinct points into one group (3,000 points on a small plane merge entirely at 0.01).
DEFAULT_DUPLICATE_TOLERANCE = 1e-3
# The defaults and how they were chosen: docs/density.md.
DEFAULT_MAX_WEIGHT_RATIO = 1000.0
DEFAULT_TARGET_ESS = 0.3


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
    cluster_labels: np.ndarray | None = None,
) -> np.ndarray:
    """Log density (up to a constant) of each point from its distinct-neighbour distances, or for `cluster` from its
    cluster's size; see the module docstring.

    Args:
        knn_distances: (N, k) distances to the k nearest distinct points, all > 0.
        estimator: `intrinsic`, `mean_distance`, `kth_distance` or `cluster`.
        multiplicity: members of each point's duplicate group (default 1); adds log m (kNN estimators).
        intrinsic_dim: d_hat for `intrinsic`; estimated from `knn_distances` when `None`.
        cluster_labels: (N,) cluster of every point, duplicates included; needed by `cluster`.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}.")
    if estimator == "cluster":
        if cluster_labels is None:
            raise ValueError("the cluster estimator needs cluster_labels (DensityIndex.build computes them).")
        return cluster_log_density(cluster_labels)
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


def cluster_log_density(cluster_labels: np.ndarray) -> np.ndarray:
    """log of the number of points in each point's cluster (`cluster_labels` holds every point, copies included)."""
    labels = np.asarray(cluster_labels)
    if labels.ndim != 1 or labels.size == 0 or not np.issubdtype(labels.dtype, np.integer) or (labels < 0).any():
        raise ValueError("cluster_labels must be a non-empty 1-d array of integers >= 0, one per point.")
    return np.log(np.bincount(labels)[labels].astype(np.float64))


def raw_log_weights(log_p: np.ndarray, alpha: float) -> np.ndarray:
    """log of p^-alpha shifted so that the largest is 0 (before the bounds and mixing)."""
    log_w = -alpha * np.asarray(log_p, dtype=np.float64)
    return log_w - log_w.max()


def normalize_bounds(max_weight_ratio: float | None, target_ess: float | None) -> tuple[float | None, float | None]:
    """The bounds with `None` for "no bound" (also spelled `inf` and `0`); `ValueError` outside [1, inf] and [0, 1]."""
    if max_weight_ratio is not None:
        if isinstance(max_weight_ratio, bool) or not max_weight_ratio >= 1:  # also refuses NaN
            raise ValueError(f"max_weight_ratio must be >= 1 (inf or None: no bound), got {max_weight_ratio}.")
        max_weight_ratio = None if np.isinf(max_weight_ratio) else float(max_weight_ratio)
    if target_ess is not None:
        if isinstance(target_ess, bool) or not 0 <= target_ess <= 1:
            raise ValueError(f"target_ess must be in [0, 1], a fraction of N (0 or None: no bound), got {target_ess}.")
        target_ess = float(target_ess) or None
    return max_weight_ratio, target_ess


def _capped_log_ess(sorted_log_w: np.ndarray, prefix1: np.ndarray, prefix2: np.ndarray, cap: float) -> float:
    """log ESS of exp(min(log_w, cap)), from the log prefix sums of exp(log_w) and exp(2 log_w) (sorted ascending)."""
    below = int(np.searchsorted(sorted_log_w, cap, side="right"))
    above = len(sorted_log_w) - below
    log_a, log_b = np.log(above) + cap if above else -np.inf, np.log(above) + 2 * cap if above else -np.inf
    if below:
        log_a, log_b = np.logaddexp(prefix1[below - 1], log_a), np.logaddexp(prefix2[below - 1], log_b)
    return float(2 * log_a - log_b)


def _ess_cap(sorted_log_w: np.ndarray, target_ess: float | None) -> float:
    """The highest cap on sorted log weights (max 0) whose capped weights keep ESS >= target_ess * N (0: no cap).

    ESS only grows as the cap comes down (to N when it reaches the smallest weight), so bisection finds it.
    """
    if target_ess is None:
        return 0.0
    log_target = np.log(target_ess * len(sorted_log_w))
    w = np.exp(sorted_log_w)  # the largest log weight is 0, so no overflow
    if 2 * np.log(w.sum()) - np.log(np.square(w).sum()) >= log_target:
        return 0.0
    prefix1, prefix2 = np.logaddexp.accumulate(sorted_log_w), np.logaddexp.accumulate(2 * sorted_log_w)
    lo, hi = float(sorted_log_w[0]), 0.0  # lo meets the target (uniform weights), hi does not
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid in (lo, hi):
            break
        if _capped_log_ess(sorted_log_w, prefix1, prefix2, mid) >= log_target:
            lo = mid
        else:
            hi = mid
    return lo


def bounded_log_weights(
    log_p: np.ndarray, alpha: float, *, max_weight_ratio: float | None = None, target_ess: float | None = None
) -> tuple[np.ndarray, dict]:
    """log weights ∝ p^-alpha_eff, capped for `target_ess`, within `max_weight_ratio` (module docstring), and how the
    bounds changed them.

    Returns:
        `(log_w, stats)`: log weights with maximum 0, and `alpha` (asked), `alpha_effective`, `capped_fraction`
        (prompts at the cap), `mass_moved` (total-variation distance between the normalized raw p^-alpha weights and
        the bounded ones: the fraction of draws the bounds send elsewhere), `raw_ratio` (max/min of the raw weights,
        may be `inf`), `ratio` and `ess_fraction` (of the bounded weights) and `active_bounds`.
    """
    max_weight_ratio, target_ess = normalize_bounds(max_weight_ratio, target_ess)
    log_p = np.asarray(log_p, dtype=np.float64)
    u = raw_log_weights(log_p, 1.0)
    u_sorted = np.sort(u)
    log_bound = np.inf if max_weight_ratio is None else float(np.log(max_weight_ratio))

    def capped_range(a: float) -> tuple[float, float]:
        cap = _ess_cap(a * u_sorted, target_ess)
        return cap, cap - a * u_sorted[0]

    alpha_eff = float(alpha)
    cap, spread = capped_range(alpha_eff)
    if spread > log_bound:
        lo, hi = 0.0, alpha_eff  # alpha' = 0 is uniform and meets every bound
        while hi - lo > 1e-9 * alpha_eff:
            mid = 0.5 * (lo + hi)
            if capped_range(mid)[1] <= log_bound:
                lo = mid
            else:
                hi = mid
        alpha_eff = lo
        cap, spread = capped_range(alpha_eff)
    log_w = np.minimum(alpha_eff * u, cap)
    log_w -= log_w.max()
    raw = np.exp(alpha * u - np.logaddexp.reduce(alpha * u))
    bounded = np.exp(log_w - np.logaddexp.reduce(log_w))
    active = [name for name, on in (("target_ess", cap < 0), ("max_weight_ratio", alpha_eff < alpha)) if on]
    stats = {
        "alpha": float(alpha),
        "alpha_effective": alpha_eff,
        "capped_fraction": float((alpha_eff * u > cap).mean()),
        "mass_moved": float(0.5 * np.abs(raw - bounded).sum()),
        "raw_ratio": _ratio(-alpha * u_sorted[0]),
        "ratio": _ratio(-log_w.min()),
        "ess_fraction": effective_sample_size(bounded) / len(bounded),
        "active_bounds": active,
    }
    return log_w, stats


def _ratio(log_spread: float) -> float:
    """max/min from the log of it (`inf` past float64's range)."""
    return float(np.exp(log_spread)) if log_spread < 700 else float("inf")


def bounded_weights(
    log_p: np.ndarray,
    alpha: float = 1.0,
    *,
    max_weight_ratio: float | None = None,
    target_ess: float | None = None,
    uniform_mix: float = 0.0,
) -> tuple[np.ndarray, dict]:
    """Normalized weights of `bounded_log_weights`, mixed with uniform by `uniform_mix`, and its statistics."""
    log_w, stats = bounded_log_weights(log_p, alpha, max_weight_ratio=max_weight_ratio, target_ess=target_ess)
    w = np.exp(log_w)
    w /= w.sum()
    if uniform_mix:
        w = (1.0 - uniform_mix) * w + uniform_mix / len(w)
    return w, stats


def density_weights(
    log_p: np.ndarray,
    alpha: float = 1.0,
    *,
    max_weight_ratio: float | None = None,
    target_ess: float | None = None,
    uniform_mix: float = 0.0,
) -> np.ndarray:
    """Normalized weights ∝ density^-alpha within the bounds, mixed with uniform by `uniform_mix`."""
    return bounded_weights(
        log_p, alpha, max_weight_ratio=max_weight_ratio, target_ess=target_ess, uniform_mix=uniform_mix
    )[0]


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
