"""RLOO stage: TRL's `RLOOTrainer` with density-weighted prompts (`with_density_sampling`), scored by a reward model
and reward functions.

Usage:

    density-rlhf rloo --config rloo.yaml
    accelerate launch recipes/train_rloo.py --config recipes/rloo.yaml --density_sampling false

The YAML (flat, or its `rloo:` section) fills TRL's `RLOOConfig` plus the density fields. Each chunk of prompts is
drawn by density weight and repeated `num_generations` times, as TRL's `RepeatSampler` does.
"""

from dataclasses import dataclass, field

from transformers import AutoModelForCausalLM
from trl import ModelConfig, RLOOConfig, RLOOTrainer, get_peft_config

from density_rlhf import density_config, with_density_sampling
from density_rlhf.recipe_kit import (
    RecipeError,
    distributed_run,
    last_checkpoint,
    load_model_and_tokenizer,
    logger,
    parse_args,
    setup_logging,
    start_run,
    train_and_save,
)
from density_rlhf.recipes.embedded import build_default_data, creating_command
from density_rlhf.recipes.train_grpo import GRPOScriptArguments, load_reward_funcs


@dataclass
class RLOOScriptArguments(GRPOScriptArguments):
    r"""
    [`GRPOScriptArguments`] (data and `reward_funcs`) plus the reward model.

    Parameters:
        reward_model_path (`str` or `None`, *optional*):
            A sequence-classification reward model (local directory or Hub id), scored after `reward_funcs`.
    """

    reward_model_path: str | None = field(
        default=None, metadata={"help": "Reward model (directory or Hub id), scored after reward_funcs."}
    )


DensityRLOOConfig = density_config(RLOOConfig)
# What this recipe parses (and the runner validates): script, training and model arguments.
DATACLASSES = (RLOOScriptArguments, DensityRLOOConfig, ModelConfig)
SECTION = "rloo"


def main(script_args: RLOOScriptArguments, training_args: DensityRLOOConfig, model_args: ModelConfig):
    checkpoint = last_checkpoint(training_args, script_args)  # before anything is loaded
    reward_funcs = load_reward_funcs(script_args.reward_funcs) or []
    if script_args.reward_model_path:
        reward_funcs.append(script_args.reward_model_path)  # TRL loads a path as a sequence-classification model
    if not reward_funcs:
        raise RecipeError("RLOO needs a reward: set `reward_model_path` and/or `reward_funcs`.")
    train, test = start_run(script_args, training_args, build_default_data)
    logger.info(
        "RLOO with reward functions %s and reward model %s, density sampling %s",
        script_args.reward_funcs,
        script_args.reward_model_path,
        training_args.density_sampling,
    )
    model, tokenizer = load_model_and_tokenizer(
        model_args, training_args, AutoModelForCausalLM, creating_command=creating_command
    )
    trainer = with_density_sampling(RLOOTrainer)(
        model,
        reward_funcs,
        args=training_args,
        train_dataset=train,
        eval_dataset=test if training_args.eval_strategy != "no" else None,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
    )
    return train_and_save(trainer, training_args, script_args, checkpoint)


if __name__ == "__main__":
    setup_logging()
    with distributed_run():
        main(*parse_args(DATACLASSES, section=SECTION))
