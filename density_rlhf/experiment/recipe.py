"""The run skeleton every recipe shares: config resolution, sectioned hypothesis YAMLs, data, seeding and saving.

Hypothesis YAMLs (`recipes/hyp_*.yaml`) are read by several scripts. Top-level keys go to every script; a section
(`reward:`, `grpo:`) goes only to the script of that name. A `defaults:` key names a shared file (`defaults.yaml`) whose
settings lie underneath, so each hypothesis file states only what differs. Each script merges its section over the top
level and hands the result to `trl.TrlParser`, so unknown keys fail and every field can still be overridden on the
command line.
"""

import contextlib
import dataclasses
import difflib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import transformers
import yaml
from trl import ScriptArguments


def _recipes_dir() -> Path:
    """Where `density_rlhf.recipes` lives: `recipes/` of a checkout (editable install) or the installed package."""
    import importlib.util

    spec = importlib.util.find_spec("density_rlhf.recipes")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("density_rlhf.recipes is not installed: reinstall density_rlhf (`pip install -e .`).")
    return Path(list(spec.submodule_search_locations)[0]).resolve()


RECIPES_DIR = _recipes_dir()
SECTIONS = ("reward", "grpo", "sft", "evaluate")
# Keys a recipe YAML may hold besides the parsed fields: TRL's `env`, the `defaults:` file and the sections.
STRUCTURAL_KEYS = ("env", "defaults", *SECTIONS)


class _UniqueKeyLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that refuses a key given twice in one mapping (PyYAML keeps the last one silently)."""


def _construct_unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ConfigKeyError(
                f"{key_node.start_mark.name}, line {key_node.start_mark.line + 1}: key {key!r} is given twice; "
                "keep one."
            )
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)
logger = logging.getLogger("density_rlhf")


def resolve_config(path: str, recipes_dir: str | Path = RECIPES_DIR) -> str:
    """`path` if it exists, else the file of that name in `recipes/` (so `--config hyp_b.yaml` works anywhere)."""
    candidate = Path(path)
    if candidate.exists():
        return str(candidate)
    for fallback in (Path(recipes_dir) / path, Path(recipes_dir) / candidate.name):
        if fallback.exists():
            return str(fallback)
    raise FileNotFoundError(f"Config {path!r} not found in the working directory nor in {recipes_dir}.")


def read_config(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A recipe YAML with its `defaults:` file (a path relative to it) merged underneath: top-level keys override the
    defaults' top level, a section's keys override the defaults' section of that name, and `section: null` drops
    it."""
    path = Path(path).resolve()
    if path in _chain:
        raise ValueError(f"defaults cycle: {' -> '.join(map(str, (*_chain, path)))}")
    with open(path) as f:
        config = yaml.load(f, Loader=_UniqueKeyLoader) or {}  # noqa: S506 - a SafeLoader subclass
    if not isinstance(config, dict):
        raise ValueError(f"Config file {path} must contain a YAML mapping.")
    base_name = config.pop("defaults", None)
    if base_name is None:
        return config
    base_path = path.parent / str(base_name)
    if not base_path.exists():
        raise FileNotFoundError(f"{path}: defaults file {base_name!r} not found next to it ({base_path}).")
    merged = read_config(base_path, (*_chain, path))
    for key, value in config.items():
        if key in SECTIONS and value is None:  # `reward: null` drops the defaults' section
            merged.pop(key, None)
        elif key in SECTIONS and isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    return merged


def load_config(path: str, section: str | None = None) -> dict[str, Any]:
    """The flat config a script sees: top-level keys, overridden by `section`'s keys when the file has sections."""
    config = read_config(path)
    sections = {name: config.pop(name) for name in SECTIONS if name in config}
    if not sections:
        return config
    if section is None or section not in sections:
        raise ValueError(f"{path} has sections {sorted(sections)} but none for this script ({section!r}).")
    if not isinstance(sections[section], dict):
        raise ValueError(f"Section `{section}:` of {path} must be a mapping.")
    return {**config, **sections[section]}


