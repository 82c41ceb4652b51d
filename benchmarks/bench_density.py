"""Density-stage benchmarks. Not a test: it prints ratios against baselines measured in the same run.

    python benchmarks/bench_density.py                  # all sections, the sizes of benchmarks/README.md
    python benchmarks/bench_density.py --sections knn --sizes 10000

Sections:
- knn:       exact FAISS vs sklearn NearestNeighbors (brute force) on the same embeddings.
- approx:    the `auto` index (IVF above `exact_max_size`, searched list by list) and any `--variants` vs exact
             FAISS on clustered embeddings: speed-up, recall@k, Spearman correlation of the density weights, peak memory.
- mapping:   `map_prompt_weights` on 3e7 pairs vs a dict-per-pair loop (timed on a slice, per-row rate).
- embedding: `embed_prompts` vs a raw sentence-transformers `encode` with the same model and batch size.
"""

import argparse
import gc
import hashlib
import threading
import time
from contextlib import contextmanager

import numpy as np
import psutil


class PeakRSS:
    """Peak resident memory above the starting point, polled every 5 ms in a thread."""

    def __init__(self):
        self.process = psutil.Process()
        self.peak = 0

    def __enter__(self):
        gc.collect()
        self.base = self.process.memory_info().rss
        self.peak = self.base
        self.running = True
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()
        return self

    def _poll(self):
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.005)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)

    @property
    def mib(self) -> float:
        return (self.peak - self.base) / 2**20


@contextmanager
def timed(results: dict, key: str):
    with PeakRSS() as mem:
        start = time.perf_counter()
        yield
        results[key] = time.perf_counter() - start
    results[key + "_mib"] = mem.mib


def clustered_embeddings(n: int, d: int = 384, n_clusters: int | None = None, seed: int = 0) -> np.ndarray:
    """Unit vectors in Zipf-sized clusters, each spread over its own low-rank subspace like sentence embeddings."""
    rng = np.random.default_rng(seed)
    n_clusters = n_clusters or max(10, n // 100)
    sizes = np.arange(1, n_clusters + 1, dtype=float) ** -1.1
    labels = rng.choice(n_clusters, size=n, p=sizes / sizes.sum())
    centers = rng.normal(size=(n_clusters, d)).astype(np.float32)
    bases = rng.normal(size=(n_clusters, 16, d)).astype(np.float32) / np.sqrt(d)
    coeffs = rng.normal(size=(n, 16)).astype(np.float32)
    x = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, 50_000):  # in chunks: bases[labels] for all rows would need 16 x the embeddings
        rows = slice(start, start + 50_000)
        x[rows] = centers[labels[rows]] * 0.25 + np.einsum("nr,nrd->nd", coeffs[rows], bases[labels[rows]]) * 1.6
    x += 0.05 * rng.normal(size=(n, d)).astype(np.float32)
    return np.ascontiguousarray(x / np.linalg.norm(x, axis=1, keepdims=True))


def bench_knn(sizes, k=10):
    from sklearn.neighbors import NearestNeighbors

    from density_rlhf.knn import knn_search, make_faiss_index
    from density_rlhf.settings import SearchSettings

    for n in sizes:
        x = clustered_embeddings(n)
        r = {}
        with timed(r, "faiss"):
            knn_search(make_faiss_index(x, SearchSettings(index_type="flat")), x, k)
        with timed(r, "sklearn"):
            NearestNeighbors(n_neighbors=k + 1, algorithm="brute").fit(x).kneighbors(x)
        print(
            f"knn      N={n:>7} d=384  faiss-flat {r['faiss']:7.1f}s ({r['faiss_mib']:6.0f} MiB)  "
            f"sklearn {r['sklearn']:7.1f}s ({r['sklearn_mib']:6.0f} MiB)  speed-up {r['sklearn'] / r['faiss']:.2f}x"
        )


