"""The hypothesis experiment in one command: data -> density -> SFT -> RM (A, B) -> GRPO (A-D) -> evaluation -> report.

Every stage runs its recipe in a subprocess with its log in `<output_dir>/logs/`. A stage whose output holds a marker
with the same configuration hash (its command line plus the hashes of the stages it depends on) is skipped, so an
interrupted run picks up where it stopped. Stochastic stages (SFT, RM, GRPO, evaluation) repeat for every seed.
"""

import hashlib
import json
import logging
import math
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .cli import RECIPES_DIR, check_hardware, load_config, resolve_config
from .index import BUCKETS


logger = logging.getLogger(__name__)

MARKER = ".density_rlhf_stage.json"
HYPOTHESES = ("A", "B", "C", "D")
# Reward model used by each hypothesis: C reuses A's (uniform) RM and D reuses B's (density) RM; their
# hypothesis files configure identical RM training, so the runner trains each RM once per seed.
RM_OF = {"A": "A", "B": "B", "C": "A", "D": "B"}
RM_NAMES = {"A": "uniform", "B": "density"}
KEY_METRICS = ("rule_satisfied", "reward/uniform", "reward/density", "within/distinct_2", "within/embedding_diversity",
               "across/embedding_diversity", "across/distinct_2", "across/self_bleu", "across/token_gini", "em_dash_rate")  # fmt: skip


@dataclass
class RunnerArguments:
    r"""
    Arguments of `recipes/run_hypotheses.py`.

    Parameters:
        output_dir (`str`, *optional*, defaults to `"outputs/run"`):
            Root of every stage's output, the logs, `results.json`, `report.md` and the plots.
        seeds (`list[int]`, *optional*, defaults to `[0]`):
            Seeds of the stochastic stages (SFT, reward models, GRPO, evaluation).
        hypotheses (`list[str]`, *optional*, defaults to `["A", "B", "C", "D"]`):
            Hypotheses to run; `A` is always included as the baseline.
        prepare_config / density_config / sft_config (`str`, *optional*):
            Recipe YAMLs of the data, density and SFT stages.
        hypothesis_config (`str`, *optional*, defaults to `"hyp_{h}.yaml"`):
            Pattern of the hypothesis YAMLs (`{h}` is the lower-case hypothesis).
        launcher (`str`, *optional*, defaults to `""`):
            Prefix of the training commands, e.g. `accelerate launch --config_file accelerate_configs/zero3.yaml`;
            empty runs `python`.
        n_train_pairs, sft_max_steps, rm_max_steps, grpo_max_steps (`int` or `None`, *optional*):
            Shrink the run (smoke tests); `None` keeps the recipes' values.
        eval_num_samples (`int`, *optional*, defaults to `4`), eval_prompts_per_topic (`int` or `None`):
            Samples per held-out prompt, and unique prompts kept per topic.
        report_to (`str`, *optional*, defaults to `"tensorboard"`):
            Trackers of the training stages (`tensorboard`, `wandb`, `trackio`, `none`).
    """

    output_dir: str = field(default="outputs/run", metadata={"help": "Root directory of the run."})
    seeds: list[int] = field(default_factory=lambda: [0], metadata={"help": "Seeds of the stochastic stages."})
    hypotheses: list[str] = field(default_factory=lambda: list(HYPOTHESES), metadata={"help": "Hypotheses to run."})
    prepare_config: str = field(default="prepare_data.yaml", metadata={"help": "Data stage YAML."})
    density_config: str = field(default="build_density.yaml", metadata={"help": "Density stage YAML."})
    sft_config: str = field(default="sft.yaml", metadata={"help": "SFT stage YAML."})
    hypothesis_config: str = field(default="hyp_{h}.yaml", metadata={"help": "Pattern of the hypothesis YAMLs."})
    launcher: str = field(
        default="", metadata={"help": "Command prefix of the training stages (accelerate launch ...)."}
    )
    n_train_pairs: int | None = field(default=None, metadata={"help": "Override the synthetic train size."})
    sft_max_steps: int | None = field(default=None, metadata={"help": "Override SFT max_steps."})
    rm_max_steps: int | None = field(default=None, metadata={"help": "Override reward-model max_steps."})
    grpo_max_steps: int | None = field(default=None, metadata={"help": "Override GRPO max_steps."})
    eval_num_samples: int = field(default=4, metadata={"help": "Samples per held-out prompt."})
    eval_prompts_per_topic: int | None = field(default=None, metadata={"help": "Unique held-out prompts per topic."})
    report_to: str = field(default="tensorboard", metadata={"help": "Trackers of the training stages."})

    def __post_init__(self):
        self.hypotheses = [h.upper() for h in self.hypotheses]
        unknown = sorted(set(self.hypotheses) - set(HYPOTHESES))
        if unknown:
            raise ValueError(f"unknown hypotheses {unknown}; choose from {list(HYPOTHESES)}.")
        if "A" not in self.hypotheses:
            self.hypotheses.insert(0, "A")  # the baseline every comparison is made against
        if not self.seeds:
            raise ValueError("seeds must not be empty.")


