"""What a stage pays before its own work: the seconds from launch until a recipe has parsed its arguments (`--help`),
as a fresh `python` per stage against a process forked from the runner's stage server (`execution.StageWorkers`).

    python benchmarks/bench_stage_start.py --repeats 3

Both are measured in the same run, alternately; the server's own start (its imports, paid once per runner) is
reported apart. The figures are per stage: multiply by the stages of a run for its total overhead.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from density_rlhf.experiment.execution import StageWorkers  # noqa: E402


SCRIPTS = ("prepare_data.py", "build_density.py", "train_sft.py", "train_rm.py", "train_grpo.py", "evaluate.py")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    workers = StageWorkers()
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "stage.log"
        log.write_text("")
        start = time.perf_counter()
        workers.run([sys.executable, str(REPO / "recipes" / "evaluate.py"), "--help"], log, env, 1)
        print(f"stage server start (imports, once per run) and first stage: {time.perf_counter() - start:.1f}s")
        rows = []
        for script in SCRIPTS:
            command = [sys.executable, str(REPO / "recipes" / script), "--help"]
            fresh, forked = [], []
            for _ in range(args.repeats):
                t = time.perf_counter()
                subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
                fresh.append(time.perf_counter() - t)
                t = time.perf_counter()
                code = workers.run(command, log, env, 1)
                forked.append(time.perf_counter() - t)
                assert code == 0, f"{script} --help exited {code} in a stage process"
            rows.append((script, statistics.median(fresh), statistics.median(forked)))
    print(f"{'recipe':<18}{'fresh python (s)':>18}{'forked (s)':>12}{'ratio':>8}")
    for script, fresh, forked in rows:
        print(f"{script:<18}{fresh:>18.2f}{forked:>12.2f}{forked / fresh:>8.3f}")
    mean_fresh = statistics.mean(r[1] for r in rows)
    mean_forked = statistics.mean(r[2] for r in rows)
    print(f"{'mean':<18}{mean_fresh:>18.2f}{mean_forked:>12.2f}{mean_forked / mean_fresh:>8.3f}")


if __name__ == "__main__":
    main()
