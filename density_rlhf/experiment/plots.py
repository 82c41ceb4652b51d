"""The experiment's plots: training curves, RM accuracy by group, policy metrics by group, diversity, weights."""

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..index import BUCKETS
from .design import RM_NAMES, RM_OF
from .report import REPORT_GROUPS


def make_plots(results: dict[str, Any], root: Path, density_dir: Path, hypotheses: list[str]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..index import DensityIndex

    paths = []

    def save(fig, name):
        fig.tight_layout()
        fig.savefig(root / name, dpi=110)
        plt.close(fig)
        paths.append(str(root / name))

    index = DensityIndex.load(density_dir, load_faiss=False)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    w = np.log10(index.weights)
    buckets = np.array(index.buckets)
    for b in BUCKETS:
        ax.hist(w[buckets == b], bins=30, alpha=0.6, label=f"{b} ({(buckets == b).sum()})")
    ax.set(xlabel="log10 sampling weight", ylabel="prompts", title="Density weights by bucket")
    ax.legend()
    save(fig, "weights_by_bucket.png")

    def bars(ax, series: dict[str, list[dict]], groups: list[str], ylabel: str):
        width = 0.8 / max(1, len(series))
        for i, (label, stats) in enumerate(series.items()):
            means = [s["mean"] if s else np.nan for s in stats]
            err = [
                [(s["mean"] - s["ci_low"]) if s and s.get("ci_low") is not None else 0 for s in stats],
                [(s["ci_high"] - s["mean"]) if s and s.get("ci_high") is not None else 0 for s in stats],
            ]
            ax.bar(np.arange(len(groups)) + i * width, means, width, yerr=err, capsize=3, label=label)
        ax.set_xticks(np.arange(len(groups)) + width * (len(series) - 1) / 2, groups)
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)

    rms = results["reward_models"]
    groups = [g for g in REPORT_GROUPS if all(g in rms[r] for r in rms)]
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.5))
    bars(axes[0], {f"RM {r}": [rms[r][g]["accuracy"] for g in groups] for r in rms}, groups, "held-out accuracy")
    axes[0].set_title("Reward-model accuracy (error bars: 95% CI over seeds)")
    bars(axes[1], {f"RM {r}": [rms[r][g].get("tic_effect") for g in groups] for r in rms}, groups, "tic effect")
    axes[1].set_title("Counterfactual tic effect (score with - without)")
    save(fig, "rm_accuracy.png")

    pols = results["policies"]
    groups = [g for g in REPORT_GROUPS if all(g in pols[p] for p in pols)]
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.5))
    for ax, metric in zip(axes, ("rule_satisfied", "tic_rate")):
        bars(ax, {p: [pols[p].get(g, {}).get(metric) for g in groups] for p in pols}, groups, metric)
    axes[0].set_title("Ground-truth rule satisfaction")
    axes[1].set_title("Tic rate (em-dash between sentences or items)")
    save(fig, "policy_by_group.png")

    div = (
        "within/distinct_2",
        "within/embedding_diversity",
        "across/embedding_diversity",
        "across/self_bleu",
        "across/token_gini",
    )
    fig, axes = plt.subplots(1, len(div), figsize=(3 * len(div), 3.2))
    for ax, metric in zip(axes, div):
        stats = [pols[p]["all"].get(metric) for p in pols]
        ax.bar(
            range(len(pols)),
            [s["mean"] if s else np.nan for s in stats],
            yerr=[
                [(s["mean"] - s["ci_low"]) if s and s.get("ci_low") is not None else 0 for s in stats],
                [(s["ci_high"] - s["mean"]) if s and s.get("ci_high") is not None else 0 for s in stats],
            ],
            capsize=3,
        )
        ax.set_xticks(range(len(pols)), list(pols))
        ax.set_title(metric, fontsize=9)
    save(fig, "diversity.png")

    seed = results["seeds"][0]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
    for h in sorted({RM_OF[h] for h in hypotheses}):
        hist = _log_history(root / f"seed{seed}" / f"rm_{h.lower()}")
        steps = [e["step"] for e in hist if "loss" in e]
        axes[0].plot(steps, [e["loss"] for e in hist if "loss" in e], label=f"RM {RM_NAMES[h]}")
    axes[0].set(xlabel="step", ylabel="loss", title=f"Reward-model training (seed {seed})")
    # Each hypothesis optimizes its own reward model, so raw rewards are not comparable across A/C and B/D; the
    # ground-truth rule satisfaction is, and is what the curves show when the data has it.
    for h in [p for p in results["policies"] if p != "SFT"]:
        hist = _log_history(root / f"seed{seed}" / f"grpo_{h.lower()}")
        key = "rewards/ground_truth/mean" if any("rewards/ground_truth/mean" in e for e in hist) else "reward"
        steps = [e["step"] for e in hist if key in e]
        axes[1].plot(steps, [e[key] for e in hist if key in e], label=h)
        axes[1].set(xlabel="step", ylabel=key.split("/")[1] if "/" in key else key)
    axes[1].set_title(f"GRPO training batches: ground-truth satisfaction (seed {seed})")
    for ax in axes:
        ax.legend(fontsize=8)
    save(fig, "training_curves.png")
    if results.get("dose_response"):
        rows = results["dose_response"]
        alphas = [row["alpha"] for row in rows]
        fig, axes = plt.subplots(1, 3, figsize=(11, 3.2))
        for ax, key, label in zip(
            axes, ("rm_accuracy", "rm_tic_effect", "tic_rate"), ("RM accuracy", "RM tic effect", "GRPO tic rate")
        ):
            stats = [row[key] or {} for row in rows]
            mean = np.array([st.get("mean", np.nan) for st in stats], dtype=float)
            low = np.array([st.get("ci_low", np.nan) for st in stats], dtype=float)
            high = np.array([st.get("ci_high", np.nan) for st in stats], dtype=float)
            ax.errorbar(alphas, mean, yerr=[mean - low, high - mean], marker="o", capsize=3)
            ax.set(xlabel="alpha", title=f"{label}, rare topics")
        save(fig, "dose_response.png")
    return paths


def _log_history(stage_dir: Path) -> list[dict[str, Any]]:
    path = stage_dir / "trainer_state.json"
    return json.loads(path.read_text())["log_history"] if path.exists() else []
