"""Density stage: embed the unique prompts, build the FAISS kNN index and the sampling weights.

Usage:

    python recipes/build_density.py --config recipes/build_density.yaml
    python recipes/build_density.py --config build_density.yaml --alpha 0.5 --max_weight_ratio 100
"""

import json

from density_rlhf.recipe_kit import (
    BuildDensityArguments,
    build_density,
    distributed_run,
    logger,
    parse_args,
    setup_logging,
)
from density_rlhf.recipes.embedded import build_default_data


def main(script_args: BuildDensityArguments) -> None:
    index = build_density(script_args, build_default_data)
    logger.info("summary:\n%s", json.dumps(index.summary(), indent=2))


if __name__ == "__main__":
    setup_logging()
    with distributed_run():
        (script_args,) = parse_args([BuildDensityArguments])
        main(script_args)
