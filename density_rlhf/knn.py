"""FAISS kNN search: the index type for the data size (flat, HNSW or IVF; GPU when asked), batched search, the
self-match rule and duplicate groups by range search."""

import logging

import numpy as np

from .estimators import group_duplicates
from .settings import INDEX_TYPES, SearchSettings


logger = logging.getLogger(__name__)


def _use_gpu(use_gpu: bool | None) -> bool:
    import faiss

    available = hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    if use_gpu and not available:
        raise ValueError("use_gpu=True but FAISS sees no GPU; install `density_rlhf[gpu]` or pass use_gpu=False.")
    return available if use_gpu is None else use_gpu


def default_nprobe(n: int) -> int:
    """IVF lists probed per query for `n` points: 10 up to 10^5, then 10 (n / 10^5)^0.3 (20 at 10^6), which kept
    recall@10 >= 0.9 at 10^5 and 10^6 on the benchmark's clustered 384-d embeddings (benchmarks/README.md)."""
    return max(10, round(10 * (n / 1e5) ** 0.3))


def make_faiss_index(embeddings: np.ndarray, search: SearchSettings | None = None, *, seed: int = 0):
    """Build a FAISS L2 index over `embeddings` as `search` says (default `SearchSettings()`): exact (flat) up to
    `exact_max_size` rows, IVF above (`auto`); `seed` seeds the IVF training sample and k-means.

    IVF beat HNSW on clustered 384-d embeddings (benchmarks/README.md): about 3.2 sqrt(N) lists and `default_nprobe`
    probes, searched list by list (`ivf_self_search`), keep recall@10 >= 0.9 at N = 10^5 and 10^6.
    """
    import faiss

    search = search or SearchSettings()
    n, d = embeddings.shape
    index_type = search.index_type
    if index_type == "auto":
        index_type = "flat" if n <= search.exact_max_size else "ivf"
    if index_type == "flat":
        index = faiss.IndexFlatL2(d)
    elif index_type == "hnsw":
        index = faiss.IndexHNSWFlat(d, search.hnsw_m)
        index.hnsw.efConstruction = search.hnsw_ef_construction
        index.hnsw.efSearch = search.hnsw_ef_search
    elif index_type == "ivf":
        # about 3 sqrt(N) lists, rounded to a power of two (1024 at N = 1e5)
        nlist = search.ivf_nlist or int(2 ** round(np.log2(max(1.0, 3.2 * np.sqrt(n)))))
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, nlist)
        index.cp.seed = seed
        # k-means on a seeded sample of 40 points per list: as good a partition, a fraction of the training time
        sample = np.random.default_rng(seed).permutation(n)[: 40 * nlist]
        index.train(embeddings[np.sort(sample)])
        index.nprobe = search.ivf_nprobe or default_nprobe(n)
    else:
        raise ValueError(f"index_type must be one of {INDEX_TYPES}, got {index_type!r}.")
    if _use_gpu(search.use_gpu) and index_type != "hnsw":  # FAISS has no GPU HNSW; it stays on the CPU
        options = faiss.GpuMultipleClonerOptions()
        options.shard = True  # each visible GPU holds and searches a share of the points
        index = faiss.index_cpu_to_all_gpus(index, co=options)
    index.add(embeddings)
    return index


def _ivf_flat(index):
    """`index` as a CPU `IndexIVFFlat`, or `None` for any other kind of index."""
    import faiss

    index = faiss.downcast_index(index)
    return index if isinstance(index, faiss.IndexIVFFlat) else None


