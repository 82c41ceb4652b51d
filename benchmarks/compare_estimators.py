"""Compare the density estimators and the ways of bounding their weights, on the prompt sets where they differ.

Usage:

    .venv/bin/python benchmarks/compare_estimators.py            # needs ../shared/data for the HH rows

Prompt sets: the embedded synthetic world (seed 0), the shared HH-RLHF harmless sample (full dialogue and last
`Human:` turn) and a three-cluster geometry (d = 32: 2,000 points, 40 points, 30 isolated points). Every row uses
k = 10 and alpha = 1 and prints markdown tables for docs/density.md.

Weightings (the default's selection criteria are in docs/density.md, written before these were measured):
- `raw`: density^-alpha, no bound;
- `floor`: the lightest weights raised to max/1,000 (the former default);
- `temper`: the largest alpha' <= alpha with max/min <= 1,000 (`target_ess=None`);
- `cap`: the heaviest weights capped for ESS >= 0.3 (`max_weight_ratio=None`);
- `temper+cap`: both bounds (the library default, `DensityIndex.build`'s defaults);
- `rank`: log weight = alpha log(1,000) x density rank quantile;
- `pca-knn`: the intrinsic estimator in a PCA space of round(d_hat) dimensions, then `temper+cap`.
"""

import argparse
import gzip
import json
import sys
from pathlib import Path

import numpy as np
from scipy.stats import rankdata, spearmanr


sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from density_rlhf import DensityIndex  # noqa: E402
from density_rlhf.data import prompt_table  # noqa: E402
from density_rlhf.data.sources import hh_turns, split_hh_transcript  # noqa: E402
from density_rlhf.embedding import embed_prompts  # noqa: E402
from density_rlhf.estimators import (  # noqa: E402
    DEFAULT_MAX_WEIGHT_RATIO,
    DEFAULT_TARGET_ESS,
    ESTIMATORS,
    density_weights,
    effective_sample_size,
    raw_log_weights,
)
from density_rlhf.experiment.world import make_synthetic_world  # noqa: E402


HH = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "hh_rlhf_harmless_sample.jsonl.gz"
WEIGHTINGS = ("raw", "floor", "temper", "cap", "temper+cap", "rank", "pca-knn")


def auroc(positive: np.ndarray, scores: np.ndarray) -> float:
    """Mann-Whitney AUROC of `scores` for the boolean labels `positive` (ties count one half)."""
    ranks = rankdata(scores)
    n_pos, n_neg = positive.sum(), (~positive).sum()
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def hh_prompt_sets(path: Path) -> dict[str, list[str]]:
    full, last = [], []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            prompt, _ = split_hh_transcript(json.loads(line)["chosen"])
            if prompt.strip():
                full.append(prompt)
                last.append([m["content"] for m in hh_turns(prompt) if m["role"] == "user"][-1])
    return {"HH full dialogue": list(dict.fromkeys(full)), "HH last turn": list(dict.fromkeys(last))}


