"""The whole experiment in one command (this is `make demo`): data -> density index -> SFT -> reward models A and B
-> GRPO A, B, C, D -> evaluation -> results.json, report.md and plots.

Usage:

    python recipes/run_hypotheses.py --config recipes/run_hypotheses.yaml
    python recipes/run_hypotheses.py --config run_hypotheses.yaml --seeds 0 1 2 --output_dir outputs/run3
    python recipes/run_hypotheses.py --config recipes/scale/run_hypotheses.yaml --dry_run   # check the 8-GPU run

Re-running resumes: stages whose outputs carry a marker with the same configuration hash are skipped.
"""

import sys

from density_rlhf.experiment.runner import RunnerArguments, StageFailed, run
from density_rlhf.recipe_kit import distributed_run, parse_args, setup_logging


def main(script_args: RunnerArguments) -> None:
    try:
        run(script_args)
    except StageFailed as err:
        sys.exit(str(err))
    if script_args.dry_run:
        return
    print(f"done: {script_args.output_dir}/report.md, results.json and plots")


if __name__ == "__main__":
    setup_logging()
    with distributed_run():
        (script_args,) = parse_args([RunnerArguments])
        main(script_args)
