"""The experiment's results over seeds: `results.json` (aggregate), the pre-registered primary endpoints and
`report.md`."""

import math
from pathlib import Path
from typing import Any

import numpy as np

from .design import PAIRED_REWARD_MODELS
from .stats import _difference, holm, mcnemar_p, mean_ci, minimum_detectable_effect, seeds_needed, signed_rank_p


KEY_METRICS = ("rule_satisfied", "tic_rate", "politeness_rate", "reward/uniform", "reward/density",
               "agreement/uniform", "agreement/density", "within/distinct_2", "within/embedding_diversity",
               "within_satisfying/distinct_2", "within_satisfying/embedding_diversity", "across/embedding_diversity",
               "across/self_bleu", "em_dash_rate")  # fmt: skip
RM_METRICS = ("accuracy", "loss", "on_policy_agreement", "tic_effect", "politeness_effect")
REPORT_GROUPS = ("rare_topics", "other_topics", "rare", "common", "all")
# Policy comparisons beside "<arm>-A": kNN-density prompts against cluster-balanced ones.
POLICY_COMPARISONS = (("C", "K"),)
# The baselines: what kNN density is compared with (name in `comparisons`, paired-items name, metrics).
BASELINE_COMPARISONS = (
    ("RM density-cluster", "density-cluster", ("accuracy", "tic_effect")),
    ("RM density-topic", "density-topic", ("accuracy", "tic_effect")),
    ("RM cluster-uniform", "cluster-uniform", ("accuracy", "tic_effect")),
    ("C-K", None, ("rule_satisfied", "tic_rate")),
)
BASELINE_GROUP = "rare_topics"


