import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from scipy.stats import chisquare
from torch.utils.data import BatchSampler

from density_rlhf import DensityIndex, DensityRepeatSampler, DensitySampler
from density_rlhf.estimators import density_weights, effective_sample_size, intrinsic_dimension, log_density
from density_rlhf.row_weights import map_prompt_weights


def _clustered(n=600, d=16, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(6, d))
    centers *= 4 / np.linalg.norm(centers, axis=1, keepdims=True)  # equal norms: equal spread after normalization
    sizes = [300, 150, 80, 40, 20, 10][: len(centers)]
    points = np.concatenate([c + 0.3 * rng.normal(size=(s, d)) for c, s in zip(centers, sizes)])
    return points[:n].astype(np.float32), np.repeat(np.arange(6), sizes)[:n]


def _ids(n):
    return [f"p{i:05d}" for i in range(n)]


@pytest.fixture(scope="module")
def clustered_index():
    x, _ = _clustered()
    return DensityIndex.build(None, _ids(len(x)), embeddings=x, k=8)


def test_exact_neighbours_match_numpy_bruteforce():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 24)).astype(np.float32)
    index = DensityIndex.build(None, _ids(300), embeddings=x, k=7, index_type="flat")
    unit = x / np.linalg.norm(x, axis=1, keepdims=True)
    d = np.linalg.norm(unit[:, None, :] - unit[None, :, :], axis=-1)
    np.fill_diagonal(d, np.inf)
    expected = np.argsort(d, axis=1)[:, :7]
    np.testing.assert_array_equal(index.knn_indices, expected)
    np.testing.assert_allclose(index.knn_distances, np.take_along_axis(d, expected, axis=1), atol=1e-5)


def test_weights_follow_alpha_clip_and_mix(clustered_index):
    log_p = clustered_index.log_density
    uniform = density_weights(log_p, alpha=0.0)
    np.testing.assert_allclose(uniform, 1 / len(log_p))
    w1 = density_weights(log_p, alpha=1.0)
    assert np.isclose(w1.sum(), 1.0)
    # alpha = 1 is 1/density: weight ratios equal inverse density ratios.
    np.testing.assert_allclose(w1[0] / w1[1], np.exp(log_p[1] - log_p[0]), rtol=1e-9)
    clipped = density_weights(log_p, alpha=1.0, max_weight_ratio=5.0)
    assert clipped.max() / clipped.min() <= 5.0 + 1e-9
    mixed = density_weights(log_p, alpha=1.0, uniform_mix=0.5)
    assert mixed.min() >= 0.5 / len(log_p) - 1e-12
    assert effective_sample_size(uniform) == pytest.approx(len(log_p))


def test_sparse_clusters_get_higher_weight(clustered_index):
    _, labels = _clustered()
    means = [clustered_index.weights[labels == c].mean() for c in range(6)]
    assert means == sorted(means)  # smaller cluster -> lower density -> higher weight
    buckets = np.array(clustered_index.buckets)
    assert (buckets[labels == 5] == "rare").mean() > 0.8
    assert (buckets[labels == 0] == "common").mean() > (buckets[labels == 5] == "common").mean()


def test_intrinsic_dimension_of_a_plane():
    rng = np.random.default_rng(0)
    plane = np.zeros((3000, 10))
    plane[:, :2] = rng.uniform(size=(3000, 2))
    index = DensityIndex.build(None, _ids(3000), embeddings=plane + np.array([0, 0, 5] + [0] * 7), k=10)
    assert 1.6 < intrinsic_dimension(index.knn_distances) < 2.4


def test_summary_is_the_seeds_checklist(clustered_index):
    s = clustered_index.summary()
    assert s["n"] == 600 and s["k"] == 8
    assert s["ratio"] == pytest.approx(s["max_weight"] / s["min_weight"])
    assert s["ess"] == pytest.approx(1 / np.square(clustered_index.weights).sum())
    assert sum(s["buckets"].values()) == 600


def test_estimators_rank_alike():
    distances = np.sort(np.random.default_rng(0).uniform(0.1, 1.0, size=(50, 5)), axis=1)
    kth = log_density(distances, "kth_distance")
    intrinsic = log_density(distances, "intrinsic")
    np.testing.assert_array_equal(np.argsort(kth), np.argsort(intrinsic))
    with pytest.raises(ValueError, match="estimator"):
        log_density(distances, "gaussian")


def test_synthetic_world_auroc(default_world_index):
    from sklearn.metrics import roc_auc_score

    world, index = default_world_index
    rare = {pid for pid, r in zip(world["train"]["prompt_id"], world["train"]["is_rare"]) if r}
    y = [pid in rare for pid in index.prompt_ids]
    assert roc_auc_score(y, index.weights) >= 0.9
    assert index.metadata["embedder"] == "sentence-transformers/all-MiniLM-L6-v2" and index.metadata["dim"] == 384


