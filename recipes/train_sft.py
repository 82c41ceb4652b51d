"""SFT stage: TRL `SFTTrainer` on the preferred responses; makes the starting policy for GRPO.

Usage:

    accelerate launch recipes/train_sft.py --config recipes/sft.yaml
    accelerate launch --config_file accelerate_configs/zero3.yaml recipes/train_sft.py --config recipes/scale/sft.yaml
"""

from transformers import AutoModelForCausalLM
from trl import ModelConfig, SFTConfig, SFTTrainer, get_peft_config

from density_rlhf.recipe_kit import (
    DensityScriptArguments,
    distributed_run,
    last_checkpoint,
    load_model_and_tokenizer,
    parse_args,
    setup_logging,
    start_run,
    train_and_save,
)
from density_rlhf.recipes.embedded import build_default_data, creating_command


def to_prompt_completion(split):
    """TRL's prompt-completion format: kept as is, or the chosen responses of preference pairs."""
    if split is None:
        return None
    if "completion" in split.column_names:  # e.g. the synthetic world's `sft` split
        return split.select_columns(["prompt", "completion"])
    return split.select_columns(["prompt", "chosen"]).rename_column("chosen", "completion")


# What this recipe parses (and the runner validates): script, training and model arguments.
DATACLASSES = (DensityScriptArguments, SFTConfig, ModelConfig)
SECTION = None


def main(script_args: DensityScriptArguments, training_args: SFTConfig, model_args: ModelConfig):
    checkpoint = last_checkpoint(training_args, script_args)  # before anything is loaded
    train, test = start_run(script_args, training_args, build_default_data)
    model, tokenizer = load_model_and_tokenizer(
        model_args, training_args, AutoModelForCausalLM, creating_command=creating_command
    )
    trainer = SFTTrainer(
        model,
        training_args,
        train_dataset=to_prompt_completion(train),
        eval_dataset=to_prompt_completion(test) if training_args.eval_strategy != "no" else None,
        processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
    )
    return train_and_save(trainer, training_args, script_args, checkpoint)


if __name__ == "__main__":
    setup_logging()
    with distributed_run():
        main(*parse_args(DATACLASSES, section=SECTION))
