"""Evaluation stage: sample held-out prompts from each policy, score them with each reward model and the ground
truth, measure diversity, and evaluate the reward models themselves, per density bucket.

Usage:

    python recipes/evaluate.py --policies A=outputs/hyp_a/grpo B=outputs/hyp_b/grpo \
        --reward_models uniform=outputs/hyp_a/rm density=outputs/hyp_b/rm --output_file outputs/eval/results.json
"""

import json
import sys
from pathlib import Path


# This file shares its name with the `evaluate` library; keep its own folder off the import path so that
# `import evaluate` (used by the metric modules) finds the library.
sys.path = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from density_rlhf.experiment.evaluation import EvaluateArguments, run_evaluation  # noqa: E402
from density_rlhf.recipe_kit import distributed_run, logger, parse_args, setup_logging  # noqa: E402


def main(script_args: EvaluateArguments) -> None:
    results = run_evaluation(script_args)
    overall = {name: res.get("all", {}) for name, res in results["policies"].items()}
    logger.info("wrote %s\n%s", script_args.output_file, json.dumps(overall, indent=2))


if __name__ == "__main__":
    setup_logging()
    with distributed_run():
        (script_args,) = parse_args([EvaluateArguments])
        main(script_args)
