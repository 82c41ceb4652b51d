import importlib

from .conftest import REPO


def load_recipe(name: str):
    """The recipe `recipes/<name>.py`, imported as the package module `density_rlhf.recipes.<name>`."""
    return importlib.import_module(f"density_rlhf.recipes.{name}")


def accelerate_launch(
    accelerate_config: str, script: str, args: list[str], env: dict | None = None, cwd=None, launch_args=()
):
    """Run `accelerate launch` once on a recipe (or on `script` if it is an absolute path); a non-zero exit fails
    with the end of its output (no retries). `launch_args` override the accelerate config (e.g. `--zero_stage 2`)."""
    import os
    import subprocess
    import sys

    from density_rlhf.experiment.execution import free_port

    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--config_file",
        str(REPO / "accelerate_configs" / accelerate_config), "--main_process_port", str(free_port()),
        *launch_args, str(REPO / "recipes" / script), *args,
    ]  # fmt: skip
    result = subprocess.run(
        cmd, capture_output=True, text=True, env={**os.environ, "CUDA_VISIBLE_DEVICES": "", **(env or {})},
        cwd=cwd, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    return result
