"""Trainer overhead benchmark. Not a test: prints steps/s ratios against TRL's trainers measured in the same run.

    python benchmarks/bench_trainer.py                 # both sections, 5 interleaved rounds each
    python benchmarks/bench_trainer.py --sections rm --rounds 3 --rm-steps 100

- rm:   DensityRewardTrainer vs trl.RewardTrainer, tiny Llama reward model.
- grpo: DensityGRPOTrainer (advantage_mode grpo) vs trl.GRPOTrainer with the same reward functions (the
        trained-RM scorer and the weight-0 ground-truth checker), tiny Llama policy.

Density sampling changes which rows are trained on (a third of the pairs come from rare topics instead of 4%), and
other rows cost other amounts of compute. So the density trainer with the index's weights (alpha = 1) is compared
both with the TRL trainer fed exactly the same draw (`same draw`: only the code differs; this is the overhead) and
with the plain TRL trainer (code and data mix together). Density sampling with alpha = 0 (the same machinery on a
uniform mix) and sampling off are compared with the plain TRL trainer.

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

from density_rlhf import (
    DensityGRPOConfig,
    DensityGRPOTrainer,
    DensityIndex,
    DensityRepeatSampler,
    DensityRewardConfig,
    DensityRewardTrainer,
    DensitySampler,
)
from density_rlhf.experiment.prepare import PrepareDataArguments, prepare_data
from density_rlhf.experiment.world import GroundTruthReward
from density_rlhf.recipe_kit import BuildDensityArguments, build_density
from density_rlhf.reward_model import RewardModelScorer


COMMON = dict(use_cpu=True, bf16=False, report_to=[], save_strategy="no", seed=0, disable_tqdm=True)


def _timed_train(trainer) -> float:
    start = time.perf_counter()
    trainer.train()
    return trainer.state.global_step / (time.perf_counter() - start)


def _compare(section: str, variants: dict, pairs: list[tuple[str, str]], rounds: int, steps: int) -> None:
    """Time every variant once per round (rotating the order); print the median steps/s ratio of each pair."""
    names = list(variants)
    rates = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        with tempfile.TemporaryDirectory() as tmp:
            for name in order:
                rates[name].append(_timed_train(variants[name](tmp)))
        print(
            f"{section:<4} round {r}: " + "  ".join(f"{n} {rates[n][-1]:.2f}" for n in names) + " steps/s", flush=True
        )
    for ours, theirs in pairs:
        ratio = statistics.median(rates[ours]) / statistics.median(rates[theirs])
        print(f"{section:<4} {ours} / {theirs} = {ratio:.3f} (median of {rounds} rounds, {steps} steps)")


def _compare_variants(section: str, ours, trl, baseline: str, rounds: int, steps: int) -> None:
    """The four density variants against the TRL trainer `baseline`, fed the same draw or its own."""
    same = f"{baseline}(same draw)"
    variants = {
        "density(alpha=1)": ours(density_sampling=True),
        same: lambda tmp: trl(tmp, same_draw=True),
        "density(alpha=0)": ours(density_sampling=True, density_alpha=0.0),
        "density-off": ours(density_sampling=False),
        baseline: trl,
    }
    pairs = [("density(alpha=1)", same)] + [
        (name, baseline) for name in ("density(alpha=1)", "density(alpha=0)", "density-off")
    ]
    _compare(section, variants, pairs, rounds, steps)


def _same_draw(trainer, make_sampler):
    """Feed a TRL trainer exactly the rows the density trainer would draw, so only the code differs.

    The sampler is built inside `train()`, as the density trainer builds its own, so both timings include it.
    """
    trainer._get_train_sampler = lambda dataset=None: make_sampler(trainer.train_dataset)
    return trainer


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

    def trl(tmp, same_draw=False):
        trainer = RewardTrainer(model, RewardConfig(f"{tmp}/t", **kw), train_dataset=data, processing_class=tok)
        if same_draw:
            density = DensityIndex.load(index)
            _same_draw(trainer, lambda ds: DensitySampler.from_index(density, ds, seed=0))
        return trainer

    _compare_variants("rm", ours, trl, "RewardTrainer", rounds, steps)


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

    def trl(tmp, same_draw=False):
        scorer = RewardModelScorer(rm)
        args = GRPOConfig(f"{tmp}/t", reward_weights=[1.0, 0.0], **kw)
        trainer = GRPOTrainer(
            policy, [scorer, GroundTruthReward()], args=args, train_dataset=data, processing_class=tok
        )
        scorer.to(trainer.accelerator.device)
        if same_draw:
            density = DensityIndex.load(index)
            _same_draw(trainer, lambda ds: DensityRepeatSampler.from_index(
                density, ds, seed=0, mini_repeat_count=trainer.num_generations,
                batch_size=args.generation_batch_size // trainer.num_generations,
                repeat_count=trainer.num_iterations * args.steps_per_generation,
            ))  # fmt: skip
        return trainer

    _compare_variants("grpo", ours, trl, "GRPOTrainer", rounds, steps)


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
