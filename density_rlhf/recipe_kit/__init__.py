"""The recipe skeleton behind `recipes/*.py` and the `density-rlhf` command: parse a sectioned YAML with
`trl.TrlParser`, load the data and the model, train, save, and build or report a density index."""

from .recipe import (
    RECIPES_DIR,
    ConfigError,
    ConfigKeyError,
    MissingInputError,
    RecipeError,
    check_keys,
    distributed_run,
    load_config,
    logger,
    parse_args,
    read_config,
    resolve_config,
    setup_logging,
)
from .stages import (
    DEFAULT_DATA_DIR,
    DEFAULT_DENSITY_DIR,
    BuildDensityArguments,
    DensityReportArguments,
    build_density,
    density_report,
    ensure_data,
    ensure_index_for,
)
from .train import (
    DensityScriptArguments,
    last_checkpoint,
    load_model_and_tokenizer,
    load_train_eval,
    start_run,
    train_and_save,
)


__all__ = [
    "DEFAULT_DATA_DIR",
    "DEFAULT_DENSITY_DIR",
    "RECIPES_DIR",
    "BuildDensityArguments",
    "ConfigError",
    "ConfigKeyError",
    "DensityReportArguments",
    "DensityScriptArguments",
    "MissingInputError",
    "RecipeError",
    "build_density",
    "check_keys",
    "density_report",
    "distributed_run",
    "ensure_data",
    "ensure_index_for",
    "last_checkpoint",
    "load_config",
    "load_model_and_tokenizer",
    "load_train_eval",
    "logger",
    "parse_args",
    "read_config",
    "resolve_config",
    "setup_logging",
    "start_run",
    "train_and_save",
]