def _approx_index(x: np.ndarray, spec: str):
    """`kind[:nlist=..][:nprobe=..][:niter=..][:per_list=..]`: `auto` (what `DensityIndex.build` picks for this N),
    `ivf` (the library's IVF-Flat), `ivf_flat` (IVF-Flat with these k-means settings), `ivf_hnsw` (IVF-Flat with an
    HNSW coarse quantizer), `ivf_sq8` (8-bit scalar-quantized lists), `hnsw`. IVF-Flat indexes are searched list by
    list (`density_rlhf.knn.ivf_self_search`), as the library does; `:scan=query` searches query by query
    (`index.search`) instead."""
    import faiss

    from density_rlhf.knn import make_faiss_index
    from density_rlhf.settings import SearchSettings

    kind, *opts = spec.split(":")
    opts = {key: int(value) for key, value in (o.split("=") for o in opts) if key != "scan"}
    n, d = x.shape
    if kind == "auto":
        return make_faiss_index(x)
    if kind in ("ivf", "hnsw"):
        kwargs = {"ivf_nlist": opts.get("nlist"), "ivf_nprobe": opts.get("nprobe")} if kind == "ivf" else {}
        return make_faiss_index(x, SearchSettings(index_type=kind, **kwargs))
    nlist = opts.get("nlist") or int(2 ** round(np.log2(3.2 * np.sqrt(n))))
    if kind == "ivf_hnsw":
        quantizer = faiss.IndexHNSWFlat(d, 32)
        index = faiss.IndexIVFFlat(quantizer, d, nlist)
    elif kind == "ivf_flat":
        index = faiss.IndexIVFFlat(faiss.IndexFlatL2(d), d, nlist)
    elif kind == "ivf_sq8":
        index = faiss.IndexIVFScalarQuantizer(faiss.IndexFlatL2(d), d, nlist, faiss.ScalarQuantizer.QT_8bit)
    else:
        raise ValueError(f"unknown index kind {kind!r}")
    index.cp.seed = 0
    index.cp.niter = opts.get("niter", index.cp.niter)  # k-means iterations (FAISS default 25)
    per_list = opts.get("per_list", 40)  # k-means training points per list
    index.train(x[np.sort(np.random.default_rng(0).permutation(n)[: per_list * nlist])])
    index.nprobe = opts.get("nprobe", 10)
    if kind == "ivf_hnsw":
        quantizer.hnsw.efSearch = max(64, 2 * index.nprobe)
    index.add(x)
    return index


def bench_approx(sizes, k=10, variants=("ivf",), sample_queries=2000, full_exact_max=200_000):
    """Approximate indexes against exact FAISS. Above `full_exact_max` points the exact search time is estimated
    from a seeded sample of `sample_queries` queries (x N / sample), and recall and weight Spearman are measured on
    that sample; the approximate index is always built and searched for all N points."""
    from scipy.stats import spearmanr

    from density_rlhf.estimators import density_weights, log_density
    from density_rlhf.knn import drop_self_matches, knn_search, make_faiss_index
    from density_rlhf.settings import SearchSettings

    for n in sizes:
        x = clustered_embeddings(n, seed=1)
        rows = np.arange(n)
        if n > full_exact_max:
            rows = np.sort(np.random.default_rng(0).choice(n, sample_queries, replace=False))
        r = {}
        with timed(r, "flat"):
            flat = make_faiss_index(x, SearchSettings(index_type="flat"))
        with timed(r, "exact"):
            if len(rows) < n:
                d_exact, i_exact = drop_self_matches(*flat.search(x[rows], k + 1), rows)
            else:
                d_exact, i_exact = knn_search(flat, x, k)
        del flat
        exact_time = r["flat"] + r["exact"] * n / len(rows)  # only the search scales with the queries
        how = "measured" if len(rows) == n else f"estimated from {len(rows)} queries"
        print(f"approx   N={n:>7} d=384  exact {exact_time:7.1f}s ({how}, {r['flat_mib']:5.0f} MiB)", flush=True)
        w_exact = density_weights(log_density(d_exact))
        for spec in variants:
            with timed(r, spec):
                index = _approx_index(x, spec)
                if ":scan=query" in spec:  # query by query (index.search), the former IVF path, for comparison
                    d_all, i_all = drop_self_matches(*index.search(x, k + 1), np.arange(n))
                else:
                    d_all, i_all = knn_search(index, x, k)
            del index
            d_approx, i_approx = d_all[rows], i_all[rows]
            recall = np.mean((i_approx[:, :, None] == i_exact[:, None, :]).any(-1))
            rho = spearmanr(w_exact, density_weights(log_density(d_approx))).statistic
            print(
                f"approx   N={n:>7} d=384  {spec:<22} {r[spec]:7.1f}s ({r[spec + '_mib']:5.0f} MiB)  "
                f"speed-up {exact_time / r[spec]:5.1f}x  recall@{k} {recall:.3f}  weight Spearman {rho:.4f}",
                flush=True,
            )


