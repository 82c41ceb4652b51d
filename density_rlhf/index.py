"""`DensityIndex`: prompt embeddings, a FAISS kNN index over the distinct ones, density estimates and weights.

The pieces live in their own modules: the estimators, the duplicate rule, the weighting and the buckets are pure
functions in `density_rlhf.estimators`; embedding in `density_rlhf.embedding`; FAISS search in `density_rlhf.knn`;
the saved form (checksums, Hub) in `density_rlhf.index_files`. This class ties them together.
"""

import copy
import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .clusters import centroids_of, default_n_clusters, kmeans, labels_from_values, nearest_centroid
from .embedding import DEFAULT_EMBEDDER, embed_prompts
from .estimators import (
    BUCKETS,
    assign_buckets,
    bounded_weights,
    bucket_thresholds,
    effective_sample_size,
    intrinsic_dimension,
    log_density,
)
from .index_files import index_card, push_folder_to_hub, read_index_files, write_index_files
from .knn import INDEX_TYPES, drop_self_matches, find_duplicates, knn_search, make_faiss_index
from .prompts import prompt_texts, unique_prompts
from .settings import REWEIGHTABLE, SearchSettings, WeightingSettings, split_settings
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
        self.reweight()

    @classmethod
    def build(
        cls,
        prompts: Sequence[str] | None,
        prompt_ids: Sequence[str],
        *,
        search: SearchSettings | None = None,
        weighting: WeightingSettings | None = None,
        embedder: str | None = None,
        embeddings: np.ndarray | None = None,
        cluster_labels: Sequence | None = None,
        batch_size: int = 64,
        device: str | None = None,
        show_progress: bool = True,
        seed: int = 0,
        **settings: Any,
    ) -> "DensityIndex":
        """Embed unique prompts (unless `embeddings` are given), merge near-duplicates, search kNN with FAISS.

        Args:
            prompts: prompt texts aligned with `prompt_ids` (may be `None` when `embeddings` is given); kept for
                `report`.
            prompt_ids: unique ids, e.g. `density_rlhf.prompt_id(prompt)`.
            search: the kNN search ([`SearchSettings`]; default its defaults: k 10, exact up to 50,000 prompts).
            weighting: densities, weights and buckets ([`WeightingSettings`]; default its defaults).
            embedder: sentence-transformers name or path; default the offline all-MiniLM-L6-v2.
            embeddings: precomputed (N, d) embeddings; they are L2-normalized here.
            cluster_labels: a group per prompt (any hashable, e.g. a topic) used as the clusters instead of k-means.
            seed: seeds the IVF training sample and k-means.
            **settings: any field of `SearchSettings` or `WeightingSettings` by name (`k=5, alpha=0.5`), laid over
                `search` and `weighting`.
        """
        search, weighting = split_settings(settings, search, weighting)
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
        check_build_arguments(n, search, weighting, cluster_labels)
        k, tolerance = search.k, weighting.duplicate_tolerance
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
        index = make_faiss_index(embeddings, search, seed=seed)
        duplicate_of = find_duplicates(index, embeddings, tolerance)
        distinct = np.flatnonzero(duplicate_of == np.arange(n))
        if len(distinct) <= k:
            raise ValueError(
                f"only {len(distinct)} distinct prompts (the other {n - len(distinct)} are duplicates within "
                f"duplicate_tolerance={tolerance}); k={k} must be smaller: lower k or add prompts."
            )
        if len(distinct) < n:  # the searched index holds one point per duplicate group
            index = make_faiss_index(embeddings[distinct], search, seed=seed)
        distances, neighbours = knn_search(index, embeddings[distinct], k)
        group = np.searchsorted(distinct, duplicate_of)  # row -> its group's position among the distinct rows
        clusters, cluster_meta = None, {}
        if cluster_labels is not None:
            labels, names = labels_from_values(cluster_labels)
            clusters = (labels, centroids_of(embeddings, labels, len(names)))
            cluster_meta = {"n_clusters": len(names), "cluster_source": "labels", "cluster_names": names}
        elif weighting.estimator == "cluster" or weighting.n_clusters is not None:
            clusters, cluster_meta = _kmeans_clusters(
                embeddings, distinct, group, weighting.n_clusters, seed, search.use_gpu
            )
        metadata = {
            "embedder": embedder_name,
            "dim": int(embeddings.shape[1]),
            "k": k,
            "alpha": weighting.alpha,
            "estimator": weighting.estimator,
            "max_weight_ratio": weighting.max_weight_ratio,
            "target_ess": weighting.target_ess,
            "uniform_mix": weighting.uniform_mix,
            "duplicate_tolerance": tolerance,
            "bucket_quantiles": list(weighting.bucket_quantiles),
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

    @property
    def weighting(self) -> WeightingSettings:
        """The index's current [`WeightingSettings`]."""
        meta = self.metadata
        values = {name: meta[name] for name in REWEIGHTABLE}
        n_clusters = meta.get("n_clusters") if meta.get("cluster_source") == "kmeans" else None
        return WeightingSettings(**values, duplicate_tolerance=meta["duplicate_tolerance"], n_clusters=n_clusters)

    def reweight(self, weighting: WeightingSettings | None = None, **overrides: Any) -> "DensityIndex":
        """Recompute density, weights and buckets from the stored kNN distances (no new search), in place.

        `weighting` replaces the index's [`WeightingSettings`] (its `duplicate_tolerance` and `n_clusters` must be
        the index's: they need a new build). `overrides` name fields of `REWEIGHTABLE` (`alpha`, `estimator`,
        `max_weight_ratio`, `target_ess`, `uniform_mix`, `bucket_quantiles`); `None` keeps the current value,
        `max_weight_ratio=inf` or `target_ess=0` lifts that bound. Everything is validated before anything changes,
        so a `ValueError` leaves the index as it was. Use `reweighted` for a copy. `estimator="cluster"` on an index
        without clusters runs k-means first (`n_clusters` of `build`'s default, the index's seed).
        """
        unknown = set(overrides) - set(REWEIGHTABLE)
        if unknown:
            raise TypeError(f"reweight takes {REWEIGHTABLE}, not {sorted(unknown)} (they need a new build).")
        meta = self.metadata
        current = self.weighting
        if weighting is not None:
            for name in ("duplicate_tolerance", "n_clusters"):
                if getattr(weighting, name) not in (None, getattr(current, name)):
                    raise ValueError(
                        f"{name}={getattr(weighting, name)} differs from the index's {getattr(current, name)}: "
                        "it needs a new DensityIndex.build."
                    )
            current = dataclasses.replace(weighting, duplicate_tolerance=current.duplicate_tolerance)
        new = dataclasses.replace(current, **{name: v for name, v in overrides.items() if v is not None})
        alpha, estimator, quantiles = new.alpha, new.estimator, new.bucket_quantiles
        max_weight_ratio, target_ess, uniform_mix = new.max_weight_ratio, new.target_ess, new.uniform_mix
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

    def reweighted(self, weighting: WeightingSettings | None = None, **overrides: Any) -> "DensityIndex":
        """A copy reweighted by `weighting` and `overrides` (as for `reweight`); this index is left as it is.

        The copy shares the read-only embeddings, kNN arrays and FAISS index with this one.
        """
        new = copy.copy(self)
        new.metadata = copy.deepcopy(self.metadata)
        return new.reweight(weighting, **overrides)

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


def check_build_arguments(
    n: int,
    search: SearchSettings | None = None,
    weighting: WeightingSettings | None = None,
    cluster_labels: Sequence | None = None,
) -> None:
    """`ValueError` for settings `DensityIndex.build` cannot use on `n` prompts, checked before any embedding (the
    settings check their own ranges when they are made)."""
    search, weighting = search or SearchSettings(), weighting or WeightingSettings()
    if not search.k < n:
        raise ValueError(f"k={search.k} must be between 1 and the number of prompts minus one ({n - 1}), an integer.")
    if cluster_labels is not None:
        if len(cluster_labels) != n:
            raise ValueError(f"{len(cluster_labels)} cluster_labels for {n} prompts: pass one per prompt.")
        if weighting.n_clusters is not None:
            raise ValueError("pass n_clusters (k-means) or cluster_labels (given groups), not both.")


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