def parse_args(
    dataclass_types: Sequence[type], args: Sequence[str] | None = None, section: str | None = None
) -> tuple:
    """Parse `--config file.yaml` (its `section`) plus CLI overrides into `dataclass_types` with `trl.TrlParser`."""
    from trl import TrlParser

    args = list(sys.argv[1:] if args is None else args)
    if any(a in ("-h", "--help", "--help_all") for a in args):
        print(recipe_help(dataclass_types, full="--help_all" in args))
        raise SystemExit(0)
    if "--config" not in args:
        return TrlParser(dataclass_types).parse_args_and_config(args)
    i = args.index("--config") + 1
    path = resolve_config(args[i])
    config = load_config(path, section)
    check_keys(path, config, dataclass_types)
    check_hardware(path, config, args)
    with tempfile.TemporaryDirectory() as tmp:
        flat = Path(tmp) / Path(path).name
        flat.write_text(yaml.safe_dump(config))
        args[i] = str(flat)
        return TrlParser(dataclass_types).parse_args_and_config(args)


# Inherited fields that the recipes refuse (`DensityScriptArguments.__post_init__`): not offered in the help.
REFUSED_FIELDS = ("dataset_streaming", "ignore_bias_buffers")
# The `density-rlhf` command running this recipe (set by `density_rlhf.experiment.cli`), for the help's usage line.
COMMAND_ENV = "DENSITY_RLHF_COMMAND"
LAUNCHED_COMMANDS = ("sft", "rm", "grpo")


def recipe_help(dataclass_types: Sequence[type], full: bool = False) -> str:
    """The recipe's help: its own options, then the density fields, the script's fields, and (with `full`) every
    other TRL/transformers field; refused fields are left out."""
    from ..config import DensityConfigMixin

    command = os.environ.get(COMMAND_ENV)
    prog = f"density-rlhf {command}" if command else f"python {Path(sys.argv[0]).name}"
    density = {f.name for f in dataclasses.fields(DensityConfigMixin)}
    script_own = {f.name for f in dataclasses.fields(dataclass_types[0])} - {
        f.name for f in dataclasses.fields(ScriptArguments)
    }

    def line(f: dataclasses.Field) -> str:
        default = f.default if f.default is not dataclasses.MISSING else "(computed)"
        return f"  --{f.name} (default {default!r}): {f.metadata.get('help', '')}".rstrip()

    fields = [f for cls in dataclass_types for f in dataclasses.fields(cls) if f.name not in REFUSED_FIELDS]
    fields = list({f.name: f for f in fields}.values())
    groups = {
        "density fields": [
            f for f in fields if f.name not in script_own and (f.name in density or "density" in f.name)
        ],
        "script fields": [f for f in fields if f.name in script_own],
    }
    grouped = [f for group in groups.values() for f in group]
    groups = {title: group for title, group in groups.items() if group}
    rest = [f for f in fields if f not in grouped]
    lines = [f"usage: {prog} --config FILE [--<field> VALUE ...]", "", "options:"]
    lines.append("  --config FILE: a recipe YAML (looked up in the working directory, then among the shipped recipes)")
    if command in LAUNCHED_COMMANDS:
        lines.append("  --accelerate_config FILE: run through `accelerate launch --config_file FILE`")
    if rest:
        lines.append("  --help_all: also list every TRL and transformers field")
    for title, group in groups.items():
        lines += ["", f"{title}:", *map(line, group)]
    names = ", ".join(c.__name__ for c in dataclass_types[1:])
    if rest and full:
        lines += ["", f"other fields ({names}):", *map(line, rest)]
    elif rest:
        lines += ["", f"{len(rest)} more fields of {names}: `--help_all` lists them."]
    return "\n".join(lines)


def check_keys(path: str, config: dict[str, Any], dataclass_types: Sequence[type]) -> None:
    """`RecipeError` naming the first key of `config` that no field of `dataclass_types` takes, with the nearest
    valid key; run before any other check, so a typo is not reported as what it caused."""
    fields = {f.name for cls in dataclass_types for f in dataclasses.fields(cls)}
    for key in config:
        if key not in fields and key != "env":
            near = difflib.get_close_matches(str(key), [*fields, *STRUCTURAL_KEYS], n=1, cutoff=0.75)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise ConfigKeyError(
                f"{path}: unknown key {key!r}{hint} (not a field of {', '.join(c.__name__ for c in dataclass_types)})"
            )


