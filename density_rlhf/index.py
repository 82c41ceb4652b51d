"""`DensityIndex`: prompt embeddings, a FAISS kNN index over the distinct ones, density estimates and weights.

The pieces live in their own modules: the estimators, the duplicate rule, the weighting and the buckets are pure
functions in `density_rlhf.estimators`; embedding in `density_rlhf.embedding`; FAISS search in `density_rlhf.knn`;
the saved form (checksums, Hub) in `density_rlhf.index_files`. This class ties them together.
"""

import copy
import logging
import numbers
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .clusters import centroids_of, default_n_clusters, kmeans, labels_from_values, nearest_centroid
from .embedding import DEFAULT_EMBEDDER, embed_prompts
from .estimators import (
    BUCKETS,
    DEFAULT_DUPLICATE_TOLERANCE,
    DEFAULT_MAX_WEIGHT_RATIO,
    DEFAULT_TARGET_ESS,
    ESTIMATORS,
    assign_buckets,
    bounded_weights,
    bucket_thresholds,
    effective_sample_size,
    intrinsic_dimension,
    log_density,
    normalize_bounds,
)
from .index_files import index_card, push_folder_to_hub, read_index_files, write_index_files
from .knn import INDEX_TYPES, drop_self_matches, find_duplicates, knn_search, make_faiss_index
from .prompts import prompt_texts, unique_prompts
from .version import __version__


__all__ = ["BUCKETS", "DEFAULT_EMBEDDER", "INDEX_TYPES", "DensityIndex", "drop_self_matches", "embed_prompts"]


logger = logging.getLogger(__name__)


