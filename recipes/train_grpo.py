"""GRPO stage (Hypotheses A-D): `DensityGRPOTrainer` from the SFT policy, scored by the hypothesis's reward model.

Usage:

    accelerate launch recipes/train_grpo.py --config recipes/hyp_c.yaml
    accelerate launch --config_file accelerate_configs/zero3.yaml recipes/train_grpo.py --config recipes/scale/hyp_d.yaml

The hypothesis YAML's `grpo:` section (merged over its top level) fills the arguments below. On the GPU, generation
can go through vLLM exactly as in TRL (`use_vllm: true`, `vllm_mode: colocate` or `server`).
"""

import copy
from dataclasses import dataclass, field

from transformers import AutoModelForCausalLM
from trl import ModelConfig, get_peft_config

from density_rlhf import DensityGRPOConfig, DensityGRPOTrainer
from density_rlhf.recipes.embedded import build_default_data
from density_rlhf.scripts import (
    DensityScriptArguments,
    distributed_run,
    last_checkpoint,
    load_model_and_tokenizer,
    logger,
    parse_args,
    setup_logging,
    start_run,
    train_and_save,
)


GROUND_TRUTH_MODES = ("log", "reward", "off")


@dataclass
class GRPOScriptArguments(DensityScriptArguments):
    r"""
    [`DensityScriptArguments`] plus the synthetic world's ground truth.

    Parameters:
        ground_truth_reward (`str`, *optional*, defaults to `"off"`):
            The synthetic world's rule checker (`density_rlhf.experiment.world.GroundTruthReward`), opt-in: `log`
            adds it as a reward function with weight 0 (logged, not optimized), `reward` optimizes it (the oracle arm
            O), `off` leaves it out. Needs the world's `topic` column.
    """

    ground_truth_reward: str = field(
        default="off", metadata={"help": f"Synthetic-world rule checker as a reward: one of {GROUND_TRUTH_MODES}."}
    )

    def __post_init__(self):
        super().__post_init__()
        if self.ground_truth_reward not in GROUND_TRUTH_MODES:
            raise ValueError(
                f"ground_truth_reward must be one of {GROUND_TRUTH_MODES}, got {self.ground_truth_reward!r}."
            )


def ground_truth_funcs(script_args: GRPOScriptArguments, training_args: DensityGRPOConfig, train) -> tuple:
    """The reward functions to pass (the rule checker or none) and the config with their weights."""
    if script_args.ground_truth_reward == "off":
        return None, training_args
    from density_rlhf.experiment.world import GroundTruthReward

    if "topic" not in train.column_names:
        raise ValueError(
            f"ground_truth_reward={script_args.ground_truth_reward!r} needs the synthetic world's `topic` column; set "
            "ground_truth_reward: off for other data."
        )
    if training_args.reward_weights is not None:
        raise ValueError("reward_weights would be replaced by ground_truth_reward's weight: remove one of them.")
    training_args = copy.copy(training_args)
    training_args.reward_weights = [1.0 if script_args.ground_truth_reward == "reward" else 0.0]
    return [GroundTruthReward()], training_args


# What this recipe parses (and the runner validates): script, training and model arguments.
DATACLASSES = (GRPOScriptArguments, DensityGRPOConfig, ModelConfig)
SECTION = "grpo"


def main(script_args: GRPOScriptArguments, training_args: DensityGRPOConfig, model_args: ModelConfig):
    train, test = start_run(script_args, training_args, build_default_data)
    reward_funcs, training_args = ground_truth_funcs(script_args, training_args, train)
    logger.info(
        "hypothesis %s: GRPO with reward model %s, density sampling %s, advantages %s", training_args.hypothesis,
        training_args.reward_model_path, training_args.density_sampling, training_args.advantage_mode,
    )  # fmt: skip
    model, tokenizer = load_model_and_tokenizer(model_args, training_args, AutoModelForCausalLM)
    trainer = DensityGRPOTrainer(
        model, reward_funcs, args=training_args, train_dataset=train,
        eval_dataset=test if training_args.eval_strategy != "no" else None, processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
    )  # fmt: skip
    return train_and_save(trainer, training_args, script_args, last_checkpoint(training_args))


if __name__ == "__main__":
    setup_logging()
    with distributed_run():
        main(*parse_args(DATACLASSES, section=SECTION))
