"""`density-rlhf`: the recipes as one command, like TRL's `trl` (installed as a console script).

    density-rlhf run --config run_hypotheses.yaml           # the whole experiment (`make demo`)
    density-rlhf prepare --config prepare_data.yaml         # one stage; `density-rlhf <command> --help` lists its flags
    density-rlhf rm --config hyp_b.yaml --accelerate_config accelerate_configs/zero3.yaml
    density-rlhf dpo --config dpo.yaml --num_processes 2 --accelerate_config accelerate_configs/cpu_2proc.yaml
    density-rlhf compare-rm --config compare_rm.yaml --dataset_name pairs.jsonl.gz   # your data: does density help?

Configs are looked up in the working directory, then among the defaults shipped in the package
(`density_rlhf.recipes`), so a wheel runs without a source checkout. Training commands (`sft`, `rm`, `grpo`, `dpo`,
`kto`, `rloo`) go through `accelerate launch` (with `--accelerate_config FILE` and `--num_processes N` when given);
the others run in this process. A setting the user must fix is printed as one line (`error: ...`); `--debug` shows
the traceback instead.
"""

import os
import runpy
import subprocess
import sys
from collections.abc import Sequence

from .recipe_kit.recipe import COMMAND_ENV, DEBUG_ENV, RECIPES_DIR


# command -> (recipe script, launched through accelerate, help line)
COMMANDS = {
    "prepare": ("prepare_data.py", False, "prepare preference data (synthetic world or HH-RLHF/UltraFeedback/SE)"),
    "density": ("build_density.py", False, "build the prompt density index"),
    "density-report": ("density_report.py", False, "write the weights report of a density index"),
    "sft": ("train_sft.py", True, "supervised fine-tuning of the starting policy"),
    "rm": ("train_rm.py", True, "train a reward model (density-weighted or uniform pairs)"),
    "grpo": ("train_grpo.py", True, "GRPO from the SFT policy (density-weighted or uniform prompts)"),
    "dpo": ("train_dpo.py", True, "DPO from the SFT policy on density-weighted preference pairs"),
    "kto": ("train_kto.py", True, "KTO (loss_type apo_zero_unpaired) on density-weighted unpaired preferences"),
    "rloo": ("train_rloo.py", True, "RLOO from the SFT policy (density-weighted or uniform prompts)"),
    "evaluate": ("evaluate.py", False, "evaluate the policies and reward models of one seed"),
    "run": ("run_hypotheses.py", False, "the whole experiment over seeds: every stage, results.json, report.md"),
    "compare-rm": (
        "compare_rm.py",
        False,
        "does density weighting help a reward model on your pairs? (k-fold report)",
    ),
}


def usage() -> str:
    lines = ["usage: density-rlhf <command> [--config FILE] [--<field> VALUE ...]", "", "commands:"]
    lines += [f"  {name:<15} {help_}" for name, (_, _, help_) in COMMANDS.items()]
    lines += ["", f"default configs: {RECIPES_DIR} (e.g. --config hyp_b.yaml)"]
    return "\n".join(lines)


def _pop_option(args: list[str], name: str, takes_value: bool = True) -> str | bool | None:
    """Remove `--name VALUE` (or the flag `--name`) from `args`; its value, `True` for a flag, `None` if absent."""
    if name not in args:
        return None
    at = args.index(name)
    if not takes_value:
        del args[at]
        return True
    if at + 1 >= len(args) or args[at + 1].startswith("--"):
        raise SystemExit(f"density-rlhf: {name} needs a value")
    value = args[at + 1]
    del args[at : at + 2]
    return value


def launch_command(path: str, args: list[str], accelerate_config: str | None, num_processes: int | None, debug: bool):
    """The `accelerate launch` command line of a training recipe. Without a config file of the user's or accelerate's
    own default, the launch settings accelerate would otherwise guess (and warn about) are given: one process unless
    `num_processes`, one machine, no mixed precision (the recipes' `bf16` decides), no dynamo. Errors are shown by
    the recipe alone (accelerate's `--quiet`) unless `debug`."""
    from accelerate.commands.config import default_config_file

    launch = [sys.executable, "-m", "accelerate.commands.launch"]
    if accelerate_config:
        launch += ["--config_file", accelerate_config]
    if num_processes is not None:
        launch += ["--num_processes", str(num_processes)]
        if num_processes > 1 and not accelerate_config:
            launch += ["--multi_gpu"]  # accelerate's launcher for several local processes (gloo without CUDA)
    if not accelerate_config and not os.path.exists(default_config_file):
        if num_processes is None:
            launch += ["--num_processes", "1"]
        launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    if not debug:
        launch += ["--quiet"]
    return [*launch, path, *args]


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    command, args = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"density-rlhf: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        return 2
    script, launched, _ = COMMANDS[command]
    path = str(RECIPES_DIR / script)
    try:
        accelerate_config = _pop_option(args, "--accelerate_config")
        num_processes = _pop_option(args, "--num_processes")
        cpu = bool(_pop_option(args, "--cpu", takes_value=False))
        debug = bool(_pop_option(args, "--debug", takes_value=False))
    except SystemExit as err:
        print(err, file=sys.stderr)
        return 2
    if accelerate_config is not None and not os.path.exists(accelerate_config):
        print(f"density-rlhf: --accelerate_config {accelerate_config!r} is not a file", file=sys.stderr)
        return 2
    if num_processes is not None and (not num_processes.isdigit() or int(num_processes) < 1):
        print(f"density-rlhf: --num_processes must be a positive integer, got {num_processes!r}", file=sys.stderr)
        return 2
    num_processes = None if num_processes is None else int(num_processes)
    if cpu and (num_processes or 1) > 1:
        print(
            f"density-rlhf: accelerate's --cpu starts one process whatever --num_processes says; for {num_processes} "
            "CPU processes drop --cpu and keep `use_cpu: true` in the recipe (the GPU launcher runs them over gloo), "
            "or pass --accelerate_config accelerate_configs/cpu_2proc.yaml (two processes)",
            file=sys.stderr,
        )
        return 2
    if cpu and launched:
        args += ["--use_cpu", "true"]
    os.environ[COMMAND_ENV] = command  # the recipes' help names `density-rlhf <command>`
    if debug:
        os.environ[DEBUG_ENV] = "1"  # the recipes raise instead of printing one line
    if launched and not any(a in ("-h", "--help", "--help_all") for a in args):
        return subprocess.call(launch_command(path, args, accelerate_config, num_processes, debug))
    if accelerate_config or num_processes is not None or cpu:
        print(
            f"density-rlhf: {command} does not train; --accelerate_config, --num_processes and --cpu apply to "
            f"{', '.join(c for c, (_, launch, _) in COMMANDS.items() if launch)}",
            file=sys.stderr,
        )
        return 2
    sys.argv = [path, *args]
    try:
        runpy.run_path(path, run_name="__main__")
    except SystemExit as exit_:
        code = exit_.code
        if isinstance(code, str):
            print(code, file=sys.stderr)
            return 1
        return int(code or 0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
