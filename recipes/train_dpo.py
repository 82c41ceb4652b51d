"""DPO stage: TRL's `DPOTrainer` with density-weighted preference pairs (`with_density_sampling`).

Usage:

    density-rlhf dpo --config dpo.yaml
    accelerate launch recipes/train_dpo.py --config recipes/dpo.yaml --density_sampling false
    accelerate launch --config_file accelerate_configs/zero3.yaml recipes/train_dpo.py --config recipes/dpo.yaml \
        --model_name_or_path Qwen/Qwen2.5-0.5B-Instruct --data_dir outputs/data_hh --bf16 true --use_cpu false

The YAML (flat, or its `dpo:` section) fills TRL's `DPOConfig` plus the density fields.
"""

from transformers import AutoModelForCausalLM
from trl import DPOConfig, DPOTrainer, ModelConfig, get_peft_config

from density_rlhf import density_config, with_density_sampling
from density_rlhf.recipe_kit import (
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
from density_rlhf.recipes.embedded import build_default_data, creating_command


DensityDPOConfig = density_config(DPOConfig)
# What this recipe parses (and the runner validates): script, training and model arguments.
DATACLASSES = (DensityScriptArguments, DensityDPOConfig, ModelConfig)
SECTION = "dpo"


def main(script_args: DensityScriptArguments, training_args: DensityDPOConfig, model_args: ModelConfig):
    checkpoint = last_checkpoint(training_args, script_args)  # before anything is loaded
    train, test = start_run(script_args, training_args, build_default_data)
    logger.info("DPO, density sampling %s", training_args.density_sampling)
    model, tokenizer = load_model_and_tokenizer(
        model_args, training_args, AutoModelForCausalLM, creating_command=creating_command
    )
    trainer = with_density_sampling(DPOTrainer)(
        model,
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