def bench_mapping(n_pairs: int, n_prompts: int = 1_000_000, loop_rows: int = 3_000_000):
    import pyarrow as pa
    import pyarrow.compute as pc

    from density_rlhf.row_weights import map_prompt_weights

    rng = np.random.default_rng(0)
    ids = [hashlib.md5(str(i).encode()).hexdigest()[:16] for i in range(n_prompts)]
    weights = rng.uniform(size=n_prompts)
    weights /= weights.sum()
    rows = pc.take(pa.array(ids), pa.array(rng.integers(0, n_prompts, size=n_pairs)))
    r = {}
    with timed(r, "vectorized"):
        row_weights, _ = map_prompt_weights(rows, ids, weights)
    # The plain loop: dict prompt_id -> index, then one lookup per pair.
    sample = rows.slice(0, loop_rows).to_pylist()
    with timed(r, "loop"):
        lookup = {pid: i for i, pid in enumerate(ids)}
        looped = np.empty(len(sample))
        for j, pid in enumerate(sample):
            looped[j] = weights[lookup[pid]]
    np.testing.assert_array_equal(looped, row_weights[:loop_rows])
    loop_rate = loop_rows / r["loop"]
    vec_rate = n_pairs / r["vectorized"]
    print(
        f"mapping  pairs={n_pairs:.0e} prompts={n_prompts:.0e}  vectorized {r['vectorized']:6.1f}s "
        f"(peak +{r['vectorized_mib']:.0f} MiB)  dict loop {loop_rate / 1e6:.2f} M rows/s on {loop_rows:.0e} rows "
        f"(~{n_pairs / loop_rate:.0f}s for all)  speed-up {vec_rate / loop_rate:.1f}x"
    )


def bench_embedding(n_prompts: int = 2000, repeats: int = 5):
    from sentence_transformers import SentenceTransformer

    from density_rlhf.embedding import embed_prompts, resolve_embedder
    from density_rlhf.experiment.world import make_synthetic_world

    world = make_synthetic_world(0, n_train_pairs=max(n_prompts, 600))
    prompts = (list(world["train"]["prompt"]) + list(world["train"]["chosen"]))[:n_prompts]
    model = SentenceTransformer(resolve_embedder(None), device="cpu")
    model.encode(prompts[:256], batch_size=64)  # warm-up, timed by neither side
    runs = {"raw": [], "ours": []}
    calls = {
        "raw": lambda: model.encode(prompts, batch_size=64, normalize_embeddings=True, show_progress_bar=False),
        "ours": lambda: embed_prompts(prompts, model, batch_size=64, show_progress=False),
    }
    for i in range(repeats):  # interleaved, alternating who goes first, so drift hits both equally
        for name in ("raw", "ours") if i % 2 == 0 else ("ours", "raw"):
            start = time.perf_counter()
            calls[name]()
            runs[name].append(time.perf_counter() - start)
    raw, ours = runs["raw"], runs["ours"]
    raw_rate, our_rate = n_prompts / np.median(raw), n_prompts / np.median(ours)
    print(
        f"embed    prompts={n_prompts}  raw encode {raw_rate:6.0f}/s  embed_prompts {our_rate:6.0f}/s  "
        f"ratio {our_rate / raw_rate:.3f}"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", nargs="+", default=["knn", "approx", "mapping", "embedding"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[10_000, 100_000])
    parser.add_argument("--approx-sizes", nargs="+", type=int, default=[100_000, 1_000_000])
    parser.add_argument("--variants", nargs="+", default=["auto"], help="approximate indexes to compare")
    parser.add_argument("--pairs", type=int, default=30_000_000)
    args = parser.parse_args()
    if "knn" in args.sections:
        bench_knn(args.sizes)
    if "approx" in args.sections:
        bench_approx(args.approx_sizes, variants=args.variants)
    if "mapping" in args.sections:
        bench_mapping(args.pairs)
    if "embedding" in args.sections:
        bench_embedding()


if __name__ == "__main__":
    main()
