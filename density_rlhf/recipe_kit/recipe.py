"""What every recipe shares before training: sectioned recipe YAMLs, parsing with `trl.TrlParser`, the help, the
errors a user fixes, logging and the process-group teardown.

A recipe YAML can be read by several scripts. Top-level keys go to every script; a section (`reward:`, `grpo:`,
`sft:`, `evaluate:`) goes only to the script of that name. A `defaults:` key names a shared file whose settings lie
underneath, so each file states only what differs. Each script merges its section over the top level and hands the
result to `trl.TrlParser`, so unknown keys fail and every field can still be overridden on the command line.
"""

import contextlib
import dataclasses
import difflib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
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
SECTIONS = ("reward", "grpo", "sft", "dpo", "kto", "rloo", "evaluate")
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
        return _parse(TrlParser(dataclass_types), args, "the command line")
    i = args.index("--config") + 1
    path = resolve_config(args[i])
    config = load_config(path, section)
    check_keys(path, config, dataclass_types)
    check_hardware(path, config, args)
    with tempfile.TemporaryDirectory() as tmp:
        flat = Path(tmp) / Path(path).name
        flat.write_text(yaml.safe_dump(config))
        args[i] = str(flat)
        return _parse(TrlParser(dataclass_types), args, path)


def _parse(parser, args: list[str], source: str) -> tuple:
    """`parser.parse_args_and_config(args)`; a config's `__post_init__` refusal becomes a `ConfigError` (one line)."""
    try:
        return parser.parse_args_and_config(args)
    except ValueError as err:
        if isinstance(err, RecipeError):
            raise
        raise ConfigError(f"{source}: {err}") from err


# Inherited fields that the recipes refuse (`DensityScriptArguments.__post_init__`): not offered in the help.
REFUSED_FIELDS = ("dataset_streaming", "ignore_bias_buffers")
# The `density-rlhf` command running this recipe (set by `density_rlhf.cli`), for the help's usage line.
COMMAND_ENV = "DENSITY_RLHF_COMMAND"
# Set (by `density-rlhf --debug`) to show a recipe error's traceback instead of its one line.
DEBUG_ENV = "DENSITY_RLHF_DEBUG"
LAUNCHED_COMMANDS = ("sft", "rm", "grpo", "dpo", "kto", "rloo")


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


class ConfigError(RecipeError, ValueError):
    """A recipe setting that a config's validation refused (its `__post_init__`)."""


@contextlib.contextmanager
def distributed_run() -> Iterator[None]:
    """End every recipe with no process group left: a barrier after success, the DeepSpeed engines freed, then
    `destroy_process_group`.

    A rank that leaves the interpreter with a gloo/NCCL process group still alive can abort in its C++ destructors
    ("terminate called without an active exception", exit -6) after the work is done and saved. The barrier keeps a
    fast rank from tearing down while the others still use the store; after an error there is no barrier (the other
    ranks may never reach it), only the teardown.
    """
    import gc

    import torch.distributed as dist

    _import_world_defaults()
    try:
        yield
        if dist.is_available() and dist.is_initialized():
            dist.barrier()
    except RecipeError as err:
        if os.environ.get(DEBUG_ENV):
            raise
        raise SystemExit(f"error: {err}") from None
    finally:
        # Trainers and DeepSpeed engines live in reference cycles and hold process groups; a group still alive at
        # interpreter finalization can abort the same way. Free them while the interpreter is whole.
        _release_deepspeed_engines()
        gc.collect()
        if dist.is_available() and dist.is_initialized():
            # The live backend is `deepspeed.comm.comm.cdb`: the package's `deepspeed.comm.cdb` is a copy bound to None
            # at import. DeepSpeed's destroy also drops its cached groups (`deepspeed.utils.groups._WORLD_GROUP`, the
            # clone of WORLD that ZeRO-3 gathers on), which would otherwise live into interpreter finalization.
            ds_comm = sys.modules.get("deepspeed.comm.comm")
            if ds_comm is not None and getattr(ds_comm, "cdb", None) is not None and ds_comm.cdb.is_initialized():
                ds_comm.destroy_process_group()
            else:
                dist.destroy_process_group()


def _import_world_defaults() -> None:
    """Import, before the recipe starts its process group, the modules that bind the WORLD group as a default argument.

    `torch.distributed.nn.functional` (imported by torch._dynamo on first use) and DeepSpeed's `TorchBackend.barrier`
    evaluate `group=...WORLD` when their module is first imported: after the group exists, they keep it for the life
    of the process, in tuples that gc does not track, so no teardown can free it. Before, the defaults are None.
    """
    import torch.distributed as dist

    if not dist.is_available():  # a torch build without distributed support has no group to keep
        return
    import torch.distributed.nn  # noqa: F401

    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() == "true":  # set by `accelerate launch` for DeepSpeed
        import deepspeed.comm.torch  # noqa: F401


def _release_deepspeed_engines() -> None:
    """Free the DeepSpeed engines left in the process, and with them the process groups they hold.

    Under ZeRO-3 DeepSpeed keeps every engine for the life of the process: `parameter_offload.FWD_MODULE_STACK` holds
    each engine's top module, and `PartitionedParameterCoordinator.__params_to_release` is an `lru_cache` on a method,
    whose cache holds each coordinator (and so its engine, model and groups) once a step has recorded its trace. Past
    those, an engine's gradient hooks on its parameters close cycles through C++ that `gc` cannot see;
    `DeepSpeedEngine.destroy` removes them.
    """
    import gc

    offload = sys.modules.get("deepspeed.runtime.zero.parameter_offload")
    if offload is not None and hasattr(offload, "FWD_MODULE_STACK"):
        offload.FWD_MODULE_STACK.clear()
    coordinator = sys.modules.get("deepspeed.runtime.zero.partitioned_param_coordinator")
    if coordinator is not None:
        method = vars(coordinator.PartitionedParameterCoordinator).get(
            "_PartitionedParameterCoordinator__params_to_release"
        )
        # `instrument_w_nvtx` wraps the cached method without functools.wraps: the cache sits in its closure.
        for cell in getattr(method, "__closure__", None) or ():
            if hasattr(cell.cell_contents, "cache_clear"):
                cell.cell_contents.cache_clear()
    gc.collect()
    engine = sys.modules.get("deepspeed.runtime.engine")
    if engine is not None:
        for obj in gc.get_objects():
            if issubclass(type(obj), engine.DeepSpeedEngine):  # type(), not isinstance: no attribute access on obj
                obj.destroy()


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
