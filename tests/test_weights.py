"""Density weights on real and duplicated prompts: duplicate groups, the bounded default, the weights report."""

import gzip
import json

import numpy as np
import pytest
from datasets import Dataset

from density_rlhf import DensityIndex, DensitySampler, prompt_id
from density_rlhf.estimators import (
    DEFAULT_DUPLICATE_TOLERANCE,
    DEFAULT_MAX_WEIGHT_RATIO,
    DEFAULT_TARGET_ESS,
    bounded_log_weights,
    group_duplicates,
    intrinsic_dimension,
    log_density,
)


def _ids(n, prefix="p"):
    return [f"{prefix}{i:05d}" for i in range(n)]


def _spread(n=300, d=16, seed=0):
    """Distinct points in Zipf-sized clusters: no two closer than the duplicate tolerance."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(5, d))
    sizes = np.array([150, 80, 40, 20, 10])[: max(1, n // 60)]
    return np.concatenate([c + 0.3 * rng.normal(size=(s, d)) for c, s in zip(centers, sizes)]).astype(np.float32)


def test_group_duplicates_chains_and_takes_the_smallest_row():
    # pairs 0-3, 3-5 and 2-4 (plus self pairs): groups {0, 3, 5}, {2, 4}, {1}
    src, dst = np.array([0, 3, 2, 0, 1, 2]), np.array([3, 5, 4, 0, 1, 2])
    np.testing.assert_array_equal(group_duplicates(6, src, dst), [0, 1, 2, 0, 2, 0])
    np.testing.assert_array_equal(group_duplicates(3, np.array([]), np.array([])), [0, 1, 2])
    # a long chain, listed back to front, still collapses onto row 0
    n = 50
    chain = group_duplicates(n, np.arange(n - 1, 0, -1), np.arange(n - 2, -1, -1))
    np.testing.assert_array_equal(chain, np.zeros(n))


def test_zero_distances_are_refused_not_floored():
    r = np.array([[0.0, 0.2, 0.3], [0.1, 0.2, 0.4]])
    for fn in (lambda: intrinsic_dimension(r), lambda: log_density(r, "kth_distance")):
        with pytest.raises(ValueError, match="duplicate points"):
            fn()


def test_k_plus_five_copies_share_one_prompts_mass():
    """k + 5 exact copies of one prompt among distinct ones: no underflow, and at alpha = 1 the copies together weigh
    exactly what the single prompt weighs without them (each gets 1/m of it); at alpha = 0.5 they weigh m^0.5 times."""
    k, copies = 10, 15
    x = _spread()
    single_id = 7
    with_copies = np.concatenate([x, np.repeat(x[single_id : single_id + 1], copies, axis=0)])
    ids = _ids(len(x)) + _ids(copies, "copy")
    members = np.r_[single_id, np.arange(len(x), len(x) + copies)]
    m = copies + 1
    for alpha in (1.0, 0.5):
        base = DensityIndex.build(
            None, _ids(len(x)), embeddings=x, k=k, alpha=alpha, max_weight_ratio=None, target_ess=None
        )
        dup = DensityIndex.build(
            None, ids, embeddings=with_copies, k=k, alpha=alpha, max_weight_ratio=None, target_ess=None
        )
        assert dup.metadata["n_distinct"] == len(x) and dup.summary()["duplicate_groups"] == 1
        assert (dup.duplicate_of[members] == single_id).all() and (dup.multiplicity[members] == m).all()
        assert (dup.knn_distances > 0).all()  # no zero distance: the group is one point of the index
        np.testing.assert_allclose(dup.weights[members], dup.weights[single_id])  # equal within the group
        assert dup.weights.min() / dup.weights.max() > 1e-12
        # Relative to any other prompt (whose neighbourhood the copies do not change): group mass = m^(1-alpha) x
        # the single prompt's weight.
        other = 0
        group_over_other = dup.weights[members].sum() / dup.weights[other]
        expected = m ** (1 - alpha) * base.weights[single_id] / base.weights[other]
        assert group_over_other == pytest.approx(expected, rel=1e-9)
        np.testing.assert_allclose(dup.log_density[members], base.log_density[single_id] + np.log(m), rtol=1e-12)


def test_near_duplicates_within_the_tolerance_merge():
    x = _spread()
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    near = x[3] + 0.1 * DEFAULT_DUPLICATE_TOLERANCE * np.eye(x.shape[1], dtype=np.float32)[0]
    far = x[3] + 10 * DEFAULT_DUPLICATE_TOLERANCE * np.eye(x.shape[1], dtype=np.float32)[0]
    index = DensityIndex.build(None, _ids(len(x) + 2), embeddings=np.vstack([x, near, far]), k=5)
    assert index.duplicate_of[len(x)] == 3 and index.duplicate_of[len(x) + 1] == len(x) + 1
    # A query equal to an indexed prompt takes that prompt's density; one just outside the tolerance does not.
    log_p, _ = index.query(embeddings=x[3:4])
    assert log_p[0] == index.log_density[3]


def test_too_few_distinct_prompts_is_a_clear_error():
    x = np.repeat(_spread()[:4], 5, axis=0)
    with pytest.raises(ValueError, match="only 4 distinct prompts"):
        DensityIndex.build(None, _ids(len(x)), embeddings=x, k=5)


def test_the_ratio_bound_tempers_alpha_and_reports_the_mass_it_moved():
    x = _spread()
    raw = DensityIndex.build(None, _ids(len(x)), embeddings=x, k=5, max_weight_ratio=None, target_ess=None)
    bounded = DensityIndex.build(None, _ids(len(x)), embeddings=x, k=5, target_ess=None)
    assert raw.summary()["ratio"] > DEFAULT_MAX_WEIGHT_RATIO  # the bound binds here
    s = bounded.summary()
    assert s["ratio"] == pytest.approx(DEFAULT_MAX_WEIGHT_RATIO, rel=1e-6)
    assert s["active_bounds"] == ["max_weight_ratio"] and 0 < s["alpha_effective"] < s["alpha"] == 1.0
    _, stats = bounded_log_weights(raw.log_density, 1.0, max_weight_ratio=1000.0)
    assert stats["mass_moved"] == pytest.approx(0.5 * np.abs(raw.weights - bounded.weights).sum())
    assert stats["mass_moved"] > 0 and s["bound_mass_moved"] == pytest.approx(stats["mass_moved"])
    # tempering keeps every prompt's place: the bounded weights are raw^(alpha_eff)
    np.testing.assert_allclose(np.log(bounded.weights / bounded.weights.max()),
                               s["alpha_effective"] * np.log(raw.weights / raw.weights.max()), atol=1e-9)  # fmt: skip
    sampler = DensitySampler.from_index(bounded, Dataset.from_dict({"prompt_id": bounded.prompt_ids}))
    summary = sampler.summary()
    assert summary["bound_mass_moved"] == pytest.approx(stats["mass_moved"])
    assert (summary["alpha_asked"], summary["alpha_effective"]) == (1.0, s["alpha_effective"])
    # the default adds the ESS target, met here by capping the heaviest prompts
    default = DensityIndex.build(None, _ids(len(x)), embeddings=x, k=5).summary()
    assert default["ess_fraction"] >= DEFAULT_TARGET_ESS * (1 - 1e-9) and "target_ess" in default["active_bounds"]


def _hh_prompts(path, last_turn: bool) -> list[str]:
    from density_rlhf.data.sources import hh_turns, split_hh_transcript

    prompts = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            prompt, _ = split_hh_transcript(json.loads(line)["chosen"])
            if not prompt.strip():
                continue
            turns = [m["content"] for m in hh_turns(prompt) if m["role"] == "user"]
            prompts.append(turns[-1] if last_turn else prompt)
    return list(dict.fromkeys(p for p in prompts if p.strip()))  # unique texts, as `prompt_table` gives


@pytest.fixture(scope="module")
def embedder():
    from sentence_transformers import SentenceTransformer

    from density_rlhf.embedding import resolve_embedder

    return SentenceTransformer(resolve_embedder(None), device="cpu")


@pytest.mark.parametrize("last_turn", [False, True], ids=["full_dialogue", "last_turn"])
def test_real_hh_prompts_under_the_default(hh_sample, embedder, last_turn):
    prompts = _hh_prompts(hh_sample, last_turn)
    # Duplicates as real datasets have them: exact copies under other ids, and case variants.
    dup_sources = [0, 1, 2]
    extra = [prompts[0]] * 12 + [prompts[1].upper(), prompts[1].lower()] + [prompts[2].swapcase()]
    texts = prompts + extra
    ids = [prompt_id(p) for p in prompts] + _ids(len(extra), "dup")
    index = DensityIndex.build(texts, ids, embedder=embedder, show_progress=False)
    raw = DensityIndex.build(
        texts, ids, embedder=embedder, show_progress=False, max_weight_ratio=None, target_ess=None
    )
    s = index.summary()
    assert s["ratio"] <= DEFAULT_MAX_WEIGHT_RATIO * (1 + 1e-9)
    assert raw.weights.min() / raw.weights.max() >= 1e-12  # nothing underflows even before clipping
    groups = {src: np.flatnonzero(index.duplicate_of == src) for src in dup_sources}
    assert [len(g) for g in groups.values()] == [13, 3, 2]
    for src, members in groups.items():
        np.testing.assert_allclose(index.weights[members], index.weights[src], rtol=1e-6)
        # at alpha = 1 the group's share is what one prompt at that place gets: m copies x (1/m of it)
        np.testing.assert_allclose(raw.log_density[members], raw.log_density[src])
        assert raw.multiplicity[src] == len(members)
    alone = DensityIndex.build(
        prompts, ids[: len(prompts)], embedder=embedder, show_progress=False, max_weight_ratio=None, target_ess=None
    )
    for src, members in groups.items():
        ratio_dup = raw.weights[members].sum() / raw.weights[5]
        assert ratio_dup == pytest.approx(alone.weights[src] / alone.weights[5], rel=1e-4)


def test_weights_report_files(tmp_path):
    pytest.importorskip("matplotlib")
    x = _spread()
    x = np.vstack([x, x[:1], x[:1]])
    texts = [f"prompt number {i}" for i in range(len(x))]
    index = DensityIndex.build(texts, _ids(len(x)), embeddings=x, k=5)
    saved = DensityIndex.load(index.save(tmp_path / "idx"), load_faiss=False)
    assert saved.prompts == texts and (saved.duplicate_of == index.duplicate_of).all()
    md = saved.report(tmp_path / "report", n_examples=20)
    for name in ("log_weight_hist.png", "bucket_mass.png", "prompt_map.png"):
        assert (tmp_path / "report" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads((tmp_path / "report" / "weights_report.json").read_text())
    assert len(data["rarest"]) == len(data["commonest"]) == 20
    assert data["rarest"][0]["weight"] == pytest.approx(index.weights.max())
    assert data["commonest"][0]["weight"] == pytest.approx(index.weights.min())
    assert sum(v["mass"] for v in data["bucket_shares"].values()) == pytest.approx(1.0)
    assert data["duplicate_groups"] == [
        {"size": 3, "member_weight": pytest.approx(index.weights[0]), "group_mass": pytest.approx(3 * index.weights[0]),
         "prompts": texts[:1] + texts[-2:]}
    ]  # fmt: skip
    text = md.read_text()
    assert "Duplicate groups merged: 1" in text and "ESS" in text and "prompt number" in text


def test_density_stage_writes_the_report(tiny_pipeline):
    report = tiny_pipeline / "density" / "report"
    assert (report / "weights_report.md").exists() and (report / "prompt_map.png").exists()