def ivf_self_search(index, embeddings: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k + 1 nearest indexed points of every indexed point of an IVF-Flat `index` (row i of `embeddings` is id
    i), as squared distances and ids, both (N, k + 1): the hits of `index.search` at the same `nprobe`, computed list
    by list instead of query by query.

    Each query probes its `nprobe` nearest lists, as in `index.search`. The queries that probe one list are searched
    against that list's members at once, a matrix product (BLAS) rather than one scan per query, and each query keeps
    its best k + 1 over its lists. The list members are the assignments FAISS made at `add`.
    """
    import faiss

    n, kk = embeddings.shape[0], k + 1
    _, probes = index.quantizer.search(embeddings, index.nprobe)  # (N, nprobe) lists per query, -1 when short
    flat = probes.ravel()
    order = np.argsort(flat, kind="stable")
    starts = np.searchsorted(flat[order], np.arange(index.nlist + 1))
    queries = (order // index.nprobe).astype(np.int64)
    invlists = index.invlists
    best_d = np.full((n, kk), np.inf, dtype=np.float32)
    best_i = np.full((n, kk), -1, dtype=np.int64)
    for lst in range(index.nlist):
        size = invlists.list_size(lst)
        probing = queries[starts[lst] : starts[lst + 1]]
        if size == 0 or probing.size == 0:
            continue
        members = faiss.rev_swig_ptr(invlists.get_ids(lst), size).copy()
        d2, hits = faiss.knn(embeddings[probing], embeddings[members], min(kk, size))
        merged_d = np.concatenate([best_d[probing], d2], axis=1)
        merged_i = np.concatenate([best_i[probing], members[hits]], axis=1)
        keep = np.argpartition(merged_d, kk - 1, axis=1)[:, :kk]
        best_d[probing] = np.take_along_axis(merged_d, keep, axis=1)
        best_i[probing] = np.take_along_axis(merged_i, keep, axis=1)
    ranked = np.argsort(best_d, axis=1, kind="stable")
    return np.take_along_axis(best_d, ranked, axis=1), np.take_along_axis(best_i, ranked, axis=1)


def knn_search(index, embeddings: np.ndarray, k: int, batch_size: int = 16384) -> tuple[np.ndarray, np.ndarray]:
    """k nearest neighbours of every row of `embeddings` in `index`, excluding the row itself (row i is the indexed
    point with id i). An IVF-Flat index on the CPU is searched list by list (`ivf_self_search`).

    Returns Euclidean distances and indices, both (N, k), sorted by distance.
    """
    n = embeddings.shape[0]
    ivf = _ivf_flat(index)
    if ivf is not None and ivf.ntotal == n:
        d2, idx = ivf_self_search(ivf, embeddings, k)
    else:
        dist_parts, idx_parts = [], []
        for start in range(0, n, batch_size):
            d2, idx = index.search(embeddings[start : start + batch_size], k + 1)
            dist_parts.append(d2)
            idx_parts.append(idx)
        d2, idx = np.concatenate(dist_parts), np.concatenate(idx_parts)
    short = np.flatnonzero((idx < 0).any(axis=1))
    if short.size:  # an approximate index found fewer than k + 1 hits for these rows: search them exactly
        import faiss

        exact = faiss.IndexFlatL2(embeddings.shape[1])
        exact.add(embeddings)
        d2[short], idx[short] = exact.search(embeddings[short], k + 1)
        logger.info("%d rows had too few approximate neighbours and were searched exactly", short.size)
    return drop_self_matches(d2, idx, np.arange(n))


def drop_self_matches(d2: np.ndarray, idx: np.ndarray, self_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """From a (q, k + 1) search of indexed points `self_ids`, the k neighbours other than the point itself, as
    Euclidean distances and indices; where the search did not return the point (ties, approximate index), the farthest
    hit goes instead."""
    q, k = idx.shape[0], idx.shape[1] - 1
    is_self = idx == np.asarray(self_ids)[:, None]
    is_self[~is_self.any(axis=1), -1] = True
    is_self[np.cumsum(is_self, axis=1) > 1] = False  # a row may only lose one entry
    keep = ~is_self
    distances = np.sqrt(np.maximum(d2[keep].reshape(q, k), 0.0))
    return distances.astype(np.float64), idx[keep].reshape(q, k)


def find_duplicates(index, embeddings: np.ndarray, tolerance: float, batch_size: int = 16384) -> np.ndarray:
    """Representative row of each row's duplicate group: rows within `tolerance` (Euclidean) of each other, chained.

    `index` holds all of `embeddings` (row i has id i); its `range_search` finds each row's near-identical rows.
    """
    import faiss

    if "Gpu" in type(index).__name__:  # FAISS GPU indexes have no range search
        index = faiss.index_gpu_to_cpu(index)
    n = embeddings.shape[0]
    src_parts, dst_parts = [], []
    for start in range(0, n, batch_size):
        lims, _, hits = index.range_search(embeddings[start : start + batch_size], float(tolerance) ** 2)
        src_parts.append(np.repeat(np.arange(start, start + len(lims) - 1), np.diff(lims.astype(np.int64))))
        dst_parts.append(hits)
    return group_duplicates(n, np.concatenate(src_parts), np.concatenate(dst_parts))
