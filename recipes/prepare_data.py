"""Data stage: preference sources (or the embedded synthetic world) -> unified pairs, prompt table and stats.

Usage:

    python recipes/prepare_data.py --config recipes/prepare_data.yaml
    python recipes/prepare_data.py --config prepare_data.yaml --only hh --hh_path ../shared/data/hh_rlhf_harmless_sample.jsonl.gz \
        --output_dir outputs/data_hh
"""

from density_rlhf.data.prompts import format_stats
from density_rlhf.experiment.prepare import PrepareDataArguments, prepare_data
from density_rlhf.recipe_kit import distributed_run, logger, parse_args, setup_logging


def main(script_args: PrepareDataArguments) -> None:
    summary = prepare_data(script_args)
    logger.info("wrote %s\n%s", script_args.output_dir, format_stats(summary))


if __name__ == "__main__":
    setup_logging()
    with distributed_run():
        (script_args,) = parse_args([PrepareDataArguments])
        main(script_args)
