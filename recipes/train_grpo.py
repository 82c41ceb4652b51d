"""GRPO stage (Hypotheses A-D): `DensityGRPOTrainer` from the SFT policy, scored by the hypothesis's reward model.

Usage:

    accelerate launch recipes/train_grpo.py --config recipes/hyp_c.yaml
    accelerate launch --config_file accelerate_configs/zero3.yaml recipes/train_grpo.py --config recipes/scale/hyp_d.yaml

The hypothesis YAML's `grpo:` section (merged over its top level) fills the arguments below. On the GPU, generation
can go through vLLM exactly as in TRL (`use_vllm: true`, `vllm_mode: colocate` or `server`).
"""

from transformers import AutoModelForCausalLM
from trl import ModelConfig, get_peft_config

from density_rlhf import DensityGRPOConfig, DensityGRPOTrainer
from density_rlhf.cli import (
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


def main(script_args: DensityScriptArguments, training_args: DensityGRPOConfig, model_args: ModelConfig):
    train, test = start_run(script_args, training_args)
    logger.info(
        "hypothesis %s: GRPO with reward model %s, density sampling %s, advantages %s", training_args.hypothesis,
        training_args.reward_model_path, training_args.density_sampling, training_args.advantage_mode,
    )  # fmt: skip
    model, tokenizer = load_model_and_tokenizer(model_args, training_args, AutoModelForCausalLM)
    trainer = DensityGRPOTrainer(
        model, args=training_args, train_dataset=train,
        eval_dataset=test if training_args.eval_strategy != "no" else None, processing_class=tokenizer,
        peft_config=get_peft_config(model_args),
    )  # fmt: skip
    return train_and_save(trainer, training_args, script_args, last_checkpoint(training_args))


if __name__ == "__main__":
    setup_logging()
    with distributed_run():
        main(*parse_args([DensityScriptArguments, DensityGRPOConfig, ModelConfig], section="grpo"))
