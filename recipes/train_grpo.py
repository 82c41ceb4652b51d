"""GRPO stage: `DensityGRPOTrainer` from the SFT policy, scored by a trained reward model and reward functions.

Usage:

    accelerate launch recipes/train_grpo.py --config recipes/hyp_c.yaml
    accelerate launch --config_file accelerate_configs/zero3.yaml recipes/train_grpo.py --config recipes/scale/hyp_d.yaml

The YAML's `grpo:` section (merged over its top level) fills the arguments below. On the GPU, generation
can go through vLLM exactly as in TRL (`use_vllm: true`, `vllm_mode: colocate` or `server`).
"""

from dataclasses import dataclass, field

from transformers import AutoModelForCausalLM
from trl import ModelConfig, get_peft_config

from density_rlhf import DensityGRPOConfig, DensityGRPOTrainer
from density_rlhf.recipe_kit import (
    DensityScriptArguments,
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


@dataclass
class GRPOScriptArguments(DensityScriptArguments):
    r"""
    [`DensityScriptArguments`] plus reward functions, as in TRL's GRPO script.

    Parameters:
        reward_funcs (`list[str]` or `None`, *optional*):
            Reward functions besides `reward_model_path`: a function of `trl.rewards` by name (e.g.
            `think_format_reward`) or any dotted import path (e.g. `my_lib.rewards.custom_reward`). Their weights are
            `reward_weights`, in this order; the reward model comes last with weight 1.
    """

    reward_funcs: list[str] | None = field(
        default=None,
        metadata={"help": "Reward functions: a name in trl.rewards or a dotted import path (my_lib.rewards.func)."},
    )


def load_reward_funcs(names: list[str] | None) -> list | None:
    """The reward functions `names` refer to (see `GRPOScriptArguments.reward_funcs`); `None` for none."""
    if not names:
        return None
    import importlib

    import trl.rewards

    funcs = []
    for name in names:
        if "." not in name:
            func = None if name.startswith("get_") else getattr(trl.rewards, name, None)  # get_*: factories
            if not callable(func):
                raise RecipeError(
                    f"reward function {name!r} is not a function of trl.rewards; give a dotted import path for "
                    "your own (my_lib.rewards.func)."
                )
        else:
            module_name, attr = name.rsplit(".", 1)
            try:
                func = getattr(importlib.import_module(module_name), attr, None)
            except ImportError as err:
                raise RecipeError(f"reward function {name!r}: cannot import {module_name!r} ({err}).") from None
            if not callable(func):
                raise RecipeError(f"reward function {name!r}: {module_name} has no callable {attr!r}.")
        funcs.append(func)
    return funcs


# What this recipe parses (and the runner validates): script, training and model arguments.
DATACLASSES = (GRPOScriptArguments, DensityGRPOConfig, ModelConfig)
SECTION = "grpo"


def main(script_args: GRPOScriptArguments, training_args: DensityGRPOConfig, model_args: ModelConfig):
    checkpoint = last_checkpoint(training_args, script_args)  # before anything is loaded
    train, test = start_run(script_args, training_args, build_default_data)
    reward_funcs = load_reward_funcs(script_args.reward_funcs)
    logger.info(
        "GRPO with reward functions %s and reward model %s, density sampling %s, advantages %s",
        script_args.reward_funcs,
        training_args.reward_model_path,
        training_args.density_sampling,
        training_args.advantage_mode,
    )
    model, tokenizer = load_model_and_tokenizer(
        model_args, training_args, AutoModelForCausalLM, creating_command=creating_command
    )
    trainer = DensityGRPOTrainer(
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
