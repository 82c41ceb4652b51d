"""The dry run: every stage's command, and each training config built as it would be on the launcher's processes
(TRL's batch and generation divisibility, every field, the design's density sampling, the model ids), with nothing
run and no GPU needed."""

import re
import shlex
from pathlib import Path

from ..recipe_kit.recipe import RECIPES_DIR, resolve_config
from .execution import _command
from .graph import Stage, design_problem


def _script_types(script: str) -> tuple[list[type], str | None]:
    """The dataclasses (and config section) a training recipe parses: its `DATACLASSES` and `SECTION`."""
    import importlib

    module = importlib.import_module(f"density_rlhf.recipes.{Path(script).stem}")
    return list(module.DATACLASSES), module.SECTION


def launcher_processes(launcher: str) -> int:
    """`num_processes` of an `accelerate launch` command: its `--num_processes`, else its `--config_file`'s."""
    words = shlex.split(launcher)
    if not words:
        return 1
    for flag in ("--num_processes", "--num-processes"):
        if flag in words:
            return int(words[words.index(flag) + 1])
    if "--config_file" in words:
        import yaml

        path = Path(words[words.index("--config_file") + 1])
        path = path if path.exists() else RECIPES_DIR.parent / path
        return int((yaml.safe_load(path.read_text()) or {}).get("num_processes", 1))
    return 1


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def on_processes(config_cls: type, num_processes: int) -> type:
    """`config_cls` (a `TrainingArguments` subclass) as it is built on `num_processes` ranks: a subclass whose
    `world_size`, which TRL's batch and generation checks read in `__post_init__`, is `num_processes`."""
    namespace = {"world_size": property(lambda self: num_processes), "__module__": config_cls.__module__}
    return type(config_cls.__name__, (config_cls,), namespace)


def validate_stage(stage: Stage, num_processes: int, produced: set[Path]) -> list[str]:
    """Build a training stage's configs as its recipe would on `num_processes` ranks (TRL's batch and generation
    divisibility, our hypothesis/density_sampling pairing, every field) and check its model ids: a Hub id or an
    upstream stage's output, never a tiny model. Returns the problems found, one line each."""
    from ..recipe_kit.recipe import parse_args

    types, section = _script_types(stage.script)
    types[1] = on_processes(types[1], num_processes)
    # Validation only: precision and device are the GPU machine's business, the rest is checked as configured.
    argv = ["--config", resolve_config(stage.config), *stage.args, "--bf16", "false", "--use_cpu", "true"]
    try:
        script_args, training_args, model_args = parse_args(types, argv, section=section)
    except (ValueError, SystemExit) as err:
        return [f"{stage.name}: {str(err).strip().splitlines()[-1]}"]
    problems = []
    for name in ("model_name_or_path", "reward_model_path"):
        value = getattr(model_args, name, None) or getattr(training_args, name, None)
        if not value:
            continue
        path = Path(value).resolve()
        if "tiny" in Path(value).parts:
            problems.append(f"{stage.name}: {name} {value!r} is a tiny test model; set the real model id.")
        elif path not in produced and not _HUB_ID.fullmatch(value):
            problems.append(f"{stage.name}: {name} {value!r} is neither a Hub id nor the output of an earlier stage.")
    return problems


def dry_run(stages: list[Stage], launcher: str, num_processes: int) -> list[str]:
    """Print every stage's command in order and validate the training stages for `num_processes` ranks; returns
    the problems (empty when every config would build)."""
    problems, produced = [], set()
    for i, stage in enumerate(stages, start=1):
        print(f"[{i}/{len(stages)}] {stage.name}\n    {shlex.join(_command(stage, launcher))}", flush=True)
        if stage.launched and stage.config:
            problems += validate_stage(stage, num_processes, produced)
            problems += [p for p in [design_problem(stage)] if p]
        produced.add(stage.output.resolve())
    return problems
