"""KTO stage: TRL's `KTOTrainer` with density-weighted unpaired preferences (`with_density_sampling`).

Usage:

    density-rlhf kto --config kto.yaml
    accelerate launch recipes/train_kto.py --config recipes/kto.yaml --density_sampling false
    accelerate launch --config_file accelerate_configs/zero3.yaml recipes/train_kto.py --config recipes/kto.yaml \
        --model_name_or_path Qwen/Qwen2.5-0.5B-Instruct --data_dir outputs/data_hh --bf16 true --use_cpu false

The YAML (flat, or its `kto:` section) fills TRL's `KTOConfig` plus the density fields. Preference pairs are
unpaired by TRL (chosen -> label true, rejected -> label false). Under density sampling KTO runs with
`loss_type: apo_zero_unpaired`: the `kto` loss estimates its KL term from completions rotated within TRL's sequential
batches, which a density sampler does not keep (the trainer refuses it).
"""

from transformers import AutoModelForCausalLM
from trl import KTOConfig, KTOTrainer, ModelConfig, get_peft_config

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


DensityKTOConfig = density_config(KTOConfig)
# What this recipe parses (and the runner validates): script, training and model arguments.
DATACLASSES = (DensityScriptArguments, DensityKTOConfig, ModelConfig)
SECTION = "kto"


def main(script_args: DensityScriptArguments, training_args: DensityKTOConfig, model_args: ModelConfig):
    checkpoint = last_checkpoint(training_args, script_args)  # before anything is loaded
    train, test = start_run(script_args, training_args, build_default_data)
    logger.info("KTO (loss_type %s), density sampling %s", training_args.loss_type, training_args.density_sampling)
    model, tokenizer = load_model_and_tokenizer(
        model_args, training_args, AutoModelForCausalLM, creating_command=creating_command
    )
    trainer = with_density_sampling(KTOTrainer)(
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
