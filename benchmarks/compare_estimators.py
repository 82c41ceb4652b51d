"""Compare the density estimators: rare-topic AUROC on the synthetic world, weight spread and ESS on real HH prompts.

Usage:

    .venv/bin/python benchmarks/compare_estimators.py            # needs ../shared/data for the HH rows

Prints a markdown table for the README ("Choosing the default weights"). Every row uses k = 10 and alpha = 1; "raw" is
max_weight_ratio = None, "default" the shipped max_weight_ratio.
"""

import argparse
import gzip
import json
from pathlib import Path

import numpy as np
from scipy.stats import rankdata

from density_rlhf import DensityIndex
from density_rlhf.data import prompt_table
from density_rlhf.data.sources import hh_turns, split_hh_transcript
from density_rlhf.embedding import embed_prompts
from density_rlhf.estimators import DEFAULT_MAX_WEIGHT_RATIO, ESTIMATORS
from density_rlhf.experiment.world import make_synthetic_world


HH = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "hh_rlhf_harmless_sample.jsonl.gz"


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


def row(name: str, index: DensityIndex, extra: str = "") -> str:
    s = index.summary()
    return f"| {name} | {index.metadata['estimator']} | {s['raw_ratio']:.3g} | {s['ratio']:.3g} | {s['ess_fraction']:.2f} | {extra} |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hh_path", default=str(HH))
    args = parser.parse_args()

    print("| prompts | estimator | max/min raw | max/min default | ESS fraction (default) | rare-topic AUROC |")
    print("|---|---|---|---|---|---|")
    world = make_synthetic_world(0)
    table = prompt_table(world["train"])
    rare = {pid for pid, r in zip(world["train"]["prompt_id"], world["train"]["is_rare"]) if r}
    texts, ids = [r["prompt"] for r in table], [r["id"] for r in table]
    emb = embed_prompts(texts, show_progress=False)
    is_rare = np.array([pid in rare for pid in ids])
    for estimator in ESTIMATORS:
        index = DensityIndex.build(texts, ids, embeddings=emb, estimator=estimator)
        print(row(f"synthetic world ({len(ids)})", index, f"{auroc(is_rare, index.weights):.3f}"))
    if not Path(args.hh_path).exists():
        print(f"\n{args.hh_path} is absent: HH rows skipped")
        return
    for name, prompts in hh_prompt_sets(Path(args.hh_path)).items():
        emb = embed_prompts(prompts, show_progress=False)
        ids = [str(i) for i in range(len(prompts))]
        for estimator in ESTIMATORS:
            index = DensityIndex.build(prompts, ids, embeddings=emb, estimator=estimator)
            print(row(f"{name} ({len(prompts)})", index))
    print(f"\ndefault max_weight_ratio = {DEFAULT_MAX_WEIGHT_RATIO:g}")


if __name__ == "__main__":
    main()
