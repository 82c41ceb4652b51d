"""The training recipes' run: script arguments, train/eval splits, model loading, seeding, resume and saving."""

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import transformers
from trl import ScriptArguments

from .recipe import RecipeError
from .stages import DEFAULT_DATA_DIR, DefaultBuilder, ensure_data, ensure_index_for


logger = logging.getLogger("density_rlhf")


@dataclass
class DensityScriptArguments(ScriptArguments):
    r"""
    Script arguments of the training recipes: TRL's [`~trl.ScriptArguments`] plus where the prepared data lives.

    Parameters:
        data_dir (`str`, *optional*, defaults to `"outputs/data"`):
            Output of `recipes/prepare_data.py` (`<data_dir>/dataset`). Used unless `dataset_name` is set.
        build_missing (`bool`, *optional*, defaults to `True`):
            When the shipped default locations (`outputs/data`, `outputs/density`) are missing, build the embedded
            default (synthetic world, default index) there first, so a fresh clone runs. Any other missing
            `data_dir` or `density_index_path` is an error naming the command that creates it, and so is every
            missing directory with `false`.
        max_train_samples / max_eval_samples (`int` or `None`, *optional*):
            Keep only the first rows of each split (for smoke runs).
        overwrite_output_dir (`bool`, *optional*, defaults to `False`):
            Train from the start into an `output_dir` that holds checkpoints, deleting those checkpoints first. Without
            it such an `output_dir` is an error unless `resume_from_checkpoint` is set (`true`: the newest checkpoint
            there; or a checkpoint's path).

    `dataset_streaming` and `ignore_bias_buffers` (from TRL) are refused with a `ValueError`: they would have no
    effect.
    """

    data_dir: str = field(default=DEFAULT_DATA_DIR, metadata={"help": "Output directory of recipes/prepare_data.py."})
    build_missing: bool = field(
        default=True, metadata={"help": "Build the synthetic data and index at the default locations when missing."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Truncate the train split."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Truncate the eval split."})
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Train from the start into an output_dir with checkpoints, deleting those checkpoints."},
    )

    def __post_init__(self):
        # Inherited from TRL's ScriptArguments but without an effect here: refuse them instead of ignoring them.
        if self.dataset_streaming:
            raise ValueError(
                "dataset_streaming is not supported: density sampling draws rows of a map-style dataset by index. "
                "Load the dataset fully (dataset_streaming: false) or prepare it with recipes/prepare_data.py."
            )
        if self.ignore_bias_buffers:
            raise ValueError(
                "ignore_bias_buffers (a DDP setting of TRL's DPO script) has no effect in these recipes; remove it."
            )


def load_train_eval(script_args: DensityScriptArguments, seed: int = 0, build_default: DefaultBuilder | None = None):
    """Train and eval splits: a Hub/local dataset when `dataset_name` is set, else the prepared `data_dir`
    (`build_default` writes the shipped default location when it is missing, see `ensure_data`)."""
    from accelerate import PartialState

    if script_args.dataset_name:
        data = datasets.load_dataset(script_args.dataset_name, name=script_args.dataset_config)
    else:
        with PartialState().main_process_first():  # rank 0 builds missing data, the others then load it
            data = ensure_data(script_args.data_dir, seed, script_args.build_missing, build_default)
    if script_args.dataset_train_split not in data:
        raise ValueError(f"split {script_args.dataset_train_split!r} not in {list(data)}.")
    train = data[script_args.dataset_train_split]
    test = data.get(script_args.dataset_test_split)
    if script_args.max_train_samples:
        train = train.select(range(min(script_args.max_train_samples, len(train))))
    if test is not None and script_args.max_eval_samples:
        test = test.select(range(min(script_args.max_eval_samples, len(test))))
    return train, test


def load_model_and_tokenizer(
    model_args, training_args, model_class, *, creating_command: Callable[[str], str] | None = None, **model_kwargs
):
    """Tokenizer and model from `model_args` (revision, dtype, attention) with `trust_remote_code` from the config.
    A missing local model is a `RecipeError` that names `creating_command(path)`, the command that writes it, when
    the caller knows one."""
    from transformers import AutoTokenizer

    trust = getattr(training_args, "trust_remote_code", False)
    name = model_args.model_name_or_path
    if not name:
        raise RecipeError("model_name_or_path is not set: pass `--model_name_or_path <directory or Hub id>`.")
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, revision=model_args.model_revision, trust_remote_code=trust)
    except OSError as err:
        if Path(name).exists():
            raise
        hint = f"create it first: `{creating_command(name)}`" if creating_command else "run the stage that writes it"
        raise RecipeError(
            f"model_name_or_path {name!r} is not a local directory and could not be loaded from the Hub "
            f"({type(err).__name__}). If it is the output of an earlier stage, {hint}."
        ) from None
    model = model_class.from_pretrained(
        model_args.model_name_or_path,
        revision=model_args.model_revision,
        trust_remote_code=trust,
        dtype=model_args.dtype or "float32",
        attn_implementation=model_args.attn_implementation,
        **model_kwargs,
    )
    return model, tokenizer