def pooled_paired_items(per_seed: dict[int, dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """The item-paired RM comparisons of every seed pooled: discordant pairs summed over seeds, the exact McNemar
    p-value on the sums, the mean of the per-seed accuracy differences. Within-seed pairing only: the between-seed
    spread (training randomness) is in `comparisons`, not here."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    seeds = sorted(per_seed)
    for name in sorted({n for s in seeds for n in per_seed[s].get("paired_items", {})}):
        blocks = [per_seed[s]["paired_items"][name] for s in seeds if name in per_seed[s].get("paired_items", {})]
        for g in sorted(set.intersection(*(set(b) for b in blocks))):
            first, second = sum(b[g]["only_first"] for b in blocks), sum(b[g]["only_second"] for b in blocks)
            out.setdefault(name, {})[g] = {
                "seeds": len(blocks), "n": sum(b[g]["n"] for b in blocks), "only_first": first, "only_second": second,
                "difference": float(np.mean([b[g]["difference"] for b in blocks])),
                "p_value": mcnemar_p(first, second),
            }  # fmt: skip
    return out


def pooled_paired_prompts(per_seed: dict[int, dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """The prompt-paired policy comparisons of every seed pooled: per comparison, group and metric, the prompts'
    differences over all seeds, their mean and a Wilcoxon signed-rank p-value (within-seed pairing only, like
    `pooled_paired_items`)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    seeds = sorted(per_seed)
    names = sorted({n for s in seeds for n in per_seed[s].get("paired_prompts", {})})
    for name in names:
        blocks = [per_seed[s]["paired_prompts"][name] for s in seeds if name in per_seed[s].get("paired_prompts", {})]
        for g in sorted(set.intersection(*(set(b) for b in blocks))):
            for m in sorted(set.intersection(*(set(b[g]) for b in blocks))):
                diffs = [d for b in blocks for d in b[g][m]]
                out.setdefault(name, {}).setdefault(g, {})[m] = {
                    "seeds": len(blocks),
                    "n": len(diffs),
                    "difference": float(np.mean(diffs)) if diffs else float("nan"),
                    "p_value": signed_rank_p(diffs) if diffs else None,
                }
    return out


def dose_response(out: dict[str, Any], alphas: list[float]) -> list[dict[str, Any]]:
    """Per alpha: the rare-topic accuracy and tic effect of the RM trained at alpha (`density@<alpha>`), and the
    rare-topic tic rate and rule satisfaction of the GRPO arm weighted at alpha with it (`D@<alpha>`)."""
    rows = []
    for alpha in alphas:
        rm = out["reward_models"].get(f"density@{alpha:g}", {}).get("rare_topics", {})
        policy = out["policies"].get(f"D@{alpha:g}", {}).get("rare_topics", {})
        rows.append({"alpha": alpha, "rm_accuracy": rm.get("accuracy"), "rm_tic_effect": rm.get("tic_effect"),
                     "tic_rate": policy.get("tic_rate"), "rule_satisfied": policy.get("rule_satisfied")})  # fmt: skip
    return rows


def aggregate(per_seed: dict[int, dict[str, Any]], alphas: list[float] | None = None) -> dict[str, Any]:
    """Mean and CI over seeds of every policy x group x metric and RM x group x metric; paired differences of
    every arm against A (policies) and of the density RM against the uniform one, with Holm-corrected verdicts."""
    seeds = sorted(per_seed)
    first = per_seed[seeds[0]]
    policies = list(first["policies"])
    out: dict[str, Any] = {"seeds": seeds, "policies": {}, "reward_models": {}, "comparisons": {}}

    def value(s, kind, name, group, metric):
        found = per_seed[s][kind].get(name, {}).get(group, {}).get(metric)
        return float("nan") if found is None else found  # null: not measurable there (e.g. tic probes on real data)

    for p in policies:
        groups = sorted({g for s in seeds for g in per_seed[s]["policies"][p]})
        out["policies"][p] = {
            g: {m: mean_ci([value(s, "policies", p, g, m) for s in seeds])
                for m in sorted({m for s in seeds for m in per_seed[s]["policies"][p].get(g, {})})}
            for g in groups
        }  # fmt: skip
    for rm in sorted(first["reward_models"]):
        out["reward_models"][rm] = {
            g: {m: mean_ci([value(s, "reward_models", rm, g, m) for s in seeds]) for m in RM_METRICS
                if m in first["reward_models"][rm][g]}
            for g in first["reward_models"][rm]
        }  # fmt: skip
    against_a = [(p, "A") for p in policies if p != "A" and "A" in policies]
    for x, y in [*against_a, *(pair for pair in POLICY_COMPARISONS if set(pair) <= set(policies))]:
        out["comparisons"][f"{x}-{y}"] = {
            g: {m: _difference([value(s, "policies", x, g, m) - value(s, "policies", y, g, m) for s in seeds])
                for m in KEY_METRICS if not math.isnan(value(seeds[0], "policies", x, g, m))}
            for g in out["policies"][x]
        }  # fmt: skip
    for x, y in PAIRED_REWARD_MODELS:
        if {x, y} <= set(out["reward_models"]):
            out["comparisons"][f"RM {x}-{y}"] = {
                g: {m: _difference([value(s, "reward_models", x, g, m) - value(s, "reward_models", y, g, m)
                                    for s in seeds])
                    for m in out["reward_models"][y][g]}
                for g in out["reward_models"][y]
            }  # fmt: skip
    pooled = pooled_paired_items(per_seed)
    if pooled:
        out["paired_items"] = pooled
    prompts = pooled_paired_prompts(per_seed)
    if prompts:
        out["paired_prompts"] = prompts
    if alphas:
        out["dose_response"] = dose_response(out, alphas)
    out["primary_endpoints"] = primary_endpoints(per_seed, seeds)
    # Everything else is exploratory: one Holm family over every comparison's p-value.
    family = [out["comparisons"][c][g][m] for c, block in out["comparisons"].items() for g, row in block.items()
              for m in row]  # fmt: skip
    family += [stat for block in out.get("paired_items", {}).values() for stat in block.values()]
    family += [
        stat for block in out.get("paired_prompts", {}).values() for row in block.values() for stat in row.values()
    ]
    rejected = holm([stat["p_value"] for stat in family])
    for stat, rej in zip(family, rejected):
        direction = stat["mean"] if "mean" in stat else stat["difference"]
        stat["holm_verdict"] = ("higher" if direction > 0 else "lower") if rej else "no detectable difference"
    out["exploratory_tests"] = len([r for r in rejected if r is not None])
    baselines = baseline_rows(out)
    if baselines:
        out["baselines"] = baselines
    return out


def baseline_rows(out: dict[str, Any]) -> list[dict[str, Any]]:
    """The baseline comparisons on the rare topics: seed-level difference (interval, MDE, verdict, Holm) and, for
    reward models, the pooled item-paired McNemar test."""
    rows = []
    for name, paired, metrics in BASELINE_COMPARISONS:
        block = out["comparisons"].get(name, {}).get(BASELINE_GROUP)
        if block is None:
            continue
        for metric in metrics:
            if metric in block:
                row = {"comparison": name, "group": BASELINE_GROUP, "metric": metric, **block[metric]}
                if paired and metric == "accuracy":
                    row["mcnemar"] = out.get("paired_items", {}).get(paired, {}).get(BASELINE_GROUP)
                rows.append(row)
    return rows


# --- pre-registered primary endpoints ------------------------------------------------------------------------------
# (name, what is compared, kind, key, group, metric, threshold, direction). A difference "X-Y" is X minus Y per
# seed; the verdict asks whether the 95% interval lies beyond `threshold` in `direction`.
PRIMARY_ENDPOINTS = (
    ("Positive control: O raises rare-topic rule satisfaction above SFT + 0.2", ("O", "SFT"), "policies",
     "rare_topics", "rule_satisfied", 0.2, "higher"),
    ("Tic collapse: A raises the rare-topic tic rate above SFT by >= 0.2", ("A", "SFT"), "policies",
     "rare_topics", "tic_rate", 0.2, "higher"),
    ("The uniform RM rewards the tic on rare-topic responses (tic effect > 0)", ("uniform", None), "reward_models",
     "rare_topics", "tic_effect", 0.0, "higher"),
    ("RM accuracy on rare topics: density RM above uniform RM (B > A)", ("density", "uniform"), "reward_models",
     "rare_topics", "accuracy", 0.0, "higher"),
    ("RM tic effect on rare topics: density RM below uniform RM", ("density", "uniform"), "reward_models",
     "rare_topics", "tic_effect", 0.0, "lower"),
    ("Policy rule satisfaction on rare topics: B above A", ("B", "A"), "policies", "rare_topics",
     "rule_satisfied", 0.0, "higher"),
    ("Policy rule satisfaction on rare topics: C above A", ("C", "A"), "policies", "rare_topics",
     "rule_satisfied", 0.0, "higher"),
    ("Tic rate on rare topics: D below A (density sampling resists the collapse)", ("D", "A"), "policies",
     "rare_topics", "tic_rate", 0.0, "lower"),
)  # fmt: skip


def primary_endpoints(per_seed: dict[int, dict[str, Any]], seeds: list[int]) -> list[dict[str, Any]]:
    """The pre-registered endpoints: measured difference with 95% interval, minimum detectable effect and verdict."""
    rows = []
    for name, (x, y), kind, group, metric, threshold, direction in PRIMARY_ENDPOINTS:
        xs = [per_seed[s][kind].get(x, {}).get(group, {}).get(metric) for s in seeds]
        ys = [per_seed[s][kind].get(y, {}).get(group, {}).get(metric) if y else 0.0 for s in seeds]
        if any(v is None or (isinstance(v, float) and math.isnan(v)) for v in xs + ys):
            rows.append({"endpoint": name, "status": "not run"})
            continue
        diffs = [a - b for a, b in zip(xs, ys)]
        stat = mean_ci(diffs)
        stat["mde"] = minimum_detectable_effect(diffs)
        if stat["ci_low"] is None:
            decided = "undecided (one seed)"
        elif direction == "higher":
            decided = (
                "supported"
                if stat["ci_low"] > threshold
                else ("contradicted" if stat["ci_high"] < threshold else "undecided")
            )
        else:
            decided = (
                "supported"
                if stat["ci_high"] < -threshold
                else ("contradicted" if stat["ci_low"] > -threshold else "undecided")
            )
        # seeds that would detect the observed distance from the threshold at the observed spread
        distance = stat["mean"] - (threshold if direction == "higher" else -threshold)
        stat["seeds_needed"] = seeds_needed(diffs, distance) if decided == "undecided" else None
        label = f"{x} - {y}" if y else x
        rows.append({"endpoint": name, "difference": label, "group": group, "metric": metric, "threshold": threshold,
                     "direction": direction, **stat, "verdict": decided})  # fmt: skip
    return rows


# --- report -------------------------------------------------------------------------------------------------------
def _fmt_stat(stat: dict[str, Any] | None, digits: int = 3, signed: bool = False) -> str:
    if stat is None or stat.get("mean") is None or (isinstance(stat["mean"], float) and math.isnan(stat["mean"])):
        return "n/a"
    sign = "+" if signed or "verdict" in stat else ""  # differences carry a sign, levels do not
    text = f"{stat['mean']:{sign}.{digits}f}"
    if stat.get("ci_low") is not None:
        text += f" [{stat['ci_low']:{sign}.{digits}f}, {stat['ci_high']:{sign}.{digits}f}]"
    return text


def baseline_section(results: dict[str, Any]) -> list[str]:
    """The "Baselines" section: kNN density against cluster and topic balancing, on the rare topics."""
    rows = results.get("baselines")
    if not rows:
        return []
    lines = ["## Baselines", "",
             "What a user would pick instead of a kNN density, on the same worlds: reward models trained with rows "
             "balanced over k-means clusters (`cluster`) or over the true topics (`topic`, an oracle), and GRPO with "
             "cluster-balanced prompts (K) against kNN-density prompts (C), both scored by the uniform RM. Rare "
             "topics; per-seed differences; Holm over the exploratory family; McNemar pools the held-out pairs of "
             "every seed.", "",
             "| comparison | metric | measured [95% CI] | MDE | verdict (seeds) | Holm | McNemar: only first / only "
             "second right, p (Holm) |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for row in rows:
        mde = f"{row['mde']:.3f}" if row.get("mde") is not None else "n/a"
        paired = row.get("mcnemar")
        mcnemar = (f"{paired['only_first']} / {paired['only_second']}, p = {paired['p_value']:.2g} "
                   f"({paired['holm_verdict']})" if paired else "")  # fmt: skip
        lines.append(f"| {row['comparison']} | {row['metric']} | {_fmt_stat(row)} | {mde} | {row['verdict']} | "
                     f"{row['holm_verdict']} | {mcnemar} |")  # fmt: skip
    return [*lines, ""]


def write_report(results: dict[str, Any], root: Path, plots: list[str]) -> Path:
    seeds = results["seeds"]
    lines = ["# Density-aware sampling: hypothesis report", ""]
    lines.append(f"Seeds: {seeds} (each seed its own world unless `world_seed` was fixed). Means over seeds with "
                 "95% t-intervals in brackets (none with one seed). MDE: the minimum detectable effect of a paired "
                 "two-sided test over these seeds at 80% power.")  # fmt: skip
    lines += ["", "## Primary endpoints (pre-registered)", "",
              "| prediction | difference | group / metric | measured [95% CI] | MDE | verdict | seeds needed |",
              "|---|---|---|---|---|---|---|"]  # fmt: skip
    for row in results["primary_endpoints"]:
        if row.get("status") == "not run":
            lines.append(f"| {row['endpoint']} | not run | | | | | |")
            continue
        mde = f"{row['mde']:.3f}" if row.get("mde") is not None else "n/a"
        needed = row.get("seeds_needed") or ("" if row["verdict"] != "undecided" else "> 1000")
        lines.append(f"| {row['endpoint']} | {row['difference']} | {row['group']} / {row['metric']} | "
                     f"{_fmt_stat(row, signed=True)} | {mde} | {row['verdict']} | {needed} |")  # fmt: skip
    lines += ["", "A verdict is `supported` when the interval lies beyond the threshold in the predicted direction, "
              "`contradicted` when it lies on the other side, `undecided` otherwise. Seeds needed (undecided rows): "
              "the fewest seeds whose MDE, at the observed spread, reaches the observed distance from the "
              "threshold.", ""]  # fmt: skip
    lines += baseline_section(results)
    lines += ["## Exploratory (Holm-corrected over "
              f"{results.get('exploratory_tests', 0)} tests)", ""]  # fmt: skip
    rms = results["reward_models"]
    lines += ["### Reward models on held-out pairs", "",
              "| RM | group | accuracy | loss | on-policy agreement (SFT samples) | tic effect | politeness effect |",
              "|---|---|---|---|---|---|---|"]  # fmt: skip
    for rm, groups in rms.items():
        for g in (*REPORT_GROUPS, *sorted(k for k in groups if k.startswith("topic/"))):
            if g in groups:
                row = groups[g]
                cells = [_fmt_stat(row.get(m)) for m in RM_METRICS]
                lines.append(f"| {rm} | {g} | " + " | ".join(cells) + " |")
    policies = list(results["policies"])
    lines += ["", "### Policies on held-out prompts", ""]
    for group in REPORT_GROUPS:
        lines += [f"#### {group}", "", "| metric | " + " | ".join(policies) + " |", "|---" * (len(policies) + 1) + "|"]
        for m in KEY_METRICS:
            cells = [_fmt_stat(results["policies"][p].get(group, {}).get(m)) for p in policies]
            if any(c != "n/a" for c in cells):
                lines.append(f"| {m} | " + " | ".join(cells) + " |")
        lines.append("")
    topics = sorted({g for p in policies for g in results["policies"][p] if g.startswith("topic/")})
    if topics:
        lines += ["#### rule satisfaction by topic", "", "| topic | " + " | ".join(policies) + " |",
                  "|---" * (len(policies) + 1) + "|"]  # fmt: skip
        for t in topics:
            cells = [_fmt_stat(results["policies"][p].get(t, {}).get("rule_satisfied")) for p in policies]
            lines.append(f"| {t.split('/', 1)[1]} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["### Differences (Holm-corrected verdicts)", ""]
    for comparison, block in results["comparisons"].items():
        groups = [g for g in REPORT_GROUPS if g in block]
        lines += [
            f"#### {comparison}",
            "",
            "| metric | " + " | ".join(groups) + " |",
            "|---" * (len(groups) + 1) + "|",
        ]
        metrics = sorted({m for g in groups for m in block[g]}, key=lambda m: (m not in KEY_METRICS, m))
        for m in metrics:
            cells = []
            for g in groups:
                stat = block[g].get(m)
                cells.append(f"{_fmt_stat(stat)} ({stat['holm_verdict']})" if stat else "n/a")
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        lines.append("")
    for name, block in results.get("paired_items", {}).items():
        first, second = name.split("-")
        lines += [f"### Reward models paired by held-out pair: {name} (exact McNemar, pooled over seeds)", "",
                  f"| group | pairs | only {first} right | only {second} right | accuracy difference | p | Holm |",
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        for g in (*REPORT_GROUPS, *sorted(k for k in block if k.startswith("topic/"))):
            if g in block:
                row = block[g]
                lines.append(f"| {g} | {row['n']} | {row['only_first']} | {row['only_second']} | "
                             f"{row['difference']:+.3f} | {row['p_value']:.2g} | {row['holm_verdict']} |")  # fmt: skip
        lines += ["", "Pairing by item removes the variation between test pairs within a seed; it does not see the "
                  "variation between training runs, which the seed-level intervals above carry.", ""]  # fmt: skip
    paired_prompts = results.get("paired_prompts", {})
    if paired_prompts:
        lines += ["### Policies paired by held-out prompt (Wilcoxon signed-rank, pooled over seeds)", "",
                  "| comparison | group | metric | prompts | mean difference | p | Holm |",
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        for name, block in paired_prompts.items():
            for g in (g for g in REPORT_GROUPS if g in block):
                for m, row in block[g].items():
                    p = "n/a" if row["p_value"] is None else f"{row['p_value']:.2g}"
                    lines.append(f"| {name} | {g} | {m} | {row['n']} | {row['difference']:+.3f} | {p} | "
                                 f"{row['holm_verdict']} |")  # fmt: skip
        lines += ["", "Every arm samples the same held-out prompts, so each prompt's rate (the mean of its samples) "
                  "pairs across arms within a seed; like the RM pairing this does not see the variation between "
                  "training runs.", ""]  # fmt: skip
    if results.get("dose_response"):
        lines += [
            "### alpha dose-response (rare topics)",
            "",
            "| alpha | RM accuracy | RM tic effect | GRPO tic rate | GRPO rule satisfied |",
            "|---|---|---|---|---|",
        ]
        for row in results["dose_response"]:
            cells = [_fmt_stat(row[k]) for k in ("rm_accuracy", "rm_tic_effect", "tic_rate", "rule_satisfied")]
            lines.append(f"| {row['alpha']:g} | " + " | ".join(cells) + " |")
        lines += ["", "RM: the B recipe trained by density^-alpha; GRPO: the D recipe, prompts weighted at alpha, "
                  "scored by that RM.", ""]  # fmt: skip
    lines += ["## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots] + [""]
    path = root / "report.md"
    path.write_text("\n".join(lines))
    return path
