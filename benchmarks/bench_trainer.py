"""Trainer overhead benchmark. Not a test: prints steps/s ratios against TRL's trainers measured in the same run.

    python benchmarks/bench_trainer.py                 # both sections, 5 interleaved rounds each
    python benchmarks/bench_trainer.py --sections rm --rounds 3 --rm-steps 100

- rm:   DensityRewardTrainer (density sampling on) vs trl.RewardTrainer, tiny Llama reward model.
- grpo: DensityGRPOTrainer (density sampling on, advantage_mode grpo) vs trl.GRPOTrainer with the same reward
        functions (the trained-RM scorer and the weight-0 ground-truth checker), tiny Llama policy. Density sampling
        draws other prompts (rarer ones, with other completion lengths), so the same trainer with sampling off is
        also timed: that ratio is the wrapper's own overhead.

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


COMMON = dict(use_cpu=True, bf16=False, report_to=[], save_strategy="no", logging_steps=50, seed=0, disable_tqdm=True)


def _timed_train(trainer) -> float:
    start = time.perf_counter()
    trainer.train()
    return trainer.state.global_step / (time.perf_counter() - start)


def bench_rm(root: Path, rounds: int, steps: int) -> None:
    data = load_from_disk(str(root / "data" / "dataset"))["train"]
    model, tok = (
        str(root / "data" / "tiny" / "reward"),
        AutoTokenizer.from_pretrained(root / "data" / "tiny" / "reward"),
    )
    rm_kwargs = dict(
        per_device_train_batch_size=32, max_steps=steps, gradient_checkpointing=False, max_length=256, **COMMON
    )
    ours, theirs = [], []
    for r in range(rounds):
        with tempfile.TemporaryDirectory() as tmp:
            a = DensityRewardConfig(
                f"{tmp}/d", density_sampling=True, density_index_path=str(root / "density"), **rm_kwargs
            )
            ours.append(_timed_train(DensityRewardTrainer(model, a, train_dataset=data, processing_class=tok)))
            b = RewardConfig(f"{tmp}/t", **rm_kwargs)
            theirs.append(_timed_train(RewardTrainer(model, b, train_dataset=data, processing_class=tok)))
        print(f"rm   round {r}: density {ours[-1]:6.1f} steps/s  RewardTrainer {theirs[-1]:6.1f} steps/s", flush=True)
    ratio = statistics.median(ours) / statistics.median(theirs)
    print(f"rm   DensityRewardTrainer / RewardTrainer = {ratio:.3f} (median of {rounds} rounds, {steps} steps each)")


def bench_grpo(root: Path, rounds: int, steps: int) -> None:
    data = load_from_disk(str(root / "data" / "dataset"))["train"]
    policy, rm = str(root / "data" / "tiny" / "policy"), str(root / "data" / "tiny" / "reward")
    tok = AutoTokenizer.from_pretrained(policy)
    grpo_kwargs = dict(
        per_device_train_batch_size=16, num_generations=4, max_completion_length=24, max_steps=steps, **COMMON
    )
    ours, off, theirs = [], [], []
    for r in range(rounds):
        with tempfile.TemporaryDirectory() as tmp:
            for sampling, out in ((True, ours), (False, off)):
                a = DensityGRPOConfig(
                    f"{tmp}/d{sampling}", density_sampling=sampling, density_index_path=str(root / "density"),
                    reward_model_path=rm, **grpo_kwargs,
                )  # fmt: skip
                out.append(_timed_train(DensityGRPOTrainer(policy, args=a, train_dataset=data, processing_class=tok)))
            b = GRPOConfig(f"{tmp}/t", reward_weights=[1.0, 0.0], **grpo_kwargs)
            scorer = RewardModelScorer(rm)
            trainer = GRPOTrainer(
                policy, [scorer, GroundTruthReward()], args=b, train_dataset=data, processing_class=tok
            )
            scorer.to(trainer.accelerator.device)
            theirs.append(_timed_train(trainer))
        print(
            f"grpo round {r}: density on {ours[-1]:6.2f}  off {off[-1]:6.2f}  GRPOTrainer {theirs[-1]:6.2f} steps/s",
            flush=True,
        )
    base = statistics.median(theirs)
    print(
        f"grpo DensityGRPOTrainer / GRPOTrainer = {statistics.median(ours) / base:.3f} with density sampling, "
        f"{statistics.median(off) / base:.3f} without (median of {rounds} rounds, {steps} steps each)"
    )


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