def three_clusters(seed: int = 0, d: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """2,000 points around one centre (spread 0.05), 40 around another and 30 isolated random points, with labels 0
    (crowded), 1 (small cluster) and 2 (isolated); also the geometry of `tests/test_bounds.py`."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(2, d))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = np.vstack([
        centres[0] + 0.05 * rng.normal(size=(2000, d)), centres[1] + 0.05 * rng.normal(size=(40, d)),
        rng.normal(size=(30, d)),
    ]).astype(np.float32)  # fmt: skip
    return x, np.repeat([0, 1, 2], [2000, 40, 30])


def weights_of(name: str, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(weights, raw weights) of one weighting on `embeddings`."""
    ids = [str(i) for i in range(len(embeddings))]
    index = DensityIndex.build(None, ids, embeddings=embeddings, max_weight_ratio=None, target_ess=None)
    raw, log_p = index.weights, index.log_density
    if name == "raw":
        return raw, raw
    if name == "floor":
        w = np.exp(np.maximum(raw_log_weights(log_p, 1.0), -np.log(DEFAULT_MAX_WEIGHT_RATIO)))
        return w / w.sum(), raw
    if name == "rank":
        q = (rankdata(-log_p) - 1) / (len(log_p) - 1)
        w = np.exp(np.log(DEFAULT_MAX_WEIGHT_RATIO) * q)
        return w / w.sum(), raw
    if name == "pca-knn":
        d = max(2, round(index.metadata["intrinsic_dim"]))
        centred = index.embeddings - index.embeddings.mean(axis=0)
        basis = np.linalg.svd(centred, full_matrices=False)[2][:d]
        low = DensityIndex.build(None, ids, embeddings=centred @ basis.T)
        return low.weights, raw
    bounds = {"temper": (DEFAULT_MAX_WEIGHT_RATIO, None), "cap": (None, DEFAULT_TARGET_ESS)}.get(
        name, (DEFAULT_MAX_WEIGHT_RATIO, DEFAULT_TARGET_ESS)
    )
    return density_weights(log_p, 1.0, max_weight_ratio=bounds[0], target_ess=bounds[1]), raw


def measures(w: np.ndarray, raw: np.ndarray) -> dict[str, float]:
    n = len(w)
    return {
        "max/min": float(w.max() / w.min()), "ESS fraction": effective_sample_size(w) / n,
        "at min": float(np.isclose(w, w.min(), rtol=1e-9, atol=0).mean()),
        "top 1% mass": float(np.sort(w)[-max(1, n // 100):].sum()),
        "Spearman vs raw": float(spearmanr(w, raw)[0]), "mass moved": float(0.5 * np.abs(w - raw).sum()),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hh_path", default=str(HH))
    args = parser.parse_args()

    world = make_synthetic_world(0)
    table = prompt_table(world["train"])
    rare = {pid for pid, r in zip(world["train"]["prompt_id"], world["train"]["is_rare"]) if r}
    world_emb = embed_prompts([r["prompt"] for r in table], show_progress=False)
    is_rare = np.array([r["id"] in rare for r in table])
    sets = {f"synthetic world ({len(table)})": (world_emb, {"rare-topic AUROC": lambda w: auroc(is_rare, w)})}
    if Path(args.hh_path).exists():
        for name, prompts in hh_prompt_sets(Path(args.hh_path)).items():
            sets[f"{name} ({len(prompts)})"] = (embed_prompts(prompts, show_progress=False), {})
    else:
        print(f"{args.hh_path} is absent: HH rows skipped\n")
    x, label = three_clusters()
    sets[f"three clusters ({len(x)})"] = (x, {
        "small / crowded": lambda w: w[label == 1].mean() / w[label == 0].mean(),
        "isolated / small": lambda w: w[label == 2].mean() / w[label == 1].mean(),
    })  # fmt: skip

    print("## Estimators (raw weights, alpha = 1)\n")
    print("| prompts | estimator | max/min | ESS fraction | rare-topic AUROC |\n|---|---|---|---|---|")
    for name, (emb, _) in list(sets.items())[:3]:
        for estimator in ESTIMATORS:
            ids = [str(i) for i in range(len(emb))]
            index = DensityIndex.build(None, ids, embeddings=emb, estimator=estimator, max_weight_ratio=None,
                                       target_ess=None)  # fmt: skip
            s = index.summary()
            extra = f"{auroc(is_rare, index.weights):.3f}" if name.startswith("synthetic") else ""
            print(f"| {name} | {estimator} | {s['ratio']:.3g} | {s['ess_fraction']:.2f} | {extra} |")

    print("\n## Weightings (intrinsic estimator, alpha = 1)\n")
    columns = ["max/min", "ESS fraction", "at min", "top 1% mass", "Spearman vs raw", "mass moved"]
    extras = sorted({key for _, (_, e) in sets.items() for key in e})
    print("| prompts | weighting | " + " | ".join(columns + extras) + " |")
    print("|---|---|" + "---|" * (len(columns) + len(extras)))
    moved: dict[str, list[float]] = {name: [] for name in WEIGHTINGS}
    for set_name, (emb, extra) in sets.items():
        for name in WEIGHTINGS:
            w, raw = weights_of(name, emb)
            m = measures(w, raw)
            moved[name].append(m["mass moved"])
            cells = [f"{m[c]:.3g}" for c in columns] + [f"{extra[k](w):.3g}" if k in extra else "" for k in extras]
            print(f"| {set_name} | {name} | " + " | ".join(cells) + " |")
    print("\nmean mass moved: " + ", ".join(f"{n} {np.mean(v):.3f}" for n, v in moved.items()))


if __name__ == "__main__":
    main()