@pytest.fixture(scope="module")
def default_world_index():
    from density_rlhf.data import prompt_table
    from density_rlhf.experiment.world import make_synthetic_world

    world = make_synthetic_world(0)
    table = prompt_table(world["train"])
    index = DensityIndex.build([r["prompt"] for r in table], [r["id"] for r in table], show_progress=False)
    return world, index


def test_density_sampling_raises_rare_fraction(default_world_index):
    world, index = default_world_index
    sampler = DensitySampler.from_index(index, world["train"], seed=0)
    is_rare = np.array(world["train"]["is_rare"])
    draws = np.fromiter(sampler, dtype=np.int64)
    assert is_rare[draws].mean() > 5 * is_rare.mean()
    assert set(sampler.row_buckets) <= {"rare", "mid", "common"}


@pytest.mark.parametrize("kind", ["random", "uniform"])
def test_chi_square_goodness_of_fit(kind):
    rng = np.random.default_rng(7)
    weights = rng.uniform(0.05, 1.0, size=40) if kind == "random" else np.ones(40)
    n = 100_000
    sampler = DensitySampler(weights, num_samples=n, seed=3)
    counts = np.bincount(np.fromiter(sampler, dtype=np.int64), minlength=40)
    expected = weights / weights.sum() * n
    assert chisquare(counts, expected).pvalue > 1e-3
    # The test has power: the same draws do not fit a different distribution.
    other = np.roll(expected, 1) if kind == "random" else expected * np.linspace(0.8, 1.2, 40)
    assert chisquare(counts, other / other.sum() * n).pvalue < 1e-6


def test_alpha_zero_index_samples_uniformly(clustered_index):
    flat = DensityIndex.build(None, clustered_index.prompt_ids, embeddings=clustered_index.embeddings, k=8, alpha=0.0)
    counts = np.bincount(np.fromiter(DensitySampler(flat.weights, 100_000, seed=1), dtype=np.int64), minlength=600)
    assert chisquare(counts).pvalue > 1e-3


def test_two_ranks_see_disjoint_shards_of_one_draw():
    from accelerate.data_loader import BatchSamplerShard

    sampler = DensitySampler(np.random.default_rng(0).uniform(size=97), num_samples=96, seed=5)
    single = list(BatchSampler(sampler, batch_size=4, drop_last=True))
    ranks = [list(BatchSamplerShard(BatchSampler(sampler, 4, True), num_processes=2, process_index=r)) for r in (0, 1)]
    assert ranks[0] == single[0::2] and ranks[1] == single[1::2]
    positions = [{(i, j) for i in range(r, len(single), 2) for j in range(4)} for r in (0, 1)]
    assert not positions[0] & positions[1]
    assert sorted(sum(ranks[0] + ranks[1], [])) == sorted(sum(single, []))


def test_epochs_and_resume_reproduce_the_order():
    weights = np.random.default_rng(0).uniform(size=50)
    sampler = DensitySampler(weights, seed=11)
    sampler.set_epoch(2)
    epoch2 = list(sampler)
    assert epoch2 == list(sampler)  # a pure function of (seed, epoch)
    sampler.set_epoch(3)
    assert list(sampler) != epoch2
    sampler.set_epoch(2)
    resumed = DensitySampler(weights, seed=999)
    resumed.load_state_dict(json.loads(json.dumps(sampler.state_dict())))
    assert list(resumed) == epoch2
    with pytest.raises(ValueError, match="changed since the checkpoint"):
        DensitySampler(weights[:-1]).load_state_dict(sampler.state_dict())


def test_resume_through_accelerate_skip_first_batches():
    from accelerate import skip_first_batches
    from torch.utils.data import DataLoader

    data = torch.arange(64)
    sampler = DensitySampler(np.linspace(1, 2, 64), seed=4)
    full = [b.tolist() for b in DataLoader(data, batch_size=8, sampler=sampler)]
    resumed = DensitySampler(np.linspace(1, 2, 64))
    resumed.load_state_dict(sampler.state_dict())
    rest = [b.tolist() for b in skip_first_batches(DataLoader(data, batch_size=8, sampler=resumed), 3)]
    assert rest == full[3:]


def test_repeat_sampler_matches_trl_under_uniform_weights():
    from trl.trainer.utils import RepeatSampler

    data = list(range(23))
    ours = DensityRepeatSampler(
        np.ones(23), mini_repeat_count=3, batch_size=4, repeat_count=2, seed=42, replacement=False
    )
    trl = RepeatSampler(data, mini_repeat_count=3, batch_size=4, repeat_count=2, shuffle=True, seed=42)
    assert list(ours) == list(trl)
    assert len(ours) == len(trl)


