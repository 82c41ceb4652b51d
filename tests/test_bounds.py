"""The weight bounds at the defaults: they keep the density order and signal, bound max/min and concentration, and
raise no prompt to a floor; on the geometries where a floor erased the signal, on real HH prompts and the world."""

import numpy as np
import pytest
from scipy.stats import spearmanr

from benchmarks.compare_estimators import three_clusters
from density_rlhf import DensityIndex, DensitySampler
from density_rlhf.estimators import (
    DEFAULT_MAX_WEIGHT_RATIO,
    DEFAULT_TARGET_ESS,
    bounded_log_weights,
    density_weights,
    effective_sample_size,
)

from .test_weights import _hh_prompts, _ids, embedder  # noqa: F401 - the fixture


def _at_minimum(w: np.ndarray) -> float:
    return float(np.isclose(w, w.min(), rtol=1e-9, atol=0).mean())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_three_clusters_keep_their_order_under_the_defaults(seed):
    x, label = three_clusters(seed)
    index = DensityIndex.build(None, _ids(len(x)), embeddings=x, k=10)
    w, s = index.weights, index.summary()
    crowded, small, isolated = (w[label == c].mean() for c in range(3))
    assert small >= 2 * crowded and isolated > small, (crowded, small, isolated)
    assert s["ess_fraction"] >= DEFAULT_TARGET_ESS * (1 - 1e-9)
    assert s["ratio"] <= DEFAULT_MAX_WEIGHT_RATIO * (1 + 1e-9)
    assert _at_minimum(w) <= 0.05
    # the raw weights would hand the isolated points nearly all the mass; the ESS cap is what stops that
    raw = index.reweighted(max_weight_ratio=float("inf"), target_ess=0)
    assert raw.weights[label == 2].sum() > 0.99 and s["active_bounds"] == ["target_ess", "max_weight_ratio"]


@pytest.mark.parametrize("last_turn", [False, True], ids=["full_dialogue", "last_turn"])
def test_real_hh_prompts_keep_their_density_order(hh_sample, embedder, last_turn):  # noqa: F811
    prompts = _hh_prompts(hh_sample, last_turn)
    index = DensityIndex.build(prompts, _ids(len(prompts)), embedder=embedder, show_progress=False)
    raw = index.reweighted(max_weight_ratio=float("inf"), target_ess=0)
    s = index.summary()
    assert s["ratio"] <= DEFAULT_MAX_WEIGHT_RATIO * (1 + 1e-9)
    assert s["ess_fraction"] >= DEFAULT_TARGET_ESS * (1 - 1e-9)
    assert _at_minimum(index.weights) <= 0.05
    assert spearmanr(index.weights, raw.weights)[0] >= 0.99


@pytest.mark.parametrize("seed", [0, 1])
def test_synthetic_world_rare_topics_separate(seed):
    """AUROC >= 0.95 on the embedded default world (seed 0); on every world the bounds cost no AUROC (the raw
    estimator gives 0.94-0.95 on seeds 1-4)."""
    from sklearn.metrics import roc_auc_score

    from density_rlhf.data import prompt_table
    from density_rlhf.experiment.world import make_synthetic_world

    train = make_synthetic_world(seed)["train"]
    rare = {pid for pid, r in zip(train["prompt_id"], train["is_rare"]) if r}
    table = prompt_table(train)
    index = DensityIndex.build([r["prompt"] for r in table], [r["id"] for r in table], show_progress=False)
    is_rare = np.array([r["id"] in rare for r in table])
    bounded = roc_auc_score(is_rare, index.weights)
    assert bounded == roc_auc_score(is_rare, index.reweighted(max_weight_ratio=np.inf, target_ess=0).weights)
    assert bounded >= (0.95 if seed == 0 else 0.93)


def test_duplicate_groups_keep_their_shared_mass_under_the_bounds():
    """A group of m copies weighs m^(1 - alpha_eff) times one prompt at that place (docs/density.md)."""
    x, label = three_clusters(0)
    copies = np.vstack([x, np.repeat(x[2000:2001], 5, axis=0)])  # the small cluster's first point, 6 times in all
    index = DensityIndex.build(None, _ids(len(copies)), embeddings=copies, k=10)
    members = np.flatnonzero(index.duplicate_of == 2000)
    assert len(members) == 6 and np.allclose(index.weights[members], index.weights[2000], rtol=1e-12)
    a = index.summary()["alpha_effective"]
    lone = DensityIndex.build(None, _ids(len(x)), embeddings=x, k=10).reweighted(max_weight_ratio=np.inf,
                                                                                   target_ess=0, alpha=a)  # fmt: skip
    reference = 1500  # a crowded point, below the cap in both
    group_over_ref = index.weights[members].sum() / index.weights[reference]
    one_over_ref = lone.weights[2000] / lone.weights[reference]
    assert group_over_ref == pytest.approx(6 ** (1 - a) * one_over_ref, rel=1e-3)


