"""The library/experiment split, the package list, the `density-rlhf` command, and (slow) the wheel in empty venvs."""

import ast
import configparser
import os
import subprocess
import sys
from pathlib import Path

import pytest

from density_rlhf import cli

from .conftest import REPO


PACKAGE = REPO / "density_rlhf"
EXPERIMENT = ("density_rlhf.experiment", "density_rlhf.recipes")


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every module `path` imports, at any depth (function-level imports included), relative ones resolved."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rsplit(".", 1)[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, *([base] if base else [])])
            names |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    return names


def core_files() -> list[Path]:
    return [p for p in PACKAGE.rglob("*.py") if "experiment" not in p.relative_to(PACKAGE).parts]


def test_the_core_never_imports_the_experiment():
    offenders = {
        module_name(path): sorted(n for n in imported_modules(path) if n.startswith(EXPERIMENT))
        for path in core_files()
    }
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, offenders
    assert len(core_files()) > 20  # the walk saw the library
    # The check can fail: the experiment does import the core.
    assert any(n.startswith("density_rlhf.") for n in imported_modules(PACKAGE / "experiment" / "graph.py"))


def test_importing_every_core_module_loads_no_experiment_module():
    modules = [module_name(p) for p in core_files() if p.name != "__main__.py"]
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        f"bad = sorted(m for m in sys.modules if m.startswith({EXPERIMENT!r}))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, capture_output=True)