@dataclass
class Stage:
    name: str
    script: str
    config: str | None
    section: str | None
    args: list[str]
    output: Path
    deps: list["Stage"] = field(default_factory=list)
    launched: bool = False  # goes through `launcher` (training stages)

    @property
    def hash(self) -> str:
        """Changes with the script, the config's content (not just its name), the arguments and any upstream stage."""
        config = load_config(resolve_config(self.config), self.section) if self.config else None
        payload = json.dumps(
            [self.script, config, self.args, [d.hash for d in self.deps]], sort_keys=True, default=str
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


class StageFailed(RuntimeError):
    pass


def _fmt(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def build_stages(args: RunnerArguments) -> list[Stage]:
    """The stage graph of the experiment, in execution order."""
    root = Path(args.output_dir).resolve()
    data, density = root / "data", root / "density"
    shrink = {"n_train_pairs": args.n_train_pairs}
    stages = []
    prep_args = ["--output_dir", str(data)] + [
        x for k, v in shrink.items() if v is not None for x in (f"--{k}", str(v))
    ]
    prep = Stage("prepare_data", "prepare_data.py", args.prepare_config, None, prep_args, data)
    dens = Stage("build_density", "build_density.py", args.density_config, None,
                 ["--data_dir", str(data), "--density_dir", str(density)], density, [prep])  # fmt: skip
    stages += [prep, dens]
    common = ["--data_dir", str(data), "--report_to", args.report_to]
    for seed in args.seeds:
        run = root / f"seed{seed}"
        sft_args = [
            *common,
            "--seed",
            str(seed),
            "--output_dir",
            str(run / "sft"),
            "--model_name_or_path",
            str(data / "tiny" / "policy"),
        ]
        if args.sft_max_steps:
            sft_args += ["--max_steps", str(args.sft_max_steps)]
        sft = Stage(f"sft[seed={seed}]", "train_sft.py", args.sft_config, None, sft_args, run / "sft", [prep], True)
        stages.append(sft)
        rms = {}
        for h in sorted({RM_OF[h] for h in args.hypotheses}):
            rm_args = [*common, "--seed", str(seed), "--output_dir", str(run / f"rm_{h.lower()}"),
                       "--density_index_path", str(density), "--model_name_or_path", str(data / "tiny" / "reward")]  # fmt: skip
            if args.rm_max_steps:
                rm_args += [
                    "--max_steps",
                    str(args.rm_max_steps),
                    "--eval_steps",
                    str(args.rm_max_steps),
                    "--save_steps",
                    str(args.rm_max_steps),
                ]
            rms[h] = Stage(f"rm_{h}[seed={seed}]", "train_rm.py", args.hypothesis_config.format(h=h.lower()), "reward",
                           rm_args, run / f"rm_{h.lower()}", [prep, dens], True)  # fmt: skip
            stages.append(rms[h])
        grpos = {}
        for h in args.hypotheses:
            grpo_args = [*common, "--seed", str(seed), "--output_dir", str(run / f"grpo_{h.lower()}"),
                         "--density_index_path", str(density), "--model_name_or_path", str(run / "sft"),
                         "--reward_model_path", str(rms[RM_OF[h]].output)]  # fmt: skip
            if args.grpo_max_steps:
                grpo_args += ["--max_steps", str(args.grpo_max_steps), "--save_steps", str(args.grpo_max_steps)]
            grpos[h] = Stage(f"grpo_{h}[seed={seed}]", "train_grpo.py", args.hypothesis_config.format(h=h.lower()), "grpo",
                             grpo_args, run / f"grpo_{h.lower()}", [dens, sft, rms[RM_OF[h]]], True)  # fmt: skip
            stages.append(grpos[h])
        eval_args = [
            "--data_dir", str(data), "--density_index_path", str(density), "--seed", str(seed),
            "--num_samples", str(args.eval_num_samples), "--output_file", str(run / "eval" / "results.json"),
            "--policies", f"SFT={run / 'sft'}", *[f"{h}={s.output}" for h, s in grpos.items()],
            "--reward_models", *[f"{RM_NAMES[h]}={s.output}" for h, s in rms.items()],
        ]  # fmt: skip
        if args.eval_prompts_per_topic:
            eval_args += ["--prompts_per_topic", str(args.eval_prompts_per_topic)]
        stages.append(Stage(f"evaluate[seed={seed}]", "evaluate.py", None, None, eval_args, run / "eval",
                            [*rms.values(), *grpos.values()]))  # fmt: skip
    return stages


def check_stage_configs(stages: list[Stage]) -> None:
    """Fail before anything runs: every config exists, has the script's section, and fits this machine."""
    for stage in stages:
        if stage.config is None:
            continue
        path = resolve_config(stage.config)
        check_hardware(path, load_config(path, stage.section), stage.args)


def _command(stage: Stage, launcher: str) -> list[str]:
    script = str(RECIPES_DIR / stage.script)
    config = ["--config", resolve_config(stage.config)] if stage.config else []
    prefix = shlex.split(launcher) if launcher and stage.launched else [sys.executable]
    return [*prefix, script, *config, *stage.args]


def run_stage(stage: Stage, launcher: str, log_dir: Path, index: int, total: int) -> dict[str, Any]:
    """Run one stage unless it already finished with this configuration; raise `StageFailed` naming stage and log.

    The marker records the configuration hash when the stage starts and `done` when it finishes. A finished stage
    with the same hash is skipped; an unfinished one with the same hash resumes from its own checkpoints; output
    left by another configuration is removed first, so no stale checkpoint is resumed.
    """
    marker = stage.output / MARKER
    previous = json.loads(marker.read_text()) if marker.exists() else None
    if previous and previous.get("hash") == stage.hash and previous.get("status") == "done":
        print(f"[{index}/{total}] {stage.name}: up to date, skipped", flush=True)
        return {"stage": stage.name, "skipped": True, **previous}
    if previous and previous.get("hash") != stage.hash:
        shutil.rmtree(stage.output)
    log = log_dir / f"{stage.name.replace('[', '_').replace(']', '').replace('=', '')}.log"
    command = _command(stage, launcher)
    resuming = previous is not None and previous.get("hash") == stage.hash
    print(f"[{index}/{total}] {stage.name}: {'resuming' if resuming else 'running'} (log: {log})", flush=True)
    stage.output.mkdir(parents=True, exist_ok=True)
    info = {"hash": stage.hash, "command": shlex.join(command), "status": "running"}
    marker.write_text(json.dumps(info, indent=2) + "\n")
    start = time.time()
    with open(log, "a" if resuming else "w") as f:
        f.write(shlex.join(command) + "\n\n")
        f.flush()
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        result = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, env=env)
    seconds = time.time() - start
    if result.returncode != 0:
        tail = log.read_text().splitlines()[-15:]
        raise StageFailed(f"stage {stage.name} failed (exit {result.returncode}); log: {log}\n" + "\n".join(tail))
    info.update(status="done", seconds=round(seconds, 1))
    marker.write_text(json.dumps(info, indent=2) + "\n")
    print(f"[{index}/{total}] {stage.name}: done in {seconds:.0f}s", flush=True)
    return {"stage": stage.name, "skipped": False, **info}


# --- statistics ---------------------------------------------------------------------------------------------------
def mean_ci(values: list[float]) -> dict[str, Any]:
    """Mean and 95% t-interval over seeds (no interval with one seed)."""
    from scipy import stats

    x = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    out: dict[str, Any] = {"mean": float(x.mean()) if x.size else float("nan"), "n": int(x.size), "values": x.tolist()}
    if x.size >= 2:
        half = float(stats.t.ppf(0.975, x.size - 1) * x.std(ddof=1) / math.sqrt(x.size))
        out.update(ci_low=out["mean"] - half, ci_high=out["mean"] + half)
    else:
        out.update(ci_low=None, ci_high=None)
    return out


def verdict(diff: dict[str, Any]) -> str:
    if diff["ci_low"] is None:
        return f"no detectable difference ({diff['n']} seed{'s' if diff['n'] != 1 else ''}: no interval)"
    if diff["ci_low"] > 0:
        return "higher"
    if diff["ci_high"] < 0:
        return "lower"
    return "no detectable difference"


def aggregate(per_seed: dict[int, dict[str, Any]], hypotheses: list[str]) -> dict[str, Any]:
    """Mean and CI over seeds of every policy x bucket x metric and RM x group x metric; paired differences vs A."""
    seeds = sorted(per_seed)
    policies = ["SFT", *hypotheses]
    buckets = [*BUCKETS, "all"]
    out: dict[str, Any] = {"seeds": seeds, "policies": {}, "reward_models": {}, "comparisons": {}}
    for p in policies:
        out["policies"][p] = {}
        for b in buckets:
            metrics = sorted({m for s in seeds for m in per_seed[s]["policies"][p].get(b, {})})
            out["policies"][p][b] = {
                m: mean_ci([per_seed[s]["policies"][p].get(b, {}).get(m, float("nan")) for s in seeds])
                for m in metrics
            }
    for rm in sorted(per_seed[seeds[0]]["reward_models"]):
        groups = per_seed[seeds[0]]["reward_models"][rm]
        out["reward_models"][rm] = {
            g: {m: mean_ci([per_seed[s]["reward_models"][rm][g][m] for s in seeds]) for m in ("accuracy", "loss")}
            for g in groups
        }
    for h in hypotheses:
        if h == "A":
            continue
        out["comparisons"][f"{h}-A"] = {}
        for b in buckets:
            rows = {}
            for m in KEY_METRICS:
                diffs = [
                    per_seed[s]["policies"][h].get(b, {}).get(m, float("nan"))
                    - per_seed[s]["policies"]["A"].get(b, {}).get(m, float("nan"))
                    for s in seeds
                ]
                if all(math.isnan(d) for d in diffs):
                    continue
                stat = mean_ci(diffs)
                stat["verdict"] = verdict(stat)
                rows[m] = stat
            out["comparisons"][f"{h}-A"][b] = rows
    if {"uniform", "density"} <= set(out["reward_models"]):
        rm_rows = {}
        for g in out["reward_models"]["uniform"]:
            for m in ("accuracy", "loss"):
                diffs = [
                    per_seed[s]["reward_models"]["density"][g][m] - per_seed[s]["reward_models"]["uniform"][g][m]
                    for s in seeds
                ]
                stat = mean_ci(diffs)
                stat["verdict"] = verdict(stat)
                rm_rows[f"{g}/{m}"] = stat
        out["comparisons"]["RM density-uniform"] = rm_rows
    return out


# --- report -------------------------------------------------------------------------------------------------------
PREDICTIONS = [  # the seeds' predictions (research note 000), next to what was measured
    ("RM loss on rare prompts: density RM below uniform RM (B < A)", "RM density-uniform", "rare/loss", "lower"),
    (
        "RM loss on common prompts: about the same (B ~ A)",
        "RM density-uniform",
        "common/loss",
        "no detectable difference",
    ),
    (
        "RM accuracy on rare topics: density RM above uniform RM",
        "RM density-uniform",
        "rare_topics/accuracy",
        "higher",
    ),
    ("Policy ground truth on rare prompts: B above A", "B-A", ("rare", "rule_satisfied"), "higher"),
    (
        "Policy ground truth on common prompts: B about A",
        "B-A",
        ("common", "rule_satisfied"),
        "no detectable difference",
    ),
    (
        "Policy diversity: B above A (embedding diversity across prompts)",
        "B-A",
        ("all", "across/embedding_diversity"),
        "higher",
    ),
    (
        "Policy ground truth on rare prompts: C only marginally above A",
        "C-A",
        ("rare", "rule_satisfied"),
        "no detectable difference",
    ),
    ("Em-dash rate: lower with density sampling (D below A)", "D-A", ("all", "em_dash_rate"), "lower"),
]


def _fmt_stat(stat: dict[str, Any] | None, digits: int = 3) -> str:
    if stat is None or stat.get("mean") is None or (isinstance(stat["mean"], float) and math.isnan(stat["mean"])):
        return "n/a"
    sign = "+" if "verdict" in stat else ""  # differences carry a sign, levels do not
    text = f"{stat['mean']:{sign}.{digits}f}"
    if stat.get("ci_low") is not None:
        text += f" [{stat['ci_low']:{sign}.{digits}f}, {stat['ci_high']:{sign}.{digits}f}]"
    return text


def write_report(results: dict[str, Any], root: Path, plots: list[str]) -> Path:
    lines = ["# Density-aware sampling: hypothesis report", ""]
    lines.append(f"Seeds: {results['seeds']}. Means over seeds with 95% t-intervals in brackets (none with one seed). "
                 "A difference is called only when its interval excludes 0.")  # fmt: skip
    lines += [
        "",
        "## The seeds' predictions against the measurements",
        "",
        "| prediction | measured difference | verdict | as predicted? |",
        "|---|---|---|---|",
    ]
    for text, comparison, key, expected in PREDICTIONS:
        block = results["comparisons"].get(comparison, {})
        stat = block.get(key) if isinstance(key, str) else block.get(key[0], {}).get(key[1])
        if stat is None:
            lines.append(f"| {text} | not run | | |")
            continue
        ok = (
            "yes"
            if stat["verdict"] == expected
            else ("undecided" if stat["verdict"].startswith("no detectable") else "no")
        )
        lines.append(f"| {text} | {_fmt_stat(stat)} | {stat['verdict']} | {ok} |")
    lines += [
        "",
        "## Reward models on held-out pairs",
        "",
        "| group | uniform (A, C) acc | density (B, D) acc | uniform loss | density loss |",
        "|---|---|---|---|---|",
    ]
    rms = results["reward_models"]
    if {"uniform", "density"} <= set(rms):
        for g in ["rare", "mid", "common", "rare_topics", "other_topics", "all"]:
            if g in rms["uniform"]:
                u, d = rms["uniform"][g], rms["density"][g]
                lines.append(
                    f"| {g} | {_fmt_stat(u['accuracy'])} | {_fmt_stat(d['accuracy'])} | {_fmt_stat(u['loss'])} | {_fmt_stat(d['loss'])} |"
                )
    lines += ["", "## Policies on held-out prompts", ""]
    policies = list(results["policies"])
    for bucket in ("rare", "common", "all"):
        lines += [
            f"### bucket: {bucket}",
            "",
            "| metric | " + " | ".join(policies) + " |",
            "|---" * (len(policies) + 1) + "|",
        ]
        for m in KEY_METRICS:
            cells = [_fmt_stat(results["policies"][p].get(bucket, {}).get(m)) for p in policies]
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Differences against A", ""]
    for comparison, block in results["comparisons"].items():
        if comparison.startswith("RM"):
            continue
        lines += [f"### {comparison}", "", "| metric | rare | mid | common | all |", "|---|---|---|---|---|"]
        for m in KEY_METRICS:
            cells = []
            for b in (*BUCKETS, "all"):
                stat = block.get(b, {}).get(m)
                cells.append(f"{_fmt_stat(stat)} ({stat['verdict']})" if stat else "n/a")
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
        lines.append("")
    lines += ["## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots] + [""]
    path = root / "report.md"
    path.write_text("\n".join(lines))
    return path


def make_plots(results: dict[str, Any], root: Path, density_dir: Path, hypotheses: list[str]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .index import DensityIndex

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
            err = [[(s["mean"] - s["ci_low"]) if s and s.get("ci_low") is not None else 0 for s in stats],
                   [(s["ci_high"] - s["mean"]) if s and s.get("ci_high") is not None else 0 for s in stats]]  # fmt: skip
            ax.bar(np.arange(len(groups)) + i * width, means, width, yerr=err, capsize=3, label=label)
        ax.set_xticks(np.arange(len(groups)) + width * (len(series) - 1) / 2, groups)
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=8)

    rms = results["reward_models"]
    groups = [g for g in ("rare", "mid", "common", "rare_topics", "other_topics") if all(g in rms[r] for r in rms)]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    bars(ax, {f"RM {r}": [rms[r][g]["accuracy"] for g in groups] for r in rms}, groups, "held-out accuracy")
    ax.set_title("Reward-model accuracy by bucket (error bars: 95% CI over seeds)")
    save(fig, "rm_accuracy.png")

    pols = results["policies"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.5))
    for ax, metric in zip(axes, ("rule_satisfied", "reward/density")):
        bars(
            ax,
            {p: [pols[p].get(b, {}).get(metric) for b in (*BUCKETS, "all")] for p in pols},
            [*BUCKETS, "all"],
            metric,
        )
    axes[0].set_title("Ground-truth rule satisfaction")
    axes[1].set_title("Reward (density RM)")
    save(fig, "policy_by_bucket.png")

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
        ax.bar(range(len(pols)), [s["mean"] if s else np.nan for s in stats], yerr=[
            [(s["mean"] - s["ci_low"]) if s and s.get("ci_low") is not None else 0 for s in stats],
            [(s["ci_high"] - s["mean"]) if s and s.get("ci_high") is not None else 0 for s in stats]], capsize=3)  # fmt: skip
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
    for h in hypotheses:
        hist = _log_history(root / f"seed{seed}" / f"grpo_{h.lower()}")
        key = "rewards/ground_truth/mean" if any("rewards/ground_truth/mean" in e for e in hist) else "reward"
        steps = [e["step"] for e in hist if key in e]
        axes[1].plot(steps, [e[key] for e in hist if key in e], label=h)
        axes[1].set(xlabel="step", ylabel=key.split("/")[1] if "/" in key else key)
    axes[1].set_title(f"GRPO training batches: ground-truth satisfaction (seed {seed})")
    for ax in axes:
        ax.legend(fontsize=8)
    save(fig, "training_curves.png")
    return paths


def _log_history(stage_dir: Path) -> list[dict[str, Any]]:
    path = stage_dir / "trainer_state.json"
    return json.loads(path.read_text())["log_history"] if path.exists() else []


def run(args: RunnerArguments) -> dict[str, Any]:
    """Run (or resume) the whole experiment and write `results.json`, `report.md` and the plots."""
    root = Path(args.output_dir).resolve()
    log_dir = root / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    stages = build_stages(args)
    check_stage_configs(stages)
    timings = [run_stage(stage, args.launcher, log_dir, i, len(stages)) for i, stage in enumerate(stages, start=1)]
    per_seed = {s: json.loads((root / f"seed{s}" / "eval" / "results.json").read_text()) for s in args.seeds}
    results = aggregate(per_seed, args.hypotheses)
    results["stages"] = timings
    print("[report] writing results.json, plots and report.md", flush=True)
    plots = make_plots(results, root, root / "density", args.hypotheses)
    results["plots"] = plots
    (root / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    write_report(results, root, plots)
    return results