def check_hardware(path: str, config: dict[str, Any], cli_args: Sequence[str]) -> None:
    """Stop with a clear message when a GPU recipe (bf16, no `use_cpu`) is launched on a machine without a GPU."""
    import torch

    wants_gpu = config.get("bf16") and not config.get("use_cpu")
    overridden = any(a.split("=")[0] in ("--bf16", "--use_cpu") for a in cli_args)
    if wants_gpu and not overridden and not torch.cuda.is_available():
        raise SystemExit(
            f"{path} is a GPU recipe (bf16, meant for accelerate_configs/zero3.yaml on 8 GPUs) and this machine has no "
            f"CUDA device. Use the CPU default instead (e.g. `--config {Path(path).name}` resolves to recipes/), or "
            "dry-run this one with `--bf16 false --use_cpu true --model_name_or_path <a tiny model>`."
        )


class RecipeError(Exception):
    """A setting the user must change: the recipes print it as one line and exit 1, without a traceback."""


class MissingInputError(RecipeError, FileNotFoundError):
    """An input directory that does not exist and is not the shipped default (which is built on first use)."""


class ConfigKeyError(RecipeError, ValueError):
    """A recipe YAML key that no field takes, or a key given twice."""


def creating_command(path: str) -> str:
    """The command that creates the pipeline output `path` (`.../sft`, `.../rm*`, `.../tiny/*`), else a pointer."""
    parts = Path(path).parts
    if len(parts) >= 2 and parts[-2] == "tiny":
        return "python recipes/prepare_data.py --config recipes/prepare_data.yaml"
    if parts and parts[-1] == "sft":
        return "accelerate launch recipes/train_sft.py --config recipes/sft.yaml"
    if parts and parts[-1].startswith("rm"):
        return "accelerate launch recipes/train_rm.py --config recipes/hyp_<h>.yaml"
    return "the stage that writes it (README, 'The pipeline')"


@contextlib.contextmanager
def distributed_run() -> Iterator[None]:
    """End every recipe with its process group shut down: a barrier after success, then `destroy_process_group`.

    A rank that leaves the interpreter with the gloo/NCCL process group still alive can abort in its C++ destructors
    ("terminate called without an active exception", exit -6) after the work is done and saved. The barrier keeps a
    fast rank from tearing down while the others still use the store; after an error there is no barrier (the other
    ranks may never reach it), only the teardown.
    """
    import gc

    import torch.distributed as dist

    try:
        yield
        if dist.is_available() and dist.is_initialized():
            dist.barrier()
    except RecipeError as err:
        raise SystemExit(f"error: {err}") from None
    finally:
        # Trainers and DeepSpeed engines live in reference cycles and hold process groups; a group destroyed only at
        # interpreter finalization can abort the same way. Free them while the interpreter is whole.
        gc.collect()
        if dist.is_available() and dist.is_initialized():
            ds_comm = sys.modules.get("deepspeed.comm")
            if ds_comm is not None and getattr(ds_comm, "cdb", None) is not None and ds_comm.cdb.is_initialized():
                ds_comm.destroy_process_group()  # also drops DeepSpeed's cached references to every group
            else:
                dist.destroy_process_group()