def test_the_command_and_the_training_recipes_load_no_experiment_module():
    """Importing the console script and recipes/train_{rm,grpo,sft}.py (not running them) loads only the library;
    the experiment is imported where the embedded default is built, and only then."""
    code = (
        "import importlib, sys\n"
        "import density_rlhf.cli\n"
        "for m in ('train_rm', 'train_grpo', 'train_sft', 'build_density'): importlib.import_module(f'density_rlhf.recipes.{m}')\n"
        "bad = sorted(m for m in sys.modules if m.startswith('density_rlhf.experiment'))\n"
        "assert not bad, bad\n"
        "import density_rlhf.recipes.train_rm as r\n"
        "assert r.build_default_data.__module__ == 'density_rlhf.recipes.embedded'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    # The check can fail: the runner recipe does load the experiment.
    code = "import sys, density_rlhf.recipes.run_hypotheses; assert 'density_rlhf.experiment.runner' in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True)


def test_setup_cfg_lists_every_package_and_ships_the_recipes():
    from setuptools import find_packages

    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    listed = config["options"]["packages"].split()
    assert sorted(listed) == sorted([*find_packages(str(REPO), include=["density_rlhf*"]), "density_rlhf.recipes"])
    assert "density_rlhf.recipes = recipes" in config["options"]["package_dir"]
    assert "*.yaml" in config["options.package_data"]["density_rlhf.recipes"]
    core = config["options"]["install_requires"]
    assert not any(extra in core for extra in ("sentence-transformers", "evaluate", "beautifulsoup4", "matplotlib"))


def test_the_recipes_are_the_package_recipes():
    from density_rlhf.recipe_kit import RECIPES_DIR

    assert (REPO / "recipes").resolve() == RECIPES_DIR


def test_cli_lists_the_commands_and_refuses_unknown_ones(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in cli.COMMANDS)
    assert cli.main(["train"]) == 2
    assert "unknown command 'train'" in capsys.readouterr().err
    assert cli.main(["prepare", "--accelerate_config", "x.yaml"]) == 2


@pytest.mark.parametrize("command", list(cli.COMMANDS))
def test_cli_help_of_every_command(command):
    result = subprocess.run(
        [sys.executable, "-m", "density_rlhf.cli", command, "--help"],
        capture_output=True, text=True, cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith(f"usage: density-rlhf {command} --config FILE"), result.stdout[:300]


def _run(cmd, **kwargs):
    result = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, (" ".join(map(str, cmd)), (result.stdout + result.stderr)[-4000:])
    return result


@pytest.mark.slow
def test_wheel_installs_into_empty_venvs_and_runs_the_first_stages(tmp_path):
    """`python -m build`; the wheel's contents; a core-only venv imports the sampler without the extras; a venv with
    `[experiment]` runs `density-rlhf prepare` and `density` from an empty directory (no checkout)."""
    import zipfile

    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(REPO)])
    (wheel,) = dist.glob("density_rlhf-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for shipped in ("recipes/hyp_b.yaml", "recipes/defaults.yaml", "recipes/scale/defaults.yaml",
                    "recipes/train_rm.py", "recipes/run_hypotheses.yaml", "cli.py", "recipe_kit/train.py", "mixin.py"):  # fmt: skip
        assert f"density_rlhf/{shipped}" in names, shipped
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "density-rlhf = density_rlhf.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()

    torch_pin = os.environ.get("TORCH_PIN", "torch==2.13.0")
    constraints = ["-c", str(REPO / "constraints.txt")]
    core = tmp_path / "core"
    _run([sys.executable, "-m", "venv", str(core)])
    _run([core / "bin" / "python", "-m", "pip", "install", "-q", torch_pin])
    _run([core / "bin" / "python", "-m", "pip", "install", "-q", *constraints, str(wheel)])
    check = (
        "import importlib.util as u\n"
        "from density_rlhf import DensitySampler, DensityRewardTrainer, with_density_sampling\n"
        "assert sorted(DensitySampler([1.0, 3.0], num_samples=4000, seed=0).__iter__())[2000] == 1\n"
        "assert all(u.find_spec(m) is None for m in ('sentence_transformers', 'evaluate', 'bs4', 'matplotlib'))\n"
    )
    _run([core / "bin" / "python", "-c", check], cwd=tmp_path)

    full = tmp_path / "full"
    _run([sys.executable, "-m", "venv", str(full)])
    _run([full / "bin" / "python", "-m", "pip", "install", "-q", torch_pin])
    _run([full / "bin" / "python", "-m", "pip", "install", "-q", *constraints, f"{wheel}[experiment]"])
    work = tmp_path / "empty"
    work.mkdir()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": ""}
    bin_ = full / "bin" / "density-rlhf"
    for command in cli.COMMANDS:
        assert _run([bin_, command, "--help"], cwd=work, env=env).stdout.startswith(f"usage: density-rlhf {command} ")
    _run([bin_, "prepare", "--config", "prepare_data.yaml", "--output_dir", "data", "--n_train_pairs", "600"],
         cwd=work, env=env)  # fmt: skip
    _run([bin_, "density", "--config", "build_density.yaml", "--data_dir", "data", "--density_dir", "density"],
         cwd=work, env=env)  # fmt: skip
    assert (work / "data" / "dataset").is_dir() and (work / "density" / "metadata.json").exists()


def _uses_mock(path: Path) -> bool:
    """Whether `path` imports `unittest.mock` (or `mock`) anywhere, function-level imports included."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import) and any(a.name in ("mock", "unittest.mock") for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and (
            node.module in ("mock", "unittest.mock")
            or (node.module == "unittest" and "mock" in {a.name for a in node.names})
        ):
            return True
    return False


def test_no_production_module_patches_with_mock(tmp_path):
    """The library, the experiment and the recipes build what they need (e.g. the dry run's per-rank configs) without
    `unittest.mock`; mocks are the tests' business."""
    offenders = [
        str(path.relative_to(REPO))
        for path in [*PACKAGE.rglob("*.py"), *(REPO / "recipes").rglob("*.py")]
        if _uses_mock(path)
    ]
    assert not offenders, offenders
    # The check can fail: both spellings of the import are seen.
    for text in ("from unittest import mock\n", "def f():\n    import unittest.mock\n"):
        (tmp_path / "m.py").write_text(text)
        assert _uses_mock(tmp_path / "m.py"), text
