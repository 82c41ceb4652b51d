"""Held-out reward-model accuracy by weighting, on a prompt-disjoint split of the shared HH-RLHF harmless sample.

Usage:

    .venv/bin/python benchmarks/compare_weightings_rm.py            # needs ../shared/data; about 15 min on 2 cores

The 200 rows are split by prompt id (70% of prompts train, 30% held out: no held-out prompt is ever trained on).
A MiniLM reward model (the offline all-MiniLM-L6-v2 with a fresh scalar head) is trained with `DensityRewardTrainer`
under three weightings of the training pairs: `uniform` (density sampling off), `floor` (density^-1 with the lightest
weights raised to max/1,000, the former default, through `density_sampler=`) and `bounded` (the library default),
at a fixed budget (`--steps`) and at convergence (`--epochs` passes over the pairs' worth of draws), for `--seeds`.
It prints per-pair held-out accuracy per density bucket (the buckets of the training index, queried for the held-out
prompts). With 60 held-out pairs (about 12 per outer bucket) this has little power: it is a check of direction.
"""

import argparse
import gzip
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np


sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from density_rlhf import DensityIndex, DensityRewardConfig, DensityRewardTrainer, DensitySampler  # noqa: E402
from density_rlhf.data.pairs import PairStats, build_rows, rows_to_dataset  # noqa: E402
from density_rlhf.data.prompts import prompt_table  # noqa: E402
from density_rlhf.data.sources import convert_hh  # noqa: E402
from density_rlhf.embedding import resolve_embedder  # noqa: E402
from density_rlhf.estimators import DEFAULT_MAX_WEIGHT_RATIO, raw_log_weights  # noqa: E402
from density_rlhf.row_weights import map_prompt_weights  # noqa: E402


HH = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "hh_rlhf_harmless_sample.jsonl.gz"
WEIGHTINGS = ("uniform", "floor", "bounded")
BUCKETS = ("rare", "mid", "common", "all")
MAX_LENGTH = 256


def split(path: Path, tokenizer, max_length: int, held_out: float = 0.3):
    """Prompt-disjoint train/held-out pairs, without the pairs longer than `max_length` tokens (which RewardTrainer
    would drop after the sampler is built); prints how many were dropped."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        rows = build_rows((json.loads(line) for line in f), convert_hh, "hh", PairStats())
    fits = [
        max(len(tokenizer(r["prompt"] + r[side])["input_ids"]) for side in ("chosen", "rejected")) < max_length - 4
        for r in rows
    ]
    print(f"{len(rows)} pairs, {len(rows) - sum(fits)} longer than {max_length} tokens dropped")
    rows = [r for r, ok in zip(rows, fits) if ok]
    test = [r for r in rows if int(hashlib.sha256(r["prompt_id"].encode()).hexdigest(), 16) % 100 < 100 * held_out]
    train = [r for r in rows if r not in test]
    return rows_to_dataset(train), rows_to_dataset(test)


def floor_sampler(index: DensityIndex, train, seed: int) -> DensitySampler:
    raw = index.reweighted(max_weight_ratio=np.inf, target_ess=0)
    log_w = np.maximum(raw_log_weights(raw.log_density, 1.0), -np.log(DEFAULT_MAX_WEIGHT_RATIO))
    weights, _ = map_prompt_weights(train["prompt_id"], index.prompt_ids, np.exp(log_w))
    return DensitySampler(weights, seed=seed)


def run(weighting: str, budget: dict, seed: int, train, test, index, model: str, out: str) -> dict[str, float]:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    args = DensityRewardConfig(
        out, use_cpu=True, bf16=False, report_to=[], save_strategy="no", eval_strategy="no", seed=seed,
        per_device_train_batch_size=8, per_device_eval_batch_size=64, learning_rate=3e-5, max_length=MAX_LENGTH,
        logging_steps=10, density_sampling=weighting == "bounded", **budget,
    )  # fmt: skip
    trainer = DensityRewardTrainer(
        AutoModelForSequenceClassification.from_pretrained(model, num_labels=1), args, train_dataset=train,
        eval_dataset=test, processing_class=AutoTokenizer.from_pretrained(model), density_index=index,
        density_sampler=floor_sampler(index, train, seed) if weighting == "floor" else None,
    )  # fmt: skip
    trainer.train()
    metrics = trainer.evaluate()
    return {b: metrics.get(f"eval_{b}_accuracy", float("nan")) for b in BUCKETS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hh_path", default=str(HH))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=40, help="the fixed budget, in optimizer steps of 8 pairs")
    parser.add_argument("--epochs", type=float, default=4.0, help="the convergence budget, in passes (0: skip it)")
    args = parser.parse_args()

    from transformers import AutoTokenizer

    train, test = split(Path(args.hh_path), AutoTokenizer.from_pretrained(resolve_embedder(None)), MAX_LENGTH)
    table = prompt_table(train)
    index = DensityIndex.build([r["prompt"] for r in table], [r["id"] for r in table], show_progress=False)
    s = index.summary()
    print(f"{len(train)} train pairs ({len(table)} prompts), {len(test)} held-out pairs; index alpha_eff "
          f"{s['alpha_effective']:.3f}, ESS fraction {s['ess_fraction']:.2f}, bounds active {s['active_bounds']}")  # fmt: skip
    model = resolve_embedder(None)
    budgets = {f"fixed ({args.steps} steps)": {"max_steps": args.steps}}
    if args.epochs > 0:
        budgets[f"{args.epochs:g} epochs"] = {"num_train_epochs": args.epochs}
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for budget_name, budget in budgets.items():
            for weighting in WEIGHTINGS:
                for seed in args.seeds:
                    acc = run(weighting, budget, seed, train, test, index, model, f"{tmp}/{weighting}{seed}")
                    results.setdefault((budget_name, weighting), []).append(acc)
                    print(f"{budget_name} {weighting} seed {seed}: {acc}", flush=True)
    counts = {b: int(sum(1 for x in index.buckets_for(test["prompt_id"], test["prompt"]) if x == b)) for b in BUCKETS}
    counts["all"] = len(test)
    print("\n| budget | weighting | " + " | ".join(f"{b} ({counts[b]} pairs)" for b in BUCKETS) + " |")
    print("|---|---|" + "---|" * len(BUCKETS))
    for (budget_name, weighting), accs in results.items():
        cells = []
        for b in BUCKETS:
            values = [a[b] for a in accs]
            uniform = [a[b] for a in results[(budget_name, "uniform")]]
            diff = "" if weighting == "uniform" else f" ({np.mean(values) - np.mean(uniform):+.3f})"
            cells.append(f"{np.mean(values):.3f}{diff}")
        print(f"| {budget_name} | {weighting} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
