"""Reward-model comparison by weighting, on your own preference pairs (`density-rlhf compare-rm`).

Usage:

    density-rlhf compare-rm --config compare_rm.yaml --dataset_name pairs.jsonl.gz
    density-rlhf compare-rm --config compare_rm.yaml --dataset_name Anthropic/hh-rlhf --max_pairs 20000 \
        --model_name_or_path microsoft/deberta-v3-base --seeds 0 1 2

Every pair is held out once (prompt-disjoint folds); each weighting trains one reward model per fold and seed. The
output directory gets `report.md` (table and plot), `summary.json` and each run's per-pair scores, from which an
interrupted comparison resumes. `--help` lists every setting (the training ones are `DensityRewardConfig`'s).
"""

from density_rlhf import DensityRewardConfig
from density_rlhf.experiment.compare_rm import CompareRMArguments, compare
from density_rlhf.recipe_kit import logger, parse_args, setup_logging


DATACLASSES = (CompareRMArguments, DensityRewardConfig)


def main(script_args: CompareRMArguments, training_args: DensityRewardConfig):
    summary = compare(script_args, training_args)
    logger.info("compared %s", ", ".join(f"{name} ({n} runs)" for name, n in summary["runs"].items()))
    return summary


if __name__ == "__main__":
    setup_logging()
    main(*parse_args(DATACLASSES))