def _random_log_density(rng: np.random.Generator) -> np.ndarray:
    n = int(rng.integers(20, 3000))
    kind = rng.integers(4)
    if kind == 0:  # the spread of -d log r_k with d ~ 20
        log_p = -20 * np.log(rng.uniform(0.2, 1.4, size=n))
    elif kind == 1:  # heavy tails both ways
        log_p = rng.standard_t(1.5, size=n) * rng.uniform(1, 30)
    elif kind == 2:  # a few outliers far below a dense bulk
        log_p = np.concatenate([rng.normal(0, 1, size=n), rng.normal(-40, 5, size=max(1, n // 50))])
    else:  # ties: duplicate groups share a density
        log_p = np.repeat(rng.normal(0, 5, size=max(2, n // 4)), 4)
    return rng.permutation(log_p)


@pytest.mark.parametrize("seed", range(40))
def test_bounded_weights_are_monotone_and_within_the_bounds(seed):
    rng = np.random.default_rng(seed)
    log_p = _random_log_density(rng)
    alpha = float(rng.choice([0.0, 0.3, 1.0, 2.0]))
    ratio = float(rng.choice([1.0, 10.0, 1000.0, np.inf]))
    target = float(rng.choice([0.0, 0.1, 0.3, 0.9]))
    w = density_weights(log_p, alpha, max_weight_ratio=ratio, target_ess=target)
    order = np.argsort(log_p, kind="stable")  # densest last
    assert (np.diff(w[order]) <= 1e-15 * w.max()).all(), "a denser prompt got more weight"
    groups = np.unique(log_p, return_inverse=True)[1]
    for g in np.unique(groups[np.bincount(groups)[groups] > 1]):  # equal densities, equal weights
        np.testing.assert_allclose(w[groups == g], w[groups == g][0], rtol=1e-12)
    if np.isfinite(ratio):
        assert w.max() / w.min() <= ratio * (1 + 1e-9)
    assert effective_sample_size(w) >= target * len(w) * (1 - 1e-9)
    _, stats = bounded_log_weights(log_p, alpha, max_weight_ratio=ratio, target_ess=target)
    assert 0 <= stats["alpha_effective"] <= alpha and 0 <= stats["capped_fraction"] <= 1


@pytest.mark.parametrize("seed", range(5))
def test_without_bounds_the_weights_are_the_raw_inverse_density(seed):
    log_p = _random_log_density(np.random.default_rng(seed))
    raw = np.exp(-(log_p - log_p.min()))
    for bounds in ({"max_weight_ratio": None, "target_ess": None}, {"max_weight_ratio": np.inf, "target_ess": 0}):
        np.testing.assert_allclose(density_weights(log_p, 1.0, **bounds), raw / raw.sum(), rtol=1e-9)
        assert bounded_log_weights(log_p, 1.0, **bounds)[1]["active_bounds"] == []


def test_a_tight_ess_target_caps_only_the_top():
    log_p = np.concatenate([np.linspace(0, 1, 995), np.full(5, -30.0)])  # five isolated prompts
    log_w, stats = bounded_log_weights(log_p, 1.0, max_weight_ratio=None, target_ess=0.5)
    assert stats["active_bounds"] == ["target_ess"] and stats["alpha_effective"] == 1.0
    assert stats["capped_fraction"] == pytest.approx(0.005)
    np.testing.assert_allclose(log_w[:995], -log_p[:995] - (-log_p[:995]).max() + log_w[:995].max(), atol=1e-12)
    assert (log_w[995:] == log_w.max()).all() and log_w[995:].max() > log_w[:995].max()


@pytest.mark.parametrize(
    "kwargs, match",
    [({"max_weight_ratio": 0.5}, "max_weight_ratio must be >= 1"), ({"target_ess": 1.5}, "target_ess must be in"),
     ({"target_ess": float("nan")}, "target_ess must be in"), ({"max_weight_ratio": float("nan")}, "max_weight_ratio")],
)  # fmt: skip
def test_bad_bounds_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        density_weights(np.arange(5.0), 1.0, **kwargs)


def test_the_sampler_says_when_a_bound_binds(caplog):
    from datasets import Dataset

    x, _ = three_clusters(0)
    index = DensityIndex.build(None, _ids(len(x)), embeddings=x, k=10)
    with caplog.at_level("INFO", logger="density_rlhf.sampler"):
        sampler = DensitySampler.from_index(index, Dataset.from_dict({"prompt_id": index.prompt_ids}))
    assert "bounded by target_ess and max_weight_ratio: alpha 1 asked, 0.88 used" in caplog.text
    assert sampler.summary()["active_bounds"] == ["target_ess", "max_weight_ratio"]
