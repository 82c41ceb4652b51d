"""The `cluster` estimator: k-means (or given groups) in the index, equal cluster mass at alpha = 1, save/load, the
sampler's draws, the density stage's `cluster_column`."""

import json

import numpy as np
import pytest
from datasets import Dataset
from scipy.stats import chisquare

from density_rlhf import DensityIndex, DensitySampler
from density_rlhf.clusters import default_n_clusters
from density_rlhf.estimators import cluster_log_density, log_density


SIZES = (300, 120, 40, 12)


def _blobs(seed=0, d=16, sizes=SIZES):
    """Well-separated blobs of the given sizes (k-means recovers them) and each point's blob."""
    rng = np.random.default_rng(seed)
    centres = 4 * np.eye(d)[: len(sizes)]
    x = np.concatenate([c + 0.3 * rng.normal(size=(n, d)) for c, n in zip(centres, sizes)]).astype(np.float32)
    return x, np.repeat(np.arange(len(sizes)), sizes)


def _ids(n):
    return [f"p{i:05d}" for i in range(n)]


def _unbounded(x, **kwargs):
    return DensityIndex.build(
        None, _ids(len(x)), embeddings=x, k=5, estimator="cluster", max_weight_ratio=None, target_ess=None, **kwargs
    )


def _same_partition(a, b):
    """The two labelings group the points alike (up to renaming the labels)."""
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def test_kmeans_finds_the_blobs_and_each_carries_equal_mass_at_alpha_one():
    x, blob = _blobs()
    index = _unbounded(x, n_clusters=len(SIZES))
    assert _same_partition(index.cluster_labels, blob)
    mass = np.bincount(index.cluster_labels, weights=index.weights)
    np.testing.assert_allclose(mass, 1 / len(SIZES), rtol=1e-12)
    # within a cluster every prompt weighs the same, and a smaller cluster's prompts weigh more
    for c in range(len(SIZES)):
        assert np.ptp(index.weights[index.cluster_labels == c]) == 0
    per_blob = [index.weights[blob == b][0] for b in range(len(SIZES))]
    assert per_blob == sorted(per_blob)
    assert index.summary()["n_clusters"] == len(SIZES) and index.metadata["cluster_source"] == "kmeans"


def test_alpha_sets_the_cluster_mass_as_size_to_the_one_minus_alpha():
    x, _ = _blobs()
    index = _unbounded(x, n_clusters=len(SIZES), alpha=0.5)
    sizes = np.bincount(index.cluster_labels)
    mass = np.bincount(index.cluster_labels, weights=index.weights)
    np.testing.assert_allclose(mass / mass.sum(), sizes**0.5 / (sizes**0.5).sum(), rtol=1e-12)
    # alpha = 0 is uniform over prompts
    flat = index.reweighted(alpha=0.0)
    np.testing.assert_allclose(flat.weights, 1 / len(x))


def test_given_labels_are_the_clusters_and_duplicates_count_in_their_cluster():
    x, blob = _blobs()
    x = np.concatenate([x, np.repeat(x[:1], 5, axis=0)])  # 5 copies of a point of blob 0
    names = [f"topic{b}" for b in blob] + ["topic0"] * 5
    index = _unbounded(x, cluster_labels=names)
    assert index.metadata["cluster_names"] == ["topic0", "topic1", "topic2", "topic3"]
    np.testing.assert_array_equal(np.bincount(index.cluster_labels), [SIZES[0] + 5, *SIZES[1:]])
    np.testing.assert_allclose(np.bincount(index.cluster_labels, weights=index.weights), 0.25, rtol=1e-12)


def test_save_and_load_keep_the_clusters_and_a_new_prompt_joins_its_nearest_cluster(tmp_path):
    x, blob = _blobs()
    index = _unbounded(x, n_clusters=len(SIZES))
    index.save(tmp_path / "index")
    loaded = DensityIndex.load(tmp_path / "index")
    np.testing.assert_array_equal(loaded.cluster_labels, index.cluster_labels)
    np.testing.assert_array_equal(loaded.cluster_centroids, index.cluster_centroids)
    np.testing.assert_array_equal(loaded.weights, index.weights)
    assert loaded.metadata["estimator"] == "cluster" and loaded.summary()["n_clusters"] == len(SIZES)
    # a new point near blob 3 takes blob 3's cluster size as its density, as its members do
    rng = np.random.default_rng(1)
    new = (4 * np.eye(16)[3] + 0.3 * rng.normal(size=16)).astype(np.float32)[None]
    log_p, _ = loaded.query(embeddings=new)
    assert log_p[0] == pytest.approx(np.log(SIZES[3]))
    # the cluster files are checksummed like the others
    labels = tmp_path / "index" / "cluster_labels.npy"
    np.save(labels, np.zeros(len(x), dtype=np.int64), allow_pickle=False)
    with pytest.raises(ValueError, match="cluster_labels.npy is missing or does not match its checksum"):
        DensityIndex.load(tmp_path / "index")