class DensityIndex:
    """Density estimates and sampling weights for a set of prompts.

    Build one with `DensityIndex.build(...)` or load one with `DensityIndex.load(dir)`. `prompt_ids`, `weights`,
    `log_density`, `buckets`, `duplicate_of` and `multiplicity` are aligned: entry i describes prompt `prompt_ids[i]`.
    Near-identical prompts form duplicate groups (`duplicate_of[i]` is the group's first row); the FAISS index holds
    one point per group (see `density_rlhf.estimators`). `cluster_labels` (with `cluster_centroids`) holds each
    prompt's cluster once the `cluster` estimator has been built or asked for, else `None`.
    """

    def __init__(
        self,
        prompt_ids: list[str],
        embeddings: np.ndarray,
        knn_distances: np.ndarray,
        knn_indices: np.ndarray,
        metadata: dict[str, Any],
        faiss_index=None,
        duplicate_of: np.ndarray | None = None,
        prompts: list[str] | None = None,
        cluster_labels: np.ndarray | None = None,
        cluster_centroids: np.ndarray | None = None,
    ):
        self.prompt_ids = list(prompt_ids)
        self.embeddings = embeddings
        self.knn_distances = knn_distances
        self.knn_indices = knn_indices
        self.metadata = metadata
        self.faiss_index = faiss_index
        self.prompts = prompts
        n = len(self.prompt_ids)
        self.duplicate_of = np.arange(n) if duplicate_of is None else np.asarray(duplicate_of, dtype=np.int64)
        if self.duplicate_of.shape != (n,) or (self.duplicate_of > np.arange(n)).any():
            raise ValueError("duplicate_of must give each prompt the first row of its group (<= its own row).")
        self.multiplicity = np.bincount(self.duplicate_of, minlength=n)[self.duplicate_of]
        self.distinct_rows = np.flatnonzero(self.duplicate_of == np.arange(n))  # FAISS id j is prompt distinct_rows[j]
        if (cluster_labels is None) != (cluster_centroids is None):
            raise ValueError("cluster_labels and cluster_centroids come together: pass both or neither.")
        self.cluster_labels = None if cluster_labels is None else np.asarray(cluster_labels, dtype=np.int64)
        self.cluster_centroids = cluster_centroids
        if self.cluster_labels is not None and (
            self.cluster_labels.shape != (n,)
            or (self.cluster_labels < 0).any()
            or self.cluster_labels.max() >= len(cluster_centroids)
        ):
            raise ValueError(f"cluster_labels must give each of the {n} prompts a centroid row.")
        metadata.setdefault("target_ess", None)  # indexes saved before the ESS bound existed have none
        self.reweight(
            alpha=metadata["alpha"],
            estimator=metadata["estimator"],
            max_weight_ratio=metadata["max_weight_ratio"],
            target_ess=metadata["target_ess"],
            uniform_mix=metadata["uniform_mix"],
            bucket_quantiles=tuple(metadata["bucket_quantiles"]),
        )

    @classmethod
    def build(
        cls,
        prompts: Sequence[str] | None,
        prompt_ids: Sequence[str],
        *,
        embedder: str | None = None,
        embeddings: np.ndarray | None = None,
        k: int = 10,
        alpha: float = 1.0,
        estimator: str = "intrinsic",
        max_weight_ratio: float | None = DEFAULT_MAX_WEIGHT_RATIO,
        target_ess: float | None = DEFAULT_TARGET_ESS,
        uniform_mix: float = 0.0,
        duplicate_tolerance: float = DEFAULT_DUPLICATE_TOLERANCE,
        bucket_quantiles: tuple[float, float] = (0.2, 0.8),
        index_type: str = "auto",
        exact_max_size: int = 50_000,
        hnsw_m: int = 32,
        hnsw_ef_construction: int = 80,
        hnsw_ef_search: int = 96,
        ivf_nlist: int | None = None,
        ivf_nprobe: int | None = None,
        n_clusters: int | None = None,
        cluster_labels: Sequence | None = None,
        use_gpu: bool | None = None,
        batch_size: int = 64,
        device: str | None = None,
        show_progress: bool = True,
        seed: int = 0,
    ) -> "DensityIndex":
        """Embed unique prompts (unless `embeddings` are given), merge near-duplicates, search kNN with FAISS.

        Args:
            prompts: prompt texts aligned with `prompt_ids` (may be `None` when `embeddings` is given); kept for
                `report`.
            prompt_ids: unique ids, e.g. `density_rlhf.prompt_id(prompt)`.
            embedder: sentence-transformers name or path; default the offline all-MiniLM-L6-v2.
            embeddings: precomputed (N, d) embeddings; they are L2-normalized here.
            k: distinct neighbours per prompt (self and its duplicates excluded); must be < the distinct prompts.
            alpha: weights ∝ density^-alpha (0 uniform, 1 inverse density).
            estimator: `intrinsic`, `mean_distance`, `kth_distance` (kNN) or `cluster` (cluster size; see
                `density_rlhf.estimators`).
            max_weight_ratio: max/min <= this (default 1000), by tempering alpha; `None` for no bound.
            target_ess: ESS >= this fraction of N (default 0.3), by capping the heaviest weights; `None` for no
                bound. With both bounds `None` the weights are the raw density^-alpha.
            uniform_mix: mix the weights with uniform, w = (1-eps) w + eps/N.
            duplicate_tolerance: embeddings closer than this (Euclidean, unit vectors) are one duplicate group.
            bucket_quantiles: density quantiles splitting `rare` / `mid` / `common`.
            index_type: `auto` (flat up to `exact_max_size`, IVF above), `flat`, `hnsw` or `ivf`.
            n_clusters: k-means clusters for the `cluster` estimator (default `density_rlhf.clusters.
                default_n_clusters`, round(sqrt(distinct prompts))); giving it also clusters under a kNN estimator.
            cluster_labels: a group per prompt (any hashable, e.g. a topic) used as the clusters instead of k-means.
            use_gpu: `None` uses faiss-gpu when GPUs are visible.
        """
        prompt_ids = list(prompt_ids)
        if len(set(prompt_ids)) != len(prompt_ids):
            raise ValueError(
                "prompt_ids must be unique: build the index over distinct prompts (`DensityIndex.from_dataset` or "
                "`density_rlhf.unique_prompts` finds them)."
            )
        if prompts is not None:
            prompts = prompt_texts(prompts)
            if len(prompts) != len(prompt_ids):
                raise ValueError(f"{len(prompts)} prompts for {len(prompt_ids)} prompt_ids: pass them aligned.")
        n = len(prompt_ids)
        check_build_arguments(
            n,
            k=k,
            alpha=alpha,
            estimator=estimator,
            max_weight_ratio=max_weight_ratio,
            target_ess=target_ess,
            uniform_mix=uniform_mix,
            duplicate_tolerance=duplicate_tolerance,
            bucket_quantiles=bucket_quantiles,
            n_clusters=n_clusters,
            cluster_labels=cluster_labels,
        )
        if embeddings is None:
            if prompts is None:
                raise ValueError("pass `prompts` aligned with `prompt_ids`, or precomputed `embeddings`.")
            embeddings = embed_prompts(
                prompts, embedder, batch_size=batch_size, device=device, show_progress=show_progress
            )
            embedder_name = embedder or DEFAULT_EMBEDDER
        else:
            embeddings = np.asarray(embeddings, dtype=np.float32)
            embedder_name = embedder or "precomputed"
        if embeddings.ndim != 2 or embeddings.shape[0] != len(prompt_ids):
            raise ValueError(f"embeddings must be (N={len(prompt_ids)}, d), got shape {embeddings.shape}.")
        if not np.isfinite(embeddings).all():
            raise ValueError("embeddings contain NaN or infinite values.")
        if cluster_labels is not None:
            cluster_labels = list(cluster_labels)
        norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
        if (norms == 0).any():
            raise ValueError("embeddings contain all-zero rows; they have no direction to normalize.")
        embeddings = np.ascontiguousarray(embeddings / norms, dtype=np.float32)
        index_kwargs = dict(
            index_type=index_type,
            exact_max_size=exact_max_size,
            hnsw_m=hnsw_m,
            hnsw_ef_construction=hnsw_ef_construction,
            hnsw_ef_search=hnsw_ef_search,
            ivf_nlist=ivf_nlist,
            ivf_nprobe=ivf_nprobe,
            use_gpu=use_gpu,
            seed=seed,
        )
        index = make_faiss_index(embeddings, **index_kwargs)
        duplicate_of = find_duplicates(index, embeddings, duplicate_tolerance)
        distinct = np.flatnonzero(duplicate_of == np.arange(n))
        if len(distinct) <= k:
            raise ValueError(
                f"only {len(distinct)} distinct prompts (the other {n - len(distinct)} are duplicates within "
                f"duplicate_tolerance={duplicate_tolerance}); k={k} must be smaller: lower k or add prompts."
            )
        if len(distinct) < n:  # the searched index holds one point per duplicate group
            index = make_faiss_index(embeddings[distinct], **index_kwargs)
        distances, neighbours = knn_search(index, embeddings[distinct], k)
        group = np.searchsorted(distinct, duplicate_of)  # row -> its group's position among the distinct rows
        clusters, cluster_meta = None, {}
        if cluster_labels is not None:
            labels, names = labels_from_values(cluster_labels)
            clusters = (labels, centroids_of(embeddings, labels, len(names)))
            cluster_meta = {"n_clusters": len(names), "cluster_source": "labels", "cluster_names": names}
        elif estimator == "cluster" or n_clusters is not None:
            clusters, cluster_meta = _kmeans_clusters(embeddings, distinct, group, n_clusters, seed, use_gpu)
        metadata = {
            "embedder": embedder_name,
            "dim": int(embeddings.shape[1]),
            "k": k,
            "alpha": alpha,
            "estimator": estimator,
            "max_weight_ratio": max_weight_ratio,
            "target_ess": target_ess,
            "uniform_mix": uniform_mix,
            "duplicate_tolerance": duplicate_tolerance,
            "bucket_quantiles": list(bucket_quantiles),
            "index_type": type(index).__name__,
            "n": n,
            "n_distinct": int(len(distinct)),
            "library_version": __version__,
            "seed": seed,
            **cluster_meta,
        }
        built = cls(
            prompt_ids,
            embeddings,
            distances[group],
            distinct[neighbours][group],
            metadata,
            faiss_index=index,
            duplicate_of=duplicate_of,
            prompts=prompts,
            cluster_labels=None if clusters is None else clusters[0],
            cluster_centroids=None if clusters is None else clusters[1],
        )
        if prompts is not None and embedder_name == DEFAULT_EMBEDDER:
            warn_non_english(prompts, built.weights)
        return built

    @classmethod
    def from_dataset(
        cls,
        dataset: Any,
        prompt_column: str = "prompt",
        prompt_id_column: str = "prompt_id",
        *,
        turns: str = "last_user",
        **build_kwargs,
    ) -> "DensityIndex":
        """`build` over the distinct prompts of a dataset: strings or TRL conversational prompts (message lists).

        Each distinct prompt id is indexed once, with the text of its first row (`density_rlhf.prompt_text(prompt,
        turns)`). The ids are the dataset's `prompt_id_column` when it has one, else `prompt_id(prompt, turns)`, which
        is what `dataset.map(lambda x: {"prompt_id": prompt_id(x["prompt"])})` adds. `build_kwargs` go to `build`.
        """

        columns = getattr(dataset, "column_names", None) or []
        if prompt_column not in columns:
            raise ValueError(f"the dataset has no {prompt_column!r} column (columns: {columns}); set prompt_column.")
        if prompt_id_column in columns:
            first: dict[str, Any] = {}
            for pid, prompt in zip(dataset[prompt_id_column], dataset[prompt_column]):
                first.setdefault(pid, prompt)
            texts, ids = prompt_texts(list(first.values()), turns), list(first)
        else:
            texts, ids = unique_prompts(dataset[prompt_column], turns)
        return cls.build(texts, ids, **build_kwargs)

    def reweight(
        self,
        *,
        alpha: float | None = None,
        estimator: str | None = None,
        max_weight_ratio: float | None = None,
        target_ess: float | None = None,
        uniform_mix: float | None = None,
        bucket_quantiles: tuple[float, float] | None = None,
    ) -> "DensityIndex":
        """Recompute density, weights and buckets from the stored kNN distances (no new search), in place.

        `None` keeps the current value; `max_weight_ratio=inf` or `target_ess=0` lifts that bound. Every argument is
        validated before anything changes, so a `ValueError` leaves the index as it was. Use `reweighted` for a
        copy. `estimator="cluster"` on an index without clusters runs k-means first (`n_clusters` of `build`'s
        default, the index's seed).
        """
        meta = self.metadata
        alpha = meta["alpha"] if alpha is None else alpha
        estimator = meta["estimator"] if estimator is None else estimator
        max_weight_ratio, target_ess = normalize_bounds(
            meta["max_weight_ratio"] if max_weight_ratio is None else max_weight_ratio,
            meta["target_ess"] if target_ess is None else target_ess,
        )
        uniform_mix = meta["uniform_mix"] if uniform_mix is None else uniform_mix
        quantiles = tuple(meta["bucket_quantiles"] if bucket_quantiles is None else bucket_quantiles)
        _weighting(alpha, estimator, max_weight_ratio, target_ess, uniform_mix, quantiles)
        d_hat = intrinsic_dimension(self.knn_distances[self.distinct_rows]) if estimator == "intrinsic" else None
        clusters, cluster_meta = (self.cluster_labels, self.cluster_centroids), {}
        if estimator == "cluster" and self.cluster_labels is None:
            group = np.searchsorted(self.distinct_rows, self.duplicate_of)
            clusters, cluster_meta = _kmeans_clusters(
                self.embeddings, self.distinct_rows, group, None, meta.get("seed", 0), None
            )
        log_p = log_density(
            self.knn_distances,
            estimator,
            multiplicity=self.multiplicity,
            intrinsic_dim=d_hat,
            cluster_labels=clusters[0],
        )
        weights, stats = bounded_weights(
            log_p, alpha, max_weight_ratio=max_weight_ratio, target_ess=target_ess, uniform_mix=uniform_mix
        )
        thresholds = bucket_thresholds(log_p, quantiles)
        buckets = assign_buckets(log_p, thresholds)
        # nothing above can fail once the arguments are valid; from here on the index changes
        meta.update(
            alpha=alpha,
            estimator=estimator,
            max_weight_ratio=max_weight_ratio,
            target_ess=target_ess,
            uniform_mix=uniform_mix,
            bucket_quantiles=list(quantiles),
            bucket_thresholds=thresholds,
        )
        meta.pop("intrinsic_dim", None)
        if d_hat is not None:  # estimated once per distinct point, not once per copy
            meta["intrinsic_dim"] = d_hat
        meta.update(cluster_meta)
        self.cluster_labels, self.cluster_centroids = clusters
        self.log_density, self.weights, self.bound_stats, self.buckets = log_p, weights, stats, buckets
        return self

    def reweighted(self, **overrides) -> "DensityIndex":
        """A copy reweighted by `overrides` (the arguments of `reweight`); this index is left as it is.

        The copy shares the read-only embeddings, kNN arrays and FAISS index with this one.
        """
        new = copy.copy(self)
        new.metadata = copy.deepcopy(self.metadata)
        return new.reweight(**overrides)

    def query(
        self,
        prompts: Sequence[str] | None = None,
        *,
        embeddings: np.ndarray | None = None,
        batch_size: int = 64,
        show_progress: bool = False,
    ) -> tuple[np.ndarray, list[str]]:
        """Log density and bucket of new prompts (e.g. a held-out split) against the indexed ones.

        The new prompts are embedded with the index's embedder, their k nearest distinct indexed prompts are searched
        and the index's estimator and bucket thresholds are applied, so buckets mean the same thing on every split. A
        prompt within `duplicate_tolerance` of an indexed one takes that prompt's density. Under the `cluster`
        estimator a new prompt joins its nearest centroid's cluster and takes that cluster's density.
        """
        if self.faiss_index is None:
            raise ValueError("this index was loaded with load_faiss=False; reload it with the FAISS index to query.")
        if embeddings is None:
            if self.metadata["embedder"] == "precomputed":
                raise ValueError("the index was built from precomputed embeddings: pass `embeddings` to query.")
            embeddings = embed_prompts(
                prompt_texts(prompts), self.metadata["embedder"], batch_size=batch_size, show_progress=show_progress
            )
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2 or embeddings.shape[1] != self.metadata["dim"]:
            raise ValueError(f"query embeddings must be (n, {self.metadata['dim']}), got {embeddings.shape}.")
        norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
        if not np.isfinite(embeddings).all() or (norms == 0).any():
            raise ValueError("query embeddings contain NaN, infinite or all-zero rows.")
        embeddings = np.ascontiguousarray(embeddings / norms)
        d2, hits = self.faiss_index.search(embeddings, self.metadata["k"])
        distances = np.sqrt(np.maximum(d2, 0.0)).astype(np.float64)
        known = distances[:, 0] <= self.metadata.get("duplicate_tolerance", 0.0)
        log_p = np.empty(len(embeddings))
        log_p[known] = self.log_density[self.distinct_rows[hits[known, 0]]]
        if (~known).any() and self.metadata["estimator"] == "cluster":
            sizes = np.bincount(self.cluster_labels, minlength=len(self.cluster_centroids))
            log_p[~known] = np.log(sizes[nearest_centroid(embeddings[~known], self.cluster_centroids)])
        elif (~known).any():
            log_p[~known] = log_density(
                distances[~known], self.metadata["estimator"], intrinsic_dim=self.metadata.get("intrinsic_dim")
            )
        return log_p, assign_buckets(log_p, tuple(self.metadata["bucket_thresholds"]))

    def buckets_for(self, prompt_ids: Sequence[str], prompts: Sequence[str] | None = None) -> list[str]:
        """Bucket of each prompt: stored for indexed prompt ids, queried (needs `prompts`) for the others.

        Each unknown prompt id is embedded once, however many rows share it.
        """
        buckets = self.bucket_by_prompt_id
        unknown = {pid: i for i, pid in enumerate(prompt_ids) if pid not in buckets}  # first row of each new id
        if unknown:
            if prompts is None:
                raise ValueError(
                    f"{len(unknown)} prompt ids are not in the index; pass their `prompts` to query them."
                )
            logger.info(
                "embedding %d prompts the density index does not know, to place them in its buckets", len(unknown)
            )
            _, queried = self.query([prompts[i] for i in unknown.values()], show_progress=True)
            buckets.update(zip(unknown, queried))
        return [buckets[pid] for pid in prompt_ids]

    def __len__(self) -> int:
        return len(self.prompt_ids)

    def report(self, out_dir: str | Path, n_examples: int = 20) -> Path:
        """Write the weights report (PNGs, markdown, JSON) into `out_dir`; see `density_rlhf.weights_report`."""
        from .weights_report import ReportInput, write_weights_report

        view = ReportInput(
            weights=self.weights,
            buckets=self.buckets,
            prompt_ids=self.prompt_ids,
            texts=self.prompts or self.prompt_ids,
            duplicate_of=self.duplicate_of,
            embeddings=self.embeddings,
            summary=self.summary(),
        )
        return write_weights_report(view, out_dir, n_examples)

    @property
    def bucket_by_prompt_id(self) -> dict[str, str]:
        return dict(zip(self.prompt_ids, self.buckets))

    def summary(self) -> dict[str, Any]:
        """The weights in numbers: size, spread, ESS, the bounds and how much they changed the raw weights."""
        w, b = self.weights, self.bound_stats
        return {
            "n": len(self),
            "k": self.metadata["k"],
            "alpha": self.metadata["alpha"],
            "alpha_effective": b["alpha_effective"],
            "estimator": self.metadata["estimator"],
            "embedder": self.metadata["embedder"],
            "min_weight": float(w.min()),
            "max_weight": float(w.max()),
            "ratio": float(w.max() / w.min()),
            "ess": effective_sample_size(w),
            "ess_fraction": effective_sample_size(w) / len(w),
            "max_weight_ratio": self.metadata["max_weight_ratio"],
            "target_ess": self.metadata["target_ess"],
            "active_bounds": b["active_bounds"],
            "raw_ratio": b["raw_ratio"],
            "capped_fraction": b["capped_fraction"],
            "bound_mass_moved": b["mass_moved"],
            "distinct": len(self.distinct_rows),
            "duplicate_groups": int((np.bincount(self.duplicate_of) > 1).sum()),
            "n_clusters": None if self.cluster_centroids is None else len(self.cluster_centroids),
            "buckets": {b: self.buckets.count(b) for b in BUCKETS},
        }

    def check_compatible(
        self, *, embedder: str | None = None, dim: int | None = None, prompt_ids: Sequence[str] | None = None
    ) -> None:
        """Raise `ValueError` if this index was built with another embedder, dimension or set of prompt ids."""
        if embedder is not None and embedder != self.metadata["embedder"]:
            raise ValueError(
                f"index was built with embedder {self.metadata['embedder']!r}, not {embedder!r}; rebuild it with "
                "`recipes/build_density.py --embedder ...`."
            )
        if dim is not None and dim != self.metadata["dim"]:
            raise ValueError(f"index has embedding dimension {self.metadata['dim']}, not {dim}.")
        if prompt_ids is not None:
            missing = sorted(set(prompt_ids) - set(self.prompt_ids))
            if missing:
                raise ValueError(
                    f"{len(missing)} prompt ids are not in the index (e.g. {missing[:3]}); rebuild the index on this "
                    "dataset's prompts."
                )

    def save(self, directory: str | Path) -> Path:
        """Write the index atomically to `directory` (`density_rlhf.index_files`)."""
        arrays = {
            "embeddings": self.embeddings,
            "knn_distances": self.knn_distances,
            "knn_indices": self.knn_indices,
            "duplicate_of": self.duplicate_of,
            "cluster_labels": self.cluster_labels,
            "cluster_centroids": self.cluster_centroids,
        }
        return write_index_files(
            directory,
            arrays=arrays,
            prompt_ids=self.prompt_ids,
            prompts=self.prompts,
            faiss_index=self.faiss_index,
            metadata=self.metadata,
            summary=self.summary(),
        )

    @classmethod
    def load(
        cls,
        directory: str | Path,
        *,
        embedder: str | None = None,
        dim: int | None = None,
        prompt_ids: Sequence[str] | None = None,
        load_faiss: bool = True,
    ) -> "DensityIndex":
        """Load and verify (sha256 of every file) an index written by `save`; optional compatibility checks."""
        files = read_index_files(directory, load_faiss=load_faiss)
        arrays = files["arrays"]
        index = cls(
            files["prompt_ids"],
            arrays["embeddings"],
            arrays["knn_distances"],
            arrays["knn_indices"],
            files["metadata"],
            files["faiss_index"],
            duplicate_of=arrays["duplicate_of"],
            prompts=files["prompts"],
            cluster_labels=arrays.get("cluster_labels"),
            cluster_centroids=arrays.get("cluster_centroids"),
        )
        index.check_compatible(embedder=embedder, dim=dim, prompt_ids=prompt_ids)
        return index

    def push_to_hub(self, repo_id: str, *, private: bool | None = None, commit_message: str | None = None) -> str:
        """Upload the saved index as a Hub dataset repo with a small card. The token comes from the environment."""
        return push_folder_to_hub(
            self.save, self.model_card(repo_id), repo_id, private=private, commit_message=commit_message
        )

    def model_card(self, repo_id: str) -> str:
        return index_card(self.summary(), repo_id)


