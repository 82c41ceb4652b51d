"""`density-rlhf`: the recipes as one command, like TRL's `trl` (installed as a console script).

    density-rlhf run --config run_hypotheses.yaml           # the whole experiment (`make demo`)
    density-rlhf prepare --config prepare_data.yaml         # one stage; `density-rlhf <command> --help` lists its flags
    density-rlhf rm --config hyp_b.yaml --accelerate_config accelerate_configs/zero3.yaml

Configs are looked up in the working directory, then among the defaults shipped in the package
(`density_rlhf.recipes`), so a wheel runs without a source checkout. Training commands (`sft`, `rm`, `grpo`) go
through `accelerate launch` (with `--accelerate_config FILE` when given); the others run in this process.
"""

import os
import runpy
import subprocess
import sys
from collections.abc import Sequence

from .scripts.recipe import COMMAND_ENV, RECIPES_DIR


# command -> (recipe script, launched through accelerate, help line)
COMMANDS = {
    "prepare": ("prepare_data.py", False, "prepare preference data (synthetic world or HH-RLHF/UltraFeedback/SE)"),
    "density": ("build_density.py", False, "build the prompt density index"),
    "density-report": ("density_report.py", False, "write the weights report of a density index"),
    "sft": ("train_sft.py", True, "supervised fine-tuning of the starting policy"),
    "rm": ("train_rm.py", True, "train a reward model (density-weighted or uniform pairs)"),
    "grpo": ("train_grpo.py", True, "GRPO from the SFT policy (density-weighted or uniform prompts)"),
    "evaluate": ("evaluate.py", False, "evaluate the policies and reward models of one seed"),
    "run": ("run_hypotheses.py", False, "the whole experiment over seeds: every stage, results.json, report.md"),
}


def usage() -> str:
    lines = ["usage: density-rlhf <command> [--config FILE] [--<field> VALUE ...]", "", "commands:"]
    lines += [f"  {name:<15} {help_}" for name, (_, _, help_) in COMMANDS.items()]
    lines += ["", f"default configs: {RECIPES_DIR} (e.g. --config hyp_b.yaml)"]
    return "\n".join(lines)


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
    accelerate_config = None
    if "--accelerate_config" in args:
        at = args.index("--accelerate_config")
        accelerate_config = args[at + 1] if at + 1 < len(args) else None
        if accelerate_config is None or not os.path.exists(accelerate_config):
            print(f"density-rlhf: --accelerate_config {accelerate_config!r} is not a file", file=sys.stderr)
            return 2
        del args[at : at + 2]
    os.environ[COMMAND_ENV] = command  # the recipes' help names `density-rlhf <command>`
    if launched and not any(a in ("-h", "--help", "--help_all") for a in args):
        launch = [sys.executable, "-m", "accelerate.commands.launch"]
        if accelerate_config:
            launch += ["--config_file", accelerate_config]
        return subprocess.call([*launch, path, *args])
    if accelerate_config:
        print(
            f"density-rlhf: {command} does not train; --accelerate_config applies to sft, rm and grpo", file=sys.stderr
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
