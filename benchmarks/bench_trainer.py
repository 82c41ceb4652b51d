"""Trainer overhead benchmark. Not a test: prints steps/s ratios against TRL's trainers measured in the same run.

    python benchmarks/bench_trainer.py                 # both sections, 5 interleaved rounds each
    python benchmarks/bench_trainer.py --sections rm --rounds 3 --rm-steps 100

- rm:   DensityRewardTrainer vs trl.RewardTrainer, tiny Llama reward model.
- grpo: DensityGRPOTrainer (advantage_mode grpo) vs trl.GRPOTrainer with the same reward functions (the
        trained-RM scorer and the weight-0 ground-truth checker), tiny Llama policy.

Each is timed three ways: density sampling with the index's weights (alpha = 1), density sampling with alpha = 0
(the same machinery drawing a uniform mix, which isolates the sampler's and the logging's cost), and sampling off.
On the synthetic world alpha = 1 moves a third of the batches to rare topics whose answers are longer, so part of
its ratio is the data, not the code.

Rounds alternate the two trainers so machine drift hits both; the ratio is of the median steps/s. Only `train()` is
timed (construction and dataset preprocessing excluded).
"""

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

from datasets import load_from_disk
from transformers import AutoTokenizer
from trl import GRPOConfig, GRPOTrainer, RewardConfig, RewardTrainer

from density_rlhf import DensityGRPOConfig, DensityGRPOTrainer, DensityRewardConfig, DensityRewardTrainer
from density_rlhf.data.prepare import PrepareDataArguments, prepare_data
from density_rlhf.grpo_trainer import GroundTruthReward, RewardModelScorer
from density_rlhf.stages import BuildDensityArguments, build_density


COMMON = dict(use_cpu=True, bf16=False, report_to=[], save_strategy="no", seed=0, disable_tqdm=True)


def _timed_train(trainer) -> tuple[float, float]:
    """Steps/s and tokens/s of `trainer.train()` (tokens as counted by TRL's `num_tokens` metric)."""
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    tokens = max((h["num_tokens"] for h in trainer.state.log_history if "num_tokens" in h), default=float("nan"))
    return trainer.state.global_step / seconds, tokens / seconds


def _compare(section: str, variants: dict, rounds: int, steps: int) -> None:
    """Time every variant once per round (rotating the order); print median steps/s and tokens/s ratios."""
    names = list(variants)
    steps_s = {name: [] for name in names}
    tokens_s = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        with tempfile.TemporaryDirectory() as tmp:
            for name in order:
                a, b = _timed_train(variants[name](tmp))
                steps_s[name].append(a)
                tokens_s[name].append(b)
        print(
            f"{section:<4} round {r}: " + "  ".join(f"{n} {steps_s[n][-1]:.2f}" for n in names) + " steps/s",
            flush=True,
        )
    base, base_tok = statistics.median(steps_s[names[-1]]), statistics.median(tokens_s[names[-1]])
    for name in names[:-1]:
        print(
            f"{section:<4} {name} / {names[-1]}: steps/s {statistics.median(steps_s[name]) / base:.3f}, "
            f"tokens/s {statistics.median(tokens_s[name]) / base_tok:.3f} (median of {rounds} rounds, {steps} steps)"
        )


def bench_rm(root: Path, rounds: int, steps: int) -> None:
    data = load_from_disk(str(root / "data" / "dataset"))["train"]
    model = str(root / "data" / "tiny" / "reward")
    tok = AutoTokenizer.from_pretrained(model)
    kw = dict(
        per_device_train_batch_size=32,
        max_steps=steps,
        logging_steps=steps,
        gradient_checkpointing=False,
        max_length=256,
        **COMMON,
    )
    index = str(root / "density")

    def ours(**density):
        return lambda tmp: DensityRewardTrainer(
            model, DensityRewardConfig(f"{tmp}/d", density_index_path=index, **density, **kw), train_dataset=data,
            processing_class=tok,
        )  # fmt: skip

    _compare("rm", {
        "density(alpha=1)": ours(density_sampling=True),
        "density(alpha=0)": ours(density_sampling=True, density_alpha=0.0),
        "density-off": ours(density_sampling=False),
        "RewardTrainer": lambda tmp: RewardTrainer(model, RewardConfig(f"{tmp}/t", **kw), train_dataset=data, processing_class=tok),
    }, rounds, steps)  # fmt: skip


def bench_grpo(root: Path, rounds: int, steps: int) -> None:
    data = load_from_disk(str(root / "data" / "dataset"))["train"]
    policy, rm = str(root / "data" / "tiny" / "policy"), str(root / "data" / "tiny" / "reward")
    tok = AutoTokenizer.from_pretrained(policy)
    kw = dict(
        per_device_train_batch_size=16,
        num_generations=4,
        max_completion_length=24,
        max_steps=steps,
        logging_steps=steps,
        **COMMON,
    )
    index = str(root / "density")

    def ours(**density):
        return lambda tmp: DensityGRPOTrainer(
            policy, args=DensityGRPOConfig(f"{tmp}/d", density_index_path=index, reward_model_path=rm, **density, **kw),
            train_dataset=data, processing_class=tok,
        )  # fmt: skip

    def trl(tmp):
        scorer = RewardModelScorer(rm)
        args = GRPOConfig(f"{tmp}/t", reward_weights=[1.0, 0.0], **kw)
        trainer = GRPOTrainer(
            policy, [scorer, GroundTruthReward()], args=args, train_dataset=data, processing_class=tok
        )
        scorer.to(trainer.accelerator.device)
        return trainer

    _compare("grpo", {
        "density(alpha=1)": ours(density_sampling=True),
        "density(alpha=0)": ours(density_sampling=True, density_alpha=0.0),
        "density-off": ours(density_sampling=False),
        "GRPOTrainer": trl,
    }, rounds, steps)  # fmt: skip


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", nargs="+", default=["rm", "grpo"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rm-steps", type=int, default=150)
    parser.add_argument("--grpo-steps", type=int, default=20)
    parser.add_argument("--workdir", default=None, help="reuse a prepared data/density directory")
    args = parser.parse_args()
    logging.disable(logging.WARNING)
    root = Path(args.workdir or tempfile.mkdtemp(prefix="bench_trainer_"))
    if not (root / "density" / "metadata.json").exists():
        prepare_data(PrepareDataArguments(output_dir=str(root / "data")))
        build_density(BuildDensityArguments(data_dir=str(root / "data"), density_dir=str(root / "density")))
    if "rm" in args.sections:
        bench_rm(root, args.rounds, args.rm_steps)
    if "grpo" in args.sections:
        bench_grpo(root, args.rounds, args.grpo_steps)


if __name__ == "__main__":
    main()
