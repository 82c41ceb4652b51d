"""What prompt selection by reward signal buys: GRPO on the synthetic world's 0/1 rule checker (the positive control's
setting, where zero-variance groups occur), with uniform, density, learnability and density × learnability prompts,
at the same number of generated completions, over seeds.

    python benchmarks/selection_grpo.py --run_dir outputs/run --seeds 0 1 2     # after `make demo`

Each arm starts from the seed's SFT policy of a finished `make demo` run and trains `--steps` GRPO steps of 8 prompts
× 8 generations (hyp_o.yaml's settings, on the world's kNN index); a checkpoint every `--eval_every` steps is sampled
on the held-out prompts (16 per topic × 4 samples) and scored by the rule checker. `learnability_null` is the negative
control: the same rule with a Beta(1000, 1000) prior, whose factors stay within 0.2% of 1, so nothing should move.
Prints the table and writes `selection_grpo.json` under `--out`.
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

ARMS = {
    "uniform": ["--density_sampling", "false"],
    "density": ["--density_sampling", "true"],
    "learnability": ["--density_sampling", "false", "--learnability", "pass_rate"],
    "density_learnability": ["--density_sampling", "true", "--learnability", "pass_rate"],
    "learnability_null": ["--density_sampling", "false", "--learnability", "pass_rate",
                          "--learnability_prior", "1000", "1000"],
}  # fmt: skip
COMPLETIONS_PER_STEP = 64  # 8 prompts x 8 generations (hyp_o.yaml)


def train(run_dir: Path, out: Path, seed: int, arm: str, steps: int, eval_every: int) -> Path:
    target = out / f"seed{seed}" / arm
    if (target / "trainer_state.json").exists():
        return target
    command = [
        sys.executable, str(REPO / "recipes" / "train_grpo.py"), "--config", str(REPO / "recipes" / "hyp_o.yaml"),
        "--seed", str(seed), "--data_dir", str(run_dir / f"world{seed}" / "data"),
        "--density_index_path", str(run_dir / f"world{seed}" / "density"), "--density_pair_weighting", "per_prompt",
        "--model_name_or_path", str(run_dir / f"seed{seed}" / "sft"), "--output_dir", str(target),
        "--max_steps", str(steps), "--save_strategy", "steps", "--save_steps", str(eval_every),
        "--save_total_limit", "100", "--report_to", "none", "--overwrite_output_dir", "true", *ARMS[arm],
    ]  # fmt: skip
    log = out / "logs" / f"seed{seed}_{arm}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        subprocess.run(command, stdout=f, stderr=subprocess.STDOUT, check=True)
    return target


def evaluate(run_dir: Path, target: Path, seed: int, steps: int, eval_every: int) -> dict:
    from datasets import load_from_disk

    from density_rlhf.experiment.evaluation import generate_samples, ground_truth, held_out_prompts

    rows = held_out_prompts(load_from_disk(str(run_dir / f"world{seed}" / "data" / "dataset"))["test"], 16)
    curve = {}
    for step in range(0, steps + 1, eval_every):
        policy = run_dir / f"seed{seed}" / "sft" if step == 0 else target / f"checkpoint-{step}"
        samples = generate_samples(str(policy), [r["prompt"] for r in rows], 4, seed=seed)
        curve[step] = ground_truth(rows, samples)
    final = curve[steps]
    topics = sorted({r["topic"] for r in rows})
    per_topic = {t: float(final[[r["topic"] == t for r in rows]].mean()) for t in topics}
    history = json.loads((target / "trainer_state.json").read_text())["log_history"]
    logged = [h for h in history if "frac_reward_zero_std" in h]
    runtime = next(h["train_runtime"] for h in history if "train_runtime" in h)
    return {
        "curve": {str(step): float(values.mean()) for step, values in curve.items()},
        "lowest_topic": min(per_topic.values()),
        "per_topic": per_topic,
        "zero_variance_frac": float(np.mean([h["frac_reward_zero_std"] for h in logged])),
        "seconds_per_step": runtime / steps,
    }


def completions_to_reach(curve: dict[str, float], level: float) -> float | None:
    """Generated completions at which the (seed-mean) curve first reaches `level`, linearly interpolated."""
    steps = sorted(int(s) for s in curve)
    for before, after in zip(steps, steps[1:]):
        lo, hi = curve[str(before)], curve[str(after)]
        if hi >= level:
            t = 0.0 if hi == lo else min(1.0, max(0.0, (level - lo) / (hi - lo)))
            return (before + t * (after - before)) * COMPLETIONS_PER_STEP
    return None


def interval(stat: dict) -> str:
    return f" [{stat['ci_low']:+.3f}, {stat['ci_high']:+.3f}]" if stat.get("ci_low") is not None else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run_dir", default="outputs/run")
    parser.add_argument("--out", default="outputs/selection_grpo")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arms", nargs="+", default=list(ARMS))
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--eval_every", type=int, default=50)
    args = parser.parse_args()
    run_dir, out = Path(args.run_dir).resolve(), Path(args.out).resolve()
    results: dict[str, dict[int, dict]] = {arm: {} for arm in args.arms}
    start = time.time()
    for seed in args.seeds:
        for arm in args.arms:
            target = train(run_dir, out, seed, arm, args.steps, args.eval_every)
            results[arm][seed] = evaluate(run_dir, target, seed, args.steps, args.eval_every)
            print(f"seed {seed} {arm}: {results[arm][seed]['curve']}", flush=True)
    from density_rlhf.experiment.stats import mean_ci

    uniform_final = np.mean([r["curve"][str(args.steps)] for r in results["uniform"].values()])
    table = {}
    for arm, by_seed in results.items():
        mean_curve = {
            s: float(np.mean([r["curve"][s] for r in by_seed.values()])) for s in by_seed[args.seeds[0]]["curve"]
        }
        diff = [
            by_seed[s]["curve"][str(args.steps)] - results["uniform"][s]["curve"][str(args.steps)] for s in by_seed
        ]
        table[arm] = {
            "mean_curve": mean_curve,
            "final_minus_uniform": mean_ci(diff),
            "completions_to_uniform_final": completions_to_reach(mean_curve, uniform_final),
            "lowest_topic": mean_ci([r["lowest_topic"] for r in by_seed.values()]),
            "zero_variance_frac": mean_ci([r["zero_variance_frac"] for r in by_seed.values()]),
            "seconds_per_step": mean_ci([r["seconds_per_step"] for r in by_seed.values()]),
        }
    budget = args.steps * COMPLETIONS_PER_STEP
    print(f"\nuniform's final rule satisfaction {uniform_final:.3f} after {budget} completions ({args.seeds})")
    print("| arm | curve (0, ...) | final − uniform | completions to uniform's final | zero-var groups | "
          "lowest topic | s/step |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for arm, row in table.items():
        d = row["final_minus_uniform"]
        reach = row["completions_to_uniform_final"]
        print(
            f"| {arm} | {', '.join(f'{v:.3f}' for v in row['mean_curve'].values())} | {d['mean']:+.3f}"
            f"{interval(d)} | "
            f"{'not reached' if reach is None else f'{reach:,.0f} ({reach / budget:.2f}x)'} | "
            f"{row['zero_variance_frac']['mean']:.3f} | {row['lowest_topic']['mean']:.3f} | "
            f"{row['seconds_per_step']['mean']:.2f} |"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / "selection_grpo.json").write_text(json.dumps({"per_seed": results, "table": table}, indent=2) + "\n")
    print(f"\n{time.time() - start:.0f}s; {out / 'selection_grpo.json'}")


if __name__ == "__main__":
    main()
