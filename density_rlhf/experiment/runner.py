"""The experiment in one command: build the stage graph, run it (or dry-run it), then write results.json, report.md
and the plots over the seeds. `O` is the positive control: GRPO on the ground-truth reward from the same SFT
policy."""

import json
from pathlib import Path
from typing import Any

from .dry_run import dry_run, launcher_processes
from .execution import StageFailed, run_all
from .graph import RunnerArguments, build_stages, check_stage_configs
from .plots import make_plots
from .report import aggregate, write_report


__all__ = ["RunnerArguments", "StageFailed", "build_stages", "run"]


def run(args: RunnerArguments) -> dict[str, Any]:
    """Run (or resume) the whole experiment and write `results.json`, `report.md` and the plots."""
    root = Path(args.output_dir).resolve()
    log_dir = root / "logs"
    stages = build_stages(args)
    if args.dry_run:
        num_processes = args.num_processes or launcher_processes(args.launcher)
        problems = dry_run(stages, args.launcher, num_processes)
        if problems:
            raise StageFailed(
                f"dry run for {num_processes} processes: {len(problems)} problem(s)\n" + "\n".join(problems)
            )
        print(f"dry run: {len(stages)} stages, every training config builds for {num_processes} processes")
        return {}
    log_dir.mkdir(parents=True, exist_ok=True)
    check_stage_configs(stages)
    timings = run_all(stages, args.launcher, log_dir, args.max_parallel, args.stage_workers)
    per_seed = {s: json.loads((root / f"seed{s}" / "eval" / "results.json").read_text()) for s in args.seeds}
    results = aggregate(per_seed, args.alphas)
    results["stages"] = timings
    print("[report] writing results.json, plots and report.md", flush=True)
    first_world = args.seeds[0] if args.world_seed is None else args.world_seed
    plots = make_plots(results, root, root / f"world{first_world}" / "density", args.hypotheses)
    results["plots"] = plots
    (root / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    write_report(results, root, plots)
    return results
