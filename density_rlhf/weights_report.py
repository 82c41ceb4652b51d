"""A report on a `DensityIndex`'s weights that people can look at: PNGs, a markdown summary and a JSON summary.

Written by `DensityIndex.report(out_dir)` and by the density stage (`recipes/build_density.py`, on by default).
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .estimators import effective_sample_size


@dataclass(frozen=True)
class ReportInput:
    """What the report reads of an index: per-prompt weights, buckets, ids, texts, duplicate groups, embeddings and the
    index's summary."""

    weights: np.ndarray
    buckets: Sequence[str]
    prompt_ids: Sequence[str]
    texts: Sequence[str]
    duplicate_of: np.ndarray
    embeddings: np.ndarray
    summary: dict[str, Any]


_COLORS = {"rare": "tab:red", "mid": "tab:gray", "common": "tab:blue"}


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise ImportError(
            "the weights report draws with matplotlib: `pip install matplotlib` (or `density_rlhf[experiment]`)."
        ) from err
    return plt


def pca_2d(embeddings: np.ndarray) -> np.ndarray:
    """The first two principal components of `embeddings` (centred SVD), shape (N, 2)."""
    x = np.asarray(embeddings, dtype=np.float64)
    x = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    return x @ vt[:2].T


def _short(text: str, width: int = 110) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= width else text[: width - 1] + "…"


def report_data(index: ReportInput, n_examples: int = 20) -> dict[str, Any]:
    """Everything the report shows, as JSON-ready numbers and texts."""
    w = index.weights
    buckets = np.asarray(index.buckets)
    texts = index.texts
    order = np.argsort(-w, kind="stable")  # heaviest (rarest) first
    shares = {
        b: {"rows": float((buckets == b).mean()), "mass": float(w[buckets == b].sum())}
        for b in ("rare", "mid", "common")
    }
    groups = []
    sizes = np.bincount(index.duplicate_of)
    for rep in np.flatnonzero(sizes > 1)[np.argsort(-sizes[sizes > 1], kind="stable")]:
        members = np.flatnonzero(index.duplicate_of == rep)
        groups.append(
            {
                "size": int(len(members)),
                "member_weight": float(w[rep]),
                "group_mass": float(w[members].sum()),
                "prompts": [str(texts[i]) for i in members[:5]],
            }
        )

    def rows(positions):
        return [
            {"prompt_id": index.prompt_ids[i], "weight": float(w[i]), "bucket": str(buckets[i]), "text": str(texts[i])}
            for i in positions
        ]

    return {
        "summary": index.summary,
        "ess": effective_sample_size(w),
        "bucket_shares": shares,
        "rarest": rows(order[:n_examples]),
        "commonest": rows(order[::-1][:n_examples]),
        "duplicate_groups": groups,
    }


def _markdown(data: dict[str, Any]) -> str:
    s = data["summary"]
    bound = "none" if s["max_weight_ratio"] is None else f"{s['max_weight_ratio']:g}"
    target = "none" if s["target_ess"] is None else f"{s['target_ess']:g}"
    lines = [
        "# Density weights report",
        "",
        f"{s['n']} prompts ({s['distinct']} distinct, {s['duplicate_groups']} duplicate groups merged), k = {s['k']}, "
        f"alpha = {s['alpha']}, estimator `{s['estimator']}`, embedder `{s['embedder']}`.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| max/min weight | {s['ratio']:.4g} |",
        f"| max/min of the raw density^-alpha | {s['raw_ratio']:.4g} |",
        f"| bound on max/min (max_weight_ratio) | {bound} |",
        f"| bound on the ESS fraction (target_ess) | {target} |",
        f"| bounds active | {', '.join(s['active_bounds']) or 'none'} |",
        f"| alpha asked / used | {s['alpha']:g} / {s['alpha_effective']:.3g} |",
        f"| prompts at the ESS cap | {100 * s['capped_fraction']:.1f}% |",
        f"| sampling mass moved by the bounds | {100 * s['bound_mass_moved']:.2f}% |",
        f"| ESS | {data['ess']:.1f} of {s['n']} ({100 * s['ess_fraction']:.1f}%) |",
        "",
        "## Share of rows vs share of sampling mass",
        "",
        "| bucket | rows | sampling mass |",
        "|---|---|---|",
        *(f"| {b} | {100 * v['rows']:.1f}% | {100 * v['mass']:.1f}% |" for b, v in data["bucket_shares"].items()),
        "",
        "![log10 weight by bucket](log_weight_hist.png)",
        "",
        "![bucket mass](bucket_mass.png)",
        "",
        "![PCA map of the prompts coloured by log10 weight](prompt_map.png)",
        "",
    ]
    for title, key in (("rarest (heaviest)", "rarest"), ("commonest (lightest)", "commonest")):
        lines += [f"## The {len(data[key])} {title} prompts", "", "| weight | bucket | prompt |", "|---|---|---|"]
        lines += [f"| {r['weight']:.3g} | {r['bucket']} | {_short(r['text'])} |" for r in data[key]]
        lines.append("")
    groups = data["duplicate_groups"]
    lines += [f"## Duplicate groups merged: {len(groups)}", ""]
    if groups:
        lines += ["| size | weight per member | group mass | example |", "|---|---|---|---|"]
        lines += [
            f"| {g['size']} | {g['member_weight']:.3g} | {g['group_mass']:.3g} | {_short(g['prompts'][0])} |"
            for g in groups[:20]
        ]
        if len(groups) > 20:
            lines.append(f"\n({len(groups) - 20} more groups in weights_report.json)")
    return "\n".join(lines) + "\n"


def write_weights_report(index: ReportInput, out_dir: str | Path, n_examples: int = 20) -> Path:
    """Write the PNGs, `weights_report.md` and `weights_report.json` for `index` into `out_dir`; return the md path."""
    plt = _pyplot()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = report_data(index, n_examples)
    log_w = np.log10(index.weights)
    buckets = np.asarray(index.buckets)

    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = np.linspace(log_w.min(), log_w.max() + 1e-9, 40)
    for b, color in _COLORS.items():
        if (buckets == b).any():
            ax.hist(log_w[buckets == b], bins=bins, alpha=0.6, color=color, label=f"{b} ({(buckets == b).sum()})")
    ax.set(xlabel="log10 sampling weight", ylabel="prompts", title="Weights by density bucket")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "log_weight_hist.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3.2))
    names = list(data["bucket_shares"])
    x = np.arange(len(names))
    ax.bar(x - 0.2, [data["bucket_shares"][b]["rows"] for b in names], 0.4, label="share of rows", color="0.6")
    ax.bar(x + 0.2, [data["bucket_shares"][b]["mass"] for b in names], 0.4, label="share of sampling mass")
    ax.set_xticks(x, names)
    ax.set(ylabel="fraction", title="Rows vs sampling mass")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "bucket_mass.png", dpi=110)
    plt.close(fig)

    xy = pca_2d(index.embeddings)
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    points = ax.scatter(xy[:, 0], xy[:, 1], c=log_w, s=8, cmap="viridis")
    fig.colorbar(points, ax=ax, label="log10 weight")
    ax.set(xlabel="PC 1", ylabel="PC 2", title="Prompts (PCA of the embeddings)")
    fig.tight_layout()
    fig.savefig(out / "prompt_map.png", dpi=110)
    plt.close(fig)

    (out / "weights_report.json").write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    md = out / "weights_report.md"
    md.write_text(_markdown(data), encoding="utf-8")
    return md
