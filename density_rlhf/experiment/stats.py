"""Statistics over seeds: means with t intervals, minimum detectable effects, p-values, Holm's correction."""

import math
from typing import Any

import numpy as np


def _finite(values: list[float | None]) -> np.ndarray:
    """The per-seed values that were measured (no `None`, no NaN)."""
    return np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)


def mean_ci(values: list[float]) -> dict[str, Any]:
    """Mean and 95% t-interval over seeds (no interval with one seed)."""
    from scipy import stats

    x = _finite(values)
    out: dict[str, Any] = {"mean": float(x.mean()) if x.size else float("nan"), "n": int(x.size), "values": x.tolist()}
    if x.size >= 2:
        half = float(stats.t.ppf(0.975, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
        out.update(ci_low=out["mean"] - half, ci_high=out["mean"] + half)
    else:
        out.update(ci_low=None, ci_high=None)
    return out


def minimum_detectable_effect(values: list[float], power: float = 0.8, alpha: float = 0.05) -> float | None:
    """Smallest true mean difference a paired two-sided t-test over these seeds detects with `power`:
    (t_{1-alpha/2, n-1} + t_{power, n-1}) * sd / sqrt(n), with the observed sd. `None` below two seeds."""
    from scipy import stats

    x = _finite(values)
    if x.size < 2:
        return None
    n = x.size
    return float((stats.t.ppf(1 - alpha / 2, n - 1) + stats.t.ppf(power, n - 1)) * x.std(ddof=1) / math.sqrt(n))


def seeds_needed(values: list[float], effect: float, power: float = 0.8, alpha: float = 0.05, most: int = 1000):
    """Fewest seeds whose minimum detectable effect, at the spread of `values`, is at most `effect` (`None` when the
    spread is unknown or more than `most` would be needed)."""
    from scipy import stats

    x = _finite(values)
    if x.size < 2 or effect == 0:
        return None
    sd = x.std(ddof=1)
    if sd == 0:
        return 2
    for n in range(2, most + 1):
        if (stats.t.ppf(1 - alpha / 2, n - 1) + stats.t.ppf(power, n - 1)) * sd / math.sqrt(n) <= abs(effect):
            return n
    return None


def p_value(values: list[float], null: float = 0.0) -> float | None:
    """Two-sided one-sample t-test p-value of the seed differences against `null` (`None` below two seeds)."""
    from scipy import stats

    x = _finite(values)
    if x.size < 2:
        return None
    if x.std(ddof=1) == 0:
        return 0.0 if x.mean() != null else 1.0
    return float(stats.ttest_1samp(x, null).pvalue)


def holm(p_values: list[float | None], alpha: float = 0.05) -> list[bool | None]:
    """Holm-Bonferroni step-down: which hypotheses are rejected at family-wise error `alpha` (`None` stays `None`)."""
    known = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
    rejected: list[bool | None] = [None if p is None else False for p in p_values]
    m = len(known)
    for rank, (p, i) in enumerate(known):
        if p > alpha / (m - rank):
            break
        rejected[i] = True
    return rejected


def verdict(diff: dict[str, Any]) -> str:
    if diff["ci_low"] is None:
        return f"no detectable difference ({diff['n']} seed{'s' if diff['n'] != 1 else ''}: no interval)"
    if diff["ci_low"] > 0:
        return "higher"
    if diff["ci_high"] < 0:
        return "lower"
    return "no detectable difference"


def _difference(values: list[float]) -> dict[str, Any]:
    stat = mean_ci(values)
    stat.update(verdict=verdict(stat), mde=minimum_detectable_effect(values), p_value=p_value(values))
    return stat


def signed_rank_p(differences: list[float]) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired differences (zeros dropped); 1.0 when all are zero."""
    from scipy.stats import wilcoxon

    x = _finite(differences)
    if not np.any(x != 0):
        return 1.0
    return float(wilcoxon(x, zero_method="wilcox").pvalue)


def mcnemar_p(only_first: int, only_second: int) -> float:
    """Exact McNemar p-value (two-sided binomial test on the discordant pairs); 1.0 without discordant pairs."""
    from scipy.stats import binomtest

    discordant = only_first + only_second
    return float(binomtest(only_first, discordant, 0.5).pvalue) if discordant else 1.0
