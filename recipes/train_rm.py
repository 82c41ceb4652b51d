"""Reward-model stage: `DensityRewardTrainer` on the prepared preference pairs.

Usage:

    accelerate launch recipes/train_rm.py --config recipes/hyp_b.yaml
    accelerate launch --config_file accelerate_configs/zero3.yaml recipes/train_rm.py --config recipes/scale/hyp_b.yaml
    python recipes/train_rm.py --config hyp_a.yaml --max_steps 50 --output_dir outputs/try

The YAML's `reward:` section (merged over its top level) fills the arguments below.
"""

from transformers import AutoModelForSequenceClassification
from trl import ModelConfig, get_peft_config

from density_rlhf import DensityRewardConfig, DensityRewardTrainer
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


# What this recipe parses (and the runner validates): script, training and model arguments.
DATACLASSES = (DensityScriptArguments, DensityRewardConfig, ModelConfig)
SECTION = "reward"


def main(script_args: DensityScriptArguments, training_args: DensityRewardConfig, model_args: ModelConfig):
    checkpoint = last_checkpoint(training_args, script_args)  # before anything is loaded
    train, test = start_run(script_args, training_args, build_default_data)
    logger.info("reward model, density sampling %s", training_args.density_sampling)

    model, tokenizer = load_model_and_tokenizer(
        model_args, training_args, AutoModelForSequenceClassification, creating_command=creating_command, num_labels=1
    )
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    peft_config = get_peft_config(model_args)
    if peft_config is not None and peft_config.task_type != "SEQ_CLS":
        # A LoRA adapter for a reward model must train and save the score head with it (PEFT's SEQ_CLS task type).
        if model_args.lora_task_type != "CAUSAL_LM":  # a value the user chose, not TRL's default
            raise RecipeError(f"lora_task_type {model_args.lora_task_type!r}: a reward model needs SEQ_CLS.")
        logger.info("LoRA on a reward model: task_type SEQ_CLS (the score head is trained and saved with the adapter)")
        peft_config.task_type = "SEQ_CLS"
    trainer = DensityRewardTrainer(
        model,
        training_args,
        train_dataset=train,
        eval_dataset=test if training_args.eval_strategy != "no" else None,
        processing_class=tokenizer,
        peft_config=peft_config,
    )
    return train_and_save(trainer, training_args, script_args, checkpoint)


if __name__ == "__main__":
    setup_logging()
    with distributed_run():
        main(*parse_args(DATACLASSES, section=SECTION))