def setup_logging(level: int | str = logging.INFO) -> None:
    """Log like TRL's example scripts: one format for our logger, datasets and transformers."""
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    level = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    if not isinstance(level, int) or level < 0:
        level = logging.INFO
    logging.getLogger("density_rlhf").setLevel(level)
    datasets.utils.logging.set_verbosity(max(level, logging.WARNING))
    transformers.utils.logging.set_verbosity(max(level, logging.WARNING))


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

    `dataset_streaming` and `ignore_bias_buffers` (from TRL) are refused with a `ValueError`: they would have no
    effect.
    """

    data_dir: str = field(default="outputs/data", metadata={"help": "Output directory of recipes/prepare_data.py."})
    build_missing: bool = field(
        default=True, metadata={"help": "Build the synthetic data and index at the default locations when missing."}
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "Truncate the train split."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Truncate the eval split."})

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


def load_train_eval(script_args: DensityScriptArguments, seed: int = 0):
    """Train and eval splits: a Hub/local dataset when `dataset_name` is set, else the prepared `data_dir`."""
    from accelerate import PartialState

    from .stages import ensure_data

    if script_args.dataset_name:
        data = datasets.load_dataset(script_args.dataset_name, name=script_args.dataset_config)
    else:
        with PartialState().main_process_first():  # rank 0 builds missing data, the others then load it
            data = ensure_data(script_args.data_dir, seed, script_args.build_missing)
    if script_args.dataset_train_split not in data:
        raise ValueError(f"split {script_args.dataset_train_split!r} not in {list(data)}.")
    train = data[script_args.dataset_train_split]
    test = data.get(script_args.dataset_test_split)
    if script_args.max_train_samples:
        train = train.select(range(min(script_args.max_train_samples, len(train))))
    if test is not None and script_args.max_eval_samples:
        test = test.select(range(min(script_args.max_eval_samples, len(test))))
    return train, test


def load_model_and_tokenizer(model_args, training_args, model_class, **model_kwargs):
    """Tokenizer and model from `model_args` (revision, dtype, attention) with `trust_remote_code` from the config."""
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
        raise RecipeError(
            f"model_name_or_path {name!r} is not a local directory and could not be loaded from the Hub "
            f"({type(err).__name__}). If it is a pipeline output, create it first: `{creating_command(name)}`."
        ) from None
    model = model_class.from_pretrained(
        model_args.model_name_or_path, revision=model_args.model_revision, trust_remote_code=trust,
        dtype=model_args.dtype or "float32", attn_implementation=model_args.attn_implementation, **model_kwargs,
    )  # fmt: skip
    return model, tokenizer


def ensure_index_for(training_args, script_args: DensityScriptArguments) -> None:
    """Build the density index at `training_args.density_index_path` when it is missing (first run on a clone)."""
    from .stages import DEFAULT_DATA_DIR, DEFAULT_DENSITY_DIR, BuildDensityArguments, build_density, check_index_source

    path = getattr(training_args, "density_index_path", None)
    if not path:
        return
    if (Path(path) / "metadata.json").exists():
        if not script_args.dataset_name:
            check_index_source(path, script_args.data_dir)
        return
    is_default = Path(path) == Path(DEFAULT_DENSITY_DIR) and Path(script_args.data_dir) == Path(DEFAULT_DATA_DIR)
    if script_args.dataset_name or not script_args.build_missing or not is_default:
        raise MissingInputError(
            f"density index {path} not found: build it with `python recipes/build_density.py --config "
            f"recipes/build_density.yaml --data_dir {script_args.data_dir} --density_dir {path}` (only the default "
            f"{DEFAULT_DENSITY_DIR} is built on first use)."
        )
    from accelerate import PartialState

    with PartialState().main_process_first():  # the other ranks wait, then find the index
        if not (Path(path) / "metadata.json").exists():
            logger.warning("density index %s is missing: building it from %s", path, script_args.data_dir)
            build_density(BuildDensityArguments(data_dir=script_args.data_dir, density_dir=path))


def start_run(script_args: DensityScriptArguments, training_args) -> tuple:
    """Seed everything from `training_args.seed`, load the splits, and build a missing default density index."""
    transformers.set_seed(training_args.seed)
    train, test = load_train_eval(script_args, training_args.seed)
    ensure_index_for(training_args, script_args)
    return train, test


def last_checkpoint(training_args) -> str | None:
    """The checkpoint to resume from: `resume_from_checkpoint`, or the newest in `output_dir` when it exists."""
    if training_args.resume_from_checkpoint:
        return training_args.resume_from_checkpoint
    if os.path.isdir(training_args.output_dir):
        checkpoint = transformers.trainer_utils.get_last_checkpoint(training_args.output_dir)
        if checkpoint is not None:
            logger.info("resuming from %s", checkpoint)
        return checkpoint
    return None


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