def _kmeans_clusters(
    embeddings: np.ndarray,
    distinct: np.ndarray,
    group: np.ndarray,
    n_clusters: int | None,
    seed: int,
    use_gpu: bool | None,
) -> tuple[tuple[np.ndarray, np.ndarray], dict[str, Any]]:
    """k-means over the distinct prompts (a duplicate group is one point); every copy takes its group's cluster."""
    n_clusters = default_n_clusters(len(distinct)) if n_clusters is None else n_clusters
    labels, centroids = kmeans(embeddings[distinct], n_clusters, seed=seed, use_gpu=use_gpu)
    return (labels[group], centroids), {"n_clusters": n_clusters, "cluster_source": "kmeans"}


def _weighting(
    alpha: float,
    estimator: str,
    max_weight_ratio: float | None,
    target_ess: float | None,
    uniform_mix: float,
    bucket_quantiles: Sequence[float],
) -> None:
    """`ValueError` for a weighting `DensityIndex.reweight` cannot apply."""
    if not isinstance(alpha, numbers.Real) or not np.isfinite(alpha) or alpha < 0:
        raise ValueError(f"alpha must be a finite number >= 0, got {alpha}.")
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}.")
    if not isinstance(uniform_mix, numbers.Real) or not 0.0 <= uniform_mix <= 1.0:
        raise ValueError(f"uniform_mix must be in [0, 1], got {uniform_mix}.")
    if len(bucket_quantiles) != 2 or not 0.0 <= bucket_quantiles[0] <= bucket_quantiles[1] <= 1.0:
        raise ValueError(f"bucket_quantiles must be (low, high) with 0 <= low <= high <= 1, got {bucket_quantiles}.")