@pytest.mark.parametrize("replacement", [True, False])
def test_repeat_sampler_group_structure(replacement):
    weights = np.random.default_rng(0).uniform(0.1, 1, size=30)
    sampler = DensityRepeatSampler(
        weights, mini_repeat_count=4, batch_size=3, repeat_count=2, seed=1, replacement=replacement
    )
    seq = list(sampler)
    assert len(seq) == len(sampler) == 30 // 3 * 3 * 4 * 2
    block = 3 * 4
    drawn = []
    for start in range(0, len(seq), 2 * block):
        first, second = seq[start : start + block], seq[start + block : start + 2 * block]
        assert first == second  # each chunk repeats `repeat_count` times
        groups = [first[i : i + 4] for i in range(0, block, 4)]
        assert all(len(set(g)) == 1 for g in groups)  # each prompt `mini_repeat_count` times in a row
        drawn += [g[0] for g in groups]
    if not replacement:
        assert len(drawn) == len(set(drawn)) == 30  # a weighted permutation: every row exactly once


def test_weighted_repeat_sampler_prefers_heavy_rows():
    weights = np.array([10.0] + [1.0] * 99)
    sampler = DensityRepeatSampler(weights, mini_repeat_count=2, batch_size=1, seed=0, num_samples=20_000)
    firsts = np.array(list(sampler))[::2]
    assert abs((firsts == 0).mean() - 10 / 109) < 0.01


def test_per_prompt_weighting_splits_mass():
    row_ids = ["a", "a", "a", "b"]
    per_pair, _ = map_prompt_weights(row_ids, ["a", "b"], np.array([0.5, 0.5]))
    per_prompt, _ = map_prompt_weights(row_ids, ["a", "b"], np.array([0.5, 0.5]), pair_weighting="per_prompt")
    np.testing.assert_allclose(per_pair, [0.5, 0.5, 0.5, 0.5])
    np.testing.assert_allclose(per_prompt, [0.5 / 3, 0.5 / 3, 0.5 / 3, 0.5])


def test_missing_prompt_ids_error_or_counted():
    from datasets import Dataset

    index = DensityIndex.build(None, _ids(20), embeddings=np.random.default_rng(0).normal(size=(20, 8)), k=3)
    data = Dataset.from_dict({"prompt_id": _ids(18) + ["zz1", "zz2"]})
    with pytest.raises(ValueError, match=r"2 of 20 rows .*'zz1'"):
        DensitySampler.from_index(index, data)
    sampler = DensitySampler.from_index(index, data, missing="uniform")
    assert sampler.num_missing == 2 and sampler.summary()["rows_assigned"] == 18
    assert list(sampler.row_buckets[-2:]) == ["unknown", "unknown"]
    with pytest.raises(ValueError, match="no 'pid' column"):
        DensitySampler.from_index(index, data, prompt_id_column="pid")


@pytest.mark.parametrize(
    ("weights", "match"),
    [([1.0, np.nan], "NaN or infinite"), ([1.0, np.inf], "NaN or infinite"), ([1.0, -0.1], "negative"),
     ([0.0, 0.0], "all zero"), ([], "empty")],
)  # fmt: skip
def test_bad_weights(weights, match):
    with pytest.raises(ValueError, match=match):
        DensitySampler(weights)


def test_bad_index_inputs():
    x = np.random.default_rng(0).normal(size=(10, 4))
    with pytest.raises(ValueError, match="k=10 must be between 1"):
        DensityIndex.build(None, _ids(10), embeddings=x, k=10)
    with pytest.raises(ValueError, match="unique"):
        DensityIndex.build(None, ["a"] * 10, embeddings=x, k=3)
    with pytest.raises(ValueError, match="shape"):
        DensityIndex.build(None, _ids(9), embeddings=x, k=3)
    x[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        DensityIndex.build(None, _ids(10), embeddings=x, k=3)


def test_artifacts_round_trip_and_checks(tmp_path, clustered_index):
    path = clustered_index.save(tmp_path / "idx")
    loaded = DensityIndex.load(path)
    assert loaded.prompt_ids == clustered_index.prompt_ids and loaded.buckets == clustered_index.buckets
    np.testing.assert_array_equal(loaded.weights, clustered_index.weights)
    np.testing.assert_array_equal(loaded.embeddings, clustered_index.embeddings)
    assert loaded.faiss_index.ntotal == 600
    meta = json.loads((path / "metadata.json").read_text())
    assert {"embedder", "dim", "k", "alpha", "estimator", "n", "library_version", "files"} <= set(meta)
    assert set(meta["files"]) == {p.name for p in path.iterdir()} - {"metadata.json"}
    # Saving over an existing index replaces it atomically and leaves no temporary directories behind.
    clustered_index.save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]
    with pytest.raises(ValueError, match="embedder"):
        DensityIndex.load(path, embedder="sentence-transformers/all-mpnet-base-v2")
    with pytest.raises(ValueError, match="dimension"):
        DensityIndex.load(path, dim=384)
    with pytest.raises(ValueError, match="not in the index"):
        DensityIndex.load(path, prompt_ids=["nope"])


