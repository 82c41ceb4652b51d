"""Stress the 2-process `accelerate launch` tests: run them N times in a row beside a CPU-bound process.

A 2-process run that finished its work could still abort at exit under load (rank 1: "terminate called without an
active exception", exit -6) before the recipes shut their process group down (`density_rlhf.recipe_kit.recipe.distributed_run`).
This repeats the two launch tests with a busy-looping process beside them and counts the outcomes; it stops at the
first failure and keeps that run's output.

Usage:

    .venv/bin/python benchmarks/stress_launch.py --runs 20      # make stress
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path


REPO = Path(__file__).resolve().parent.parent
TESTS = (
    "tests/test_reward_trainer.py::test_accelerate_launch_two_cpu_processes_see_disjoint_shards",
    "tests/test_grpo_trainer.py::test_accelerate_launch_two_cpu_processes",
)
# `--deepspeed` adds the ZeRO launches (DeepSpeed keeps its own references to the process groups).
DEEPSPEED_TESTS = (
    "tests/test_reward_trainer.py::test_deepspeed_zero3_two_cpu_processes",
    "tests/test_grpo_trainer.py::test_reward_model_scores_under_deepspeed_equal_single_process_scores",
)
HOG = "while True:\n    sum(i * i for i in range(100_000))"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="Consecutive runs of the two launch tests.")
    parser.add_argument("--no_load", action="store_true", help="Run without the CPU-bound process beside.")
    parser.add_argument("--deepspeed", action="store_true", help="Also run the DeepSpeed ZeRO launch tests.")
    parser.add_argument("--log", default="outputs/stress_launch.log", help="Where a failing run's output goes.")
    args = parser.parse_args()

    tests = TESTS + (DEEPSPEED_TESTS if args.deepspeed else ())
    hog = None if args.no_load else subprocess.Popen([sys.executable, "-c", HOG])
    passed = 0
    start = time.perf_counter()
    try:
        for run in range(1, args.runs + 1):
            result = subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
                cwd=REPO, capture_output=True, text=True,
            )  # fmt: skip
            if result.returncode != 0:
                Path(args.log).parent.mkdir(parents=True, exist_ok=True)
                Path(args.log).write_text(result.stdout + result.stderr)
                print(f"run {run}: FAILED (exit {result.returncode}); output in {args.log}")
                break
            passed += 1
            print(f"run {run}: passed ({time.perf_counter() - start:.0f} s so far)", flush=True)
    finally:
        if hog is not None:
            hog.kill()
    print(
        f"{passed}/{args.runs} runs passed, {len(tests)} launch tests each run, {'no load' if hog is None else 'under load'}"
    )
    return 0 if passed == args.runs else 1


if __name__ == "__main__":
    sys.exit(main())
