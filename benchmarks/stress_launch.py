"""Stress the 2-process `accelerate launch` tests: run them N times in a row beside a CPU-bound process.

A 2-process run that finished its work could still abort at exit under load (rank 1: "terminate called without an
active exception", exit -6) before the recipes shut their process group down (`density_rlhf.recipe_kit.recipe.distributed_run`).
This repeats the launch tests with a busy-looping process beside them and counts the outcomes per test; every
failing run's output is kept (`<log>.run<N>`), with the stage logs of the runner's tests (pytest's `--basetemp` per
run, `TORCH_SHOW_CPP_STACKTRACES=1`, and `PYTHONFAULTHANDLER=1` so a native abort prints every Python thread's
stack, or "<no Python frame>" for a native thread such as a gloo worker).

Usage:

    .venv/bin/python benchmarks/stress_launch.py --runs 20 --deepspeed --slow     # make stress
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import Counter
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
# `--slow` adds the ZeRO-3 scale rehearsal: the whole pipeline on 2 CPU processes (marked slow; CI does not run it).
SLOW_TESTS = ("tests/test_runner.py::test_scale_rehearsal_on_two_cpu_processes_with_zero3",)
HOG = "while True:\n    sum(i * i for i in range(100_000))"


def _outcomes(junit: Path) -> dict[str, bool]:
    """`{test id: passed}` from a pytest JUnit XML report."""
    outcomes = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = f"{case.get('classname', '').replace('.', '/')}.py::{case.get('name')}"
        outcomes[name] = not any(child.tag in ("failure", "error") for child in case)
    return outcomes


def _same_test(requested: str, test_id: str) -> bool:
    """Whether `test_id` (from the report, with its parameters) is a run of the `requested` test."""
    return test_id == requested or test_id.startswith(requested + "[")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="Consecutive runs of the launch tests.")
    parser.add_argument("--no_load", action="store_true", help="Run without the CPU-bound process beside.")
    parser.add_argument("--deepspeed", action="store_true", help="Also run the DeepSpeed ZeRO launch tests.")
    parser.add_argument("--slow", action="store_true", help="Also run the ZeRO-3 scale rehearsal (slow).")
    parser.add_argument("--log", default="outputs/stress_launch.log", help="Failing runs' output: <log>.run<N>.")
    args = parser.parse_args()

    tests = TESTS + (DEEPSPEED_TESTS if args.deepspeed else ()) + (SLOW_TESTS if args.slow else ())
    hog = None if args.no_load else subprocess.Popen([sys.executable, "-c", HOG])
    passed, per_test, seen = 0, Counter(), {}
    start = time.perf_counter()
    env = {**os.environ, "TORCH_SHOW_CPP_STACKTRACES": "1", "PYTHONFAULTHANDLER": "1"}
    try:
        for run in range(1, args.runs + 1):
            work = Path(tempfile.mkdtemp(prefix=f"stress_run{run}_"))
            result = subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "", "--basetemp",
                 str(work / "tmp"), "--junitxml", str(work / "junit.xml"), *tests],
                cwd=REPO, capture_output=True, text=True, env=env,
            )  # fmt: skip
            outcomes = _outcomes(work / "junit.xml") if (work / "junit.xml").exists() else {}
            per_test.update(name for name, ok in outcomes.items() if ok)
            seen.update(dict.fromkeys(outcomes))
            if result.returncode == 0:
                passed += 1
                print(f"run {run}: passed ({time.perf_counter() - start:.0f} s so far)", flush=True)
                continue
            log = Path(f"{args.log}.run{run}")
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text(result.stdout + result.stderr)
            failed = [name for name, ok in outcomes.items() if not ok]
            print(f"run {run}: FAILED {failed} (exit {result.returncode}); output in {log}, stage logs under {work}")
    finally:
        if hog is not None:
            hog.kill()
    load = "no load" if hog is None else "under load"
    # one line per test id that ran (each parameter of a parametrized test apart), and 0 for a test that never ran
    for name in [*seen, *(name for name in tests if not any(_same_test(name, id_) for id_ in seen))]:
        print(f"{per_test[name]}/{args.runs} passed  {name}")
    print(f"{passed}/{args.runs} runs passed, {len(tests)} launch tests each run, {load}")
    return 0 if passed == args.runs else 1


if __name__ == "__main__":
    sys.exit(main())