def test_draws_by_a_cluster_index_give_every_cluster_the_same_share():
    """Chi-square of the sampler's draws against equal cluster mass, with pairs per prompt varying and
    `per_prompt` pair weighting; the same draws do not fit mass proportional to cluster size."""
    x, _ = _blobs()
    index = _unbounded(x, n_clusters=len(SIZES))
    rng = np.random.default_rng(2)
    rows = np.repeat(np.arange(len(x)), rng.integers(1, 6, size=len(x)))
    dataset = Dataset.from_dict({"prompt_id": [index.prompt_ids[i] for i in rows]})
    n = 40_000
    sampler = DensitySampler.from_index(index, dataset, pair_weighting="per_prompt", num_samples=n, seed=4)
    draws = np.fromiter(sampler, dtype=np.int64)
    counts = np.bincount(index.cluster_labels[rows[draws]], minlength=len(SIZES))
    assert chisquare(counts, np.full(len(SIZES), n / len(SIZES))).pvalue > 1e-3
    by_size = np.bincount(index.cluster_labels) / len(x) * n
    assert chisquare(counts, by_size).pvalue < 1e-6


def test_reweighting_a_knn_index_to_clusters_leaves_the_original_alone():
    x, blob = _blobs()
    knn = DensityIndex.build(None, _ids(len(x)), embeddings=x, k=5)
    assert knn.cluster_labels is None and knn.summary()["n_clusters"] is None
    before = knn.weights.copy()
    clustered = knn.reweighted(estimator="cluster", max_weight_ratio=float("inf"), target_ess=0)
    assert knn.cluster_labels is None and np.array_equal(knn.weights, before)
    assert clustered.summary()["n_clusters"] == default_n_clusters(len(x)) == 22
    mass = np.bincount(clustered.cluster_labels, weights=clustered.weights)
    np.testing.assert_allclose(mass, 1 / 22, rtol=1e-12)
    # the same seed gives the same clusters
    again = knn.reweighted(estimator="cluster")
    np.testing.assert_array_equal(again.cluster_labels, clustered.cluster_labels)


def test_cluster_log_density_counts_members():
    np.testing.assert_allclose(cluster_log_density(np.array([0, 0, 1, 2, 2, 2])), np.log([2, 2, 1, 3, 3, 3]))
    with pytest.raises(ValueError, match="needs cluster_labels"):
        log_density(np.ones((3, 2)), "cluster")
    with pytest.raises(ValueError, match="integers >= 0"):
        cluster_log_density(np.array([0.5, 1.0]))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n_clusters": 4, "cluster_labels": ["a"] * 472}, "not both"),
        ({"n_clusters": 1}, "n_clusters must be an integer >= 2"),
        ({"n_clusters": 10_000}, "between 2 and the number of distinct prompts"),
        ({"n_clusters": 2.5}, "n_clusters must be an integer"),
        ({"cluster_labels": ["a", "b"]}, "2 cluster_labels for 472 prompts"),
    ],
)
def test_bad_cluster_settings_are_refused(kwargs, message):
    x, _ = _blobs()
    with pytest.raises(ValueError, match=message):
        _unbounded(x, **kwargs)


def test_the_density_stage_balances_a_dataset_column(tmp_path, tiny_pipeline):
    from density_rlhf.recipe_kit.recipe import RecipeError
    from density_rlhf.recipe_kit.stages import BuildDensityArguments, build_density

    data_dir = tiny_pipeline / "data"
    args = BuildDensityArguments(
        data_dir=str(data_dir),
        density_dir=str(tmp_path / "density"),
        estimator="cluster",
        cluster_column="topic",
        max_weight_ratio=None,
        target_ess=None,
        report=False,
        k=3,
    )
    index = build_density(args, across_processes=False)
    assert index.metadata["cluster_source"] == "labels" and len(index.metadata["cluster_names"]) == 12
    meta = json.loads((tmp_path / "density" / "metadata.json").read_text())
    assert meta["n_clusters"] == len(set(index.metadata["cluster_names"]))
    np.testing.assert_allclose(
        np.bincount(index.cluster_labels, weights=index.weights), 1 / meta["n_clusters"], rtol=1e-9
    )
    with pytest.raises(RecipeError, match="'nope' is not a column"):
        build_density(
            BuildDensityArguments(
                data_dir=str(data_dir), density_dir=str(tmp_path / "d2"), cluster_column="nope", report=False, k=3
            ),
            across_processes=False,
        )
    with pytest.raises(ValueError, match="not both"):
        BuildDensityArguments(n_clusters=3, cluster_column="topic")