def start_run(
    script_args: DensityScriptArguments, training_args, build_default: DefaultBuilder | None = None
) -> tuple:
    """Seed everything from `training_args.seed`, load the splits (`build_default` as for `ensure_data`), and build a
    missing default density index."""
    transformers.set_seed(training_args.seed)
    train, test = load_train_eval(script_args, training_args.seed, build_default)
    ensure_index_for(training_args, script_args)
    return train, test


_RESUME_LATEST = ("true", "latest")
_NO_RESUME = ("false", "")


def last_checkpoint(training_args, script_args: DensityScriptArguments | None = None) -> str | None:
    """The checkpoint to resume from, only when asked, as in TRL's scripts: `resume_from_checkpoint` `true` takes the
    newest checkpoint in `output_dir` (none there: train from the start), a path takes that checkpoint. An
    `output_dir` holding checkpoints with no `resume_from_checkpoint` is a `RecipeError` naming both choices, unless
    `script_args.overwrite_output_dir` (its checkpoints are then deleted and training starts anew). Call it before
    loading anything, on every rank."""
    value = training_args.resume_from_checkpoint
    output_dir = training_args.output_dir
    existing = transformers.trainer_utils.get_last_checkpoint(output_dir) if os.path.isdir(output_dir) else None
    asked = None if value is None or str(value).strip().lower() in _NO_RESUME else str(value)
    if asked is None:
        if existing is None:
            return None
        if script_args is not None and script_args.overwrite_output_dir:
            _delete_checkpoints(output_dir)
            return None
        raise RecipeError(
            f"output_dir {output_dir} already holds checkpoints (newest {Path(existing).name}): resume with "
            "`--resume_from_checkpoint true` (or a checkpoint's path), or train anew with another `--output_dir` or "
            "`--overwrite_output_dir true` (deletes its checkpoints)."
        )
    if asked.lower() in _RESUME_LATEST:
        if existing is None:
            logger.info("resume_from_checkpoint: no checkpoint in %s yet, training from the start", output_dir)
            return None
        logger.info("resuming from %s", existing)
        return existing
    if not os.path.isdir(asked):
        raise RecipeError(f"resume_from_checkpoint {asked!r} is not a directory: give a checkpoint's path, or `true`.")
    logger.info("resuming from %s", asked)
    return asked


def _delete_checkpoints(output_dir: str) -> None:
    """Delete the `checkpoint-*` directories of `output_dir` on the main process; every rank waits for it."""
    import shutil

    from accelerate import PartialState

    state = PartialState()
    if state.is_main_process:
        for path in sorted(Path(output_dir).glob(f"{transformers.trainer_utils.PREFIX_CHECKPOINT_DIR}-*")):
            if path.is_dir():
                shutil.rmtree(path)
        logger.warning("overwrite_output_dir: deleted the checkpoints in %s, training from the start", output_dir)
    state.wait_for_everyone()


def train_and_save(trainer, training_args, script_args, checkpoint: str | None) -> dict[str, float]:
    """Train (resuming from `checkpoint`), evaluate, save the model and card, push when asked."""
    result = trainer.train(resume_from_checkpoint=checkpoint)
    metrics = dict(result.metrics)
    trainer.log_metrics("train", metrics)
    trainer.save_metrics("train", metrics)
    trainer.save_state()
    if trainer.eval_dataset is not None and training_args.eval_strategy != "no":
        eval_metrics = trainer.evaluate()
        trainer.log_metrics("eval", eval_metrics)
        trainer.save_metrics("eval", eval_metrics)
        metrics.update(eval_metrics)
    trainer.save_model(training_args.output_dir)
    dataset_name = script_args.dataset_name or script_args.data_dir
    if trainer.accelerator.is_main_process:
        trainer.create_model_card(dataset_name=dataset_name)
        trainer.model.config.use_cache = True
        trainer.model.config.save_pretrained(training_args.output_dir)
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=dataset_name)
    logger.info("saved to %s", training_args.output_dir)
    return metrics