@pytest.mark.parametrize("name", ["knn_distances.npy", "duplicate_of.npy", "prompt_ids.json", "index.faiss"])
@pytest.mark.parametrize("damage", ["tamper", "truncate", "delete"])
def test_damaged_artifacts_are_refused(tmp_path, clustered_index, damage, name):
    path = clustered_index.save(tmp_path / "idx")
    assert not (path / "weights.npy").exists() and not (path / "log_density.npy").exists()  # derived, not saved
    target = path / name
    if damage == "tamper":
        data = bytearray(target.read_bytes())
        data[-1] ^= 0xFF
        target.write_bytes(bytes(data))
    elif damage == "truncate":
        target.write_bytes(target.read_bytes()[:40])
    else:
        target.unlink()
    with pytest.raises(ValueError, match=f"{name}.*checksum"):
        DensityIndex.load(path)


def test_an_edited_or_broken_metadata_file_is_refused_by_name(tmp_path, clustered_index):
    path = clustered_index.save(tmp_path / "idx")
    meta = path / "metadata.json"
    original = meta.read_text()
    meta.write_text(original.replace('"alpha": 1.0', '"alpha": 0.5', 1))
    with pytest.raises(ValueError, match="metadata.json does not match its checksum"):
        DensityIndex.load(path)
    meta.write_text(original[:-20])
    with pytest.raises(ValueError, match="metadata.json is not valid JSON"):
        DensityIndex.load(path)
    meta.write_text(original)
    assert DensityIndex.load(path).metadata["alpha"] == 1.0


def test_push_to_hub_at_the_api_boundary(monkeypatch, clustered_index):
    import huggingface_hub

    calls = {}

    def create_repo(self, repo_id, **kwargs):
        calls["create"] = (repo_id, kwargs)

    def upload_folder(self, *, repo_id, folder_path, repo_type, commit_message):
        from pathlib import Path

        calls["upload"] = (repo_id, repo_type, sorted(p.name for p in Path(folder_path).iterdir()))
        calls["card"] = (Path(folder_path) / "README.md").read_text()
        return "https://hub/commit/1"

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    assert clustered_index.push_to_hub("me/idx") == "https://hub/commit/1"
    assert calls["create"] == ("me/idx", {"repo_type": "dataset", "private": None, "exist_ok": True})
    assert calls["upload"][1] == "dataset" and {"metadata.json", "knn_distances.npy", "README.md"} <= set(
        calls["upload"][2]
    )
    assert "density-rlhf" in calls["card"] and "ess" in calls["card"]


def test_sampler_import_is_light():
    code = (
        "import sys; from density_rlhf import DensitySampler; "
        "bad = [m for m in ('sentence_transformers', 'faiss', 'trl', 'density_rlhf.reward_trainer') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("index_type", ["ivf", "hnsw"])
def test_approximate_indexes_agree_with_exact(index_type):
    from scipy.stats import spearmanr

    x, _ = _clustered(n=600)
    exact = DensityIndex.build(None, _ids(600), embeddings=x, k=8, index_type="flat")
    approx = DensityIndex.build(None, _ids(600), embeddings=x, k=8, index_type=index_type, ivf_nlist=16, ivf_nprobe=4)
    assert (approx.knn_indices >= 0).all()
    recall = np.mean((approx.knn_indices[:, :, None] == exact.knn_indices[:, None, :]).any(-1))
    assert recall > 0.9
    assert spearmanr(exact.weights, approx.weights).statistic > 0.95


def test_query_buckets_new_prompts_consistently(clustered_index):
    # Points from the sparsest cluster, not in the index, land in the rare bucket; the densest in common.
    x, labels = _clustered(seed=0)
    rng = np.random.default_rng(5)
    sparse = x[labels == 5][:5] + 0.01 * rng.normal(size=(5, x.shape[1])).astype(np.float32)
    dense = x[labels == 0][:5] + 0.01 * rng.normal(size=(5, x.shape[1])).astype(np.float32)
    _, sparse_buckets = clustered_index.query(embeddings=sparse)
    log_p, dense_buckets = clustered_index.query(embeddings=dense)
    assert sparse_buckets.count("rare") >= 4 and "rare" not in dense_buckets
    with pytest.raises(ValueError, match="precomputed embeddings"):
        clustered_index.query(["a prompt"])