def check_build_arguments(
    n: int,
    *,
    k: int,
    alpha: float,
    estimator: str,
    max_weight_ratio: float | None,
    target_ess: float | None,
    uniform_mix: float,
    duplicate_tolerance: float,
    bucket_quantiles: Sequence[float],
    n_clusters: int | None = None,
    cluster_labels: Sequence | None = None,
) -> None:
    """`ValueError` for settings `DensityIndex.build` cannot use on `n` prompts, checked before any embedding."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not 1 <= k < n:
        raise ValueError(f"k={k} must be between 1 and the number of prompts minus one ({n - 1}), an integer.")
    if cluster_labels is not None:
        if len(cluster_labels) != n:
            raise ValueError(f"{len(cluster_labels)} cluster_labels for {n} prompts: pass one per prompt.")
        if n_clusters is not None:
            raise ValueError("pass n_clusters (k-means) or cluster_labels (given groups), not both.")
    if n_clusters is not None and (isinstance(n_clusters, bool) or not isinstance(n_clusters, numbers.Integral)):
        raise ValueError(f"n_clusters must be an integer >= 2, got {n_clusters!r}.")
    if not np.isfinite(duplicate_tolerance) or duplicate_tolerance < 0:
        raise ValueError(f"duplicate_tolerance must be a finite number >= 0, got {duplicate_tolerance}.")
    _weighting(alpha, estimator, *normalize_bounds(max_weight_ratio, target_ess), uniform_mix, bucket_quantiles)


# A multilingual embedder of the same family, for prompt sets the English-only default does not read.
MULTILINGUAL_EMBEDDER = "sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2"
NON_ENGLISH_WARN_SHARE = 0.01


def _non_english(text: str) -> bool:
    """Whether `text` has a letter outside ASCII or an emoji/symbol character (what all-MiniLM-L6-v2 reads poorly)."""
    import unicodedata

    return any(ord(c) > 127 and unicodedata.category(c) in ("Lu", "Ll", "Lo", "Lm", "So") for c in text)


def warn_non_english(prompts: Sequence[str], weights: np.ndarray, top: int = 20) -> float:
    """Log a warning when at least 1% of `prompts` hold non-English letters or emoji, which the English-only default
    embedder places far from everything (so they take the largest weights); returns their share."""
    flags = np.array([_non_english(p) for p in prompts], dtype=bool)
    share = float(flags.mean()) if len(flags) else 0.0
    if share >= NON_ENGLISH_WARN_SHARE:
        top = min(top, len(weights))
        heaviest = np.argsort(-np.asarray(weights), kind="stable")[:top]
        logger.warning(
            "%d of %d prompts (%.1f%%) have non-English letters or emoji, and they hold %d of the %d largest weights: "
            "the default embedder (%s) reads English only. For multilingual prompts build the index with "
            "embedder=%r.",
            int(flags.sum()),
            len(flags),
            100 * share,
            int(flags[heaviest].sum()),
            top,
            DEFAULT_EMBEDDER,
            MULTILINGUAL_EMBEDDER,
        )
    return share
