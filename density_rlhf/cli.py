"""The run skeleton every recipe shares: config resolution, argument parsing and logging."""

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import datasets
import transformers


RECIPES_DIR = Path(__file__).resolve().parent.parent / "recipes"
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


def parse_args(dataclass_types: Sequence[type], args: Sequence[str] | None = None) -> tuple:
    """Parse `--config file.yaml` plus CLI overrides into `dataclass_types` with `trl.TrlParser`."""
    from trl import TrlParser

    args = list(sys.argv[1:] if args is None else args)
    if "--config" in args:
        i = args.index("--config") + 1
        args[i] = resolve_config(args[i])
    return TrlParser(dataclass_types).parse_args_and_config(args)


def setup_logging(level: int | str = logging.INFO) -> None:
    """Log like TRL's example scripts: one format for our logger, datasets and transformers."""
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    level = logging.getLevelName(level) if isinstance(level, str) else level
    logging.getLogger("density_rlhf").setLevel(level)
    datasets.utils.logging.set_verbosity(min(level, logging.WARNING))
    transformers.utils.logging.set_verbosity(min(level, logging.WARNING))
