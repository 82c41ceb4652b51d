from pathlib import Path

import pytest
import torch
import yaml
from trl import ModelConfig, SFTConfig

from density_rlhf import DensityGRPOConfig, DensityRewardConfig
from density_rlhf.experiment.design import DENSITY_SAMPLING, RM_OF
from density_rlhf.experiment.graph import OVERRIDE_SECTIONS, RunnerArguments
from density_rlhf.experiment.prepare import PrepareDataArguments
from density_rlhf.recipe_kit import (
    BuildDensityArguments,
    DensityScriptArguments,
    load_config,
    parse_args,
    read_config,
    resolve_config,
)
from density_rlhf.recipes import compare_rm, train_dpo, train_grpo, train_kto, train_rloo, train_rm

from .conftest import REPO
from .helpers import load_recipe


SECTION_TYPES = {  # what train_rm.py and train_grpo.py parse
    "reward": list(train_rm.DATACLASSES),
    "grpo": list(train_grpo.DATACLASSES),
}
FLAT_TYPES = {
    "prepare_data.yaml": [PrepareDataArguments],
    "prepare_data_null.yaml": [PrepareDataArguments],
    "build_density.yaml": [BuildDensityArguments],
    "sft.yaml": [DensityScriptArguments, SFTConfig, ModelConfig],
    "run_hypotheses.yaml": [RunnerArguments],
    "run_null_world.yaml": [RunnerArguments],
    "run_baselines.yaml": [RunnerArguments],
    "dpo.yaml": list(train_dpo.DATACLASSES),
    "kto.yaml": list(train_kto.DATACLASSES),
    "rloo.yaml": list(train_rloo.DATACLASSES),
    "compare_rm.yaml": list(compare_rm.DATACLASSES),
}
RECIPE_YAMLS = sorted(p for p in (REPO / "recipes").rglob("*.yaml"))
GPU_OVERRIDES = ["--bf16", "false", "--use_cpu", "true"]


def _check_overrides(path: Path) -> list[str]:
    """An overrides file is read by the runner: every stage it touches must still build (2 CPU processes)."""
    from density_rlhf.experiment.dry_run import dry_run, launcher_processes
    from density_rlhf.experiment.graph import build_stages
    from density_rlhf.recipe_kit import load_config, resolve_config

    config = load_config(resolve_config("scale/run_hypotheses.yaml"))
    args = RunnerArguments(**{**config, "seeds": [0], "output_dir": "/tmp/unused", "overrides": str(path)})
    assert launcher_processes(args.launcher) == 2
    stages = build_stages(args)
    problems = [p for p in dry_run(stages, args.launcher, 2) if "tiny test model" not in p]  # tiny: on purpose here
    assert not problems, problems
    return [s.name for s in stages if s.launched]


def _parse_all(path: Path) -> list[tuple]:
    raw = read_config(path)  # with its `defaults:` file underneath
    if "launcher" in raw and set(raw) <= {"launcher", *OVERRIDE_SECTIONS}:  # runner overrides (rehearsal_cpu.yaml)
        return _check_overrides(path)
    overrides = GPU_OVERRIDES if "scale" in path.parts and not torch.cuda.is_available() else []
    if path.name in FLAT_TYPES:
        types = FLAT_TYPES[path.name]
        extra = overrides if any(t is SFTConfig for t in types) else []
        return [parse_args(types, ["--config", str(path), *extra])]
    sections = [s for s in SECTION_TYPES if isinstance(raw.get(s), dict)]
    assert sections, f"{path} has neither a known name nor sections"
    return [parse_args(SECTION_TYPES[s], ["--config", str(path), *overrides], section=s) for s in sections]


@pytest.mark.parametrize("path", RECIPE_YAMLS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_recipe_yaml_parses(path):
    parsed = _parse_all(path)
    assert parsed
    if path.name.startswith("hyp_"):
        arm = path.stem[-1].upper()
        for _, training_args, model_args in parsed:
            # C trains with A's reward model and D with B's: the same model a hand launch of hyp_a/hyp_b trains.
            section = "grpo" if isinstance(training_args, DensityGRPOConfig) else "reward"
            assert training_args.density_sampling == DENSITY_SAMPLING[arm][section]
            if section == "reward":
                assert training_args.density_sampling == DENSITY_SAMPLING[RM_OF[arm]]["reward"]
            assert training_args.seed == 0 and model_args.model_name_or_path


def test_hypothesis_files_state_only_what_differs():
    """Each hypothesis file is short and lays its settings over one shared defaults file."""
    for directory in (REPO / "recipes", REPO / "recipes" / "scale"):
        files = sorted(directory.glob("hyp_*.yaml"))
        assert len(files) >= 4
        for path in files:
            text = path.read_text()
            assert len(text.splitlines()) <= 15, path
            assert yaml.safe_load(text)["defaults"] == "defaults.yaml", path
        defaults = yaml.safe_load((directory / "defaults.yaml").read_text())
        assert "output_dir" not in defaults.get("reward", {}) and "output_dir" not in defaults.get("grpo", {})


def test_hypotheses_differ_only_where_they_should():
    density = {}
    for h in "abcd":
        rm = parse_args(SECTION_TYPES["reward"], ["--config", f"hyp_{h}.yaml"], section="reward")[1]
        grpo = parse_args(SECTION_TYPES["grpo"], ["--config", f"hyp_{h}.yaml"], section="grpo")[1]
        density[h] = (rm.density_sampling, grpo.density_sampling)
        assert grpo.reward_model_path == rm.output_dir  # each GRPO stage uses its own hypothesis's reward model
    assert density == {"a": (False, False), "b": (True, False), "c": (False, True), "d": (True, True)}


@pytest.mark.parametrize("path", sorted((REPO / "accelerate_configs").glob("*.yaml")), ids=lambda p: p.name)
def test_accelerate_configs_load(path):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(path))
    expected = {
        "single_gpu.yaml": ("NO", 1), "multi_gpu.yaml": ("MULTI_GPU", 8), "zero1.yaml": ("DEEPSPEED", 8),
        "zero2.yaml": ("DEEPSPEED", 8), "zero3.yaml": ("DEEPSPEED", 8), "cpu_2proc.yaml": ("MULTI_GPU", 2),
        "zero3_cpu_2proc.yaml": ("DEEPSPEED", 2),
    }[path.name]  # fmt: skip
    assert (str(config.distributed_type).split(".")[-1], config.num_processes) == expected
    if path.name.startswith("zero") and "cpu" not in path.name:
        assert config.deepspeed_config["zero_stage"] == int(path.name[4]) and config.mixed_precision == "bf16"


def test_unknown_keys_and_missing_sections_fail(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: 0\nreward:\n  output_dir: x\n  not_a_field: 1\ngrpo:\n  output_dir: y\n")
    with pytest.raises(ValueError, match="not_a_field"):
        parse_args(SECTION_TYPES["reward"], ["--config", str(bad), "--use_cpu", "true"], section="reward")
    with pytest.raises(ValueError, match="none for this script"):
        load_config(str(bad), section="sft")


def test_cli_overrides_the_yaml_and_bare_names_resolve(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_config("hyp_b.yaml") == str(REPO / "recipes" / "hyp_b.yaml")
    _, args, model = parse_args(
        SECTION_TYPES["reward"],
        ["--config", "hyp_b.yaml", "--learning_rate", "0.5", "--max_steps", "7"],
        section="reward",
    )
    assert (args.learning_rate, args.max_steps, args.density_sampling) == (0.5, 7, True)
    with pytest.raises(FileNotFoundError, match="not found"):
        resolve_config("hyp_z.yaml")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown on machines without a GPU")
def test_scale_recipe_without_gpu_gives_a_clear_message():
    with pytest.raises(SystemExit, match="GPU recipe"):
        parse_args(SECTION_TYPES["reward"], ["--config", "scale/hyp_b.yaml"], section="reward")


@pytest.mark.parametrize("script,section", [("train_rm", "reward"), ("train_grpo", "grpo")])
def test_scale_recipe_dry_run_with_the_tiny_model(tiny_pipeline, tmp_path, script, section):
    """The 8-GPU recipe with the tiny offline model swapped in: proves the wiring, one step on the CPU."""
    recipe = load_recipe(script)
    tiny = tiny_pipeline / "data" / "tiny"
    model = tiny / ("reward" if section == "reward" else "policy")
    overrides = [
        "--config", str(REPO / "recipes" / "scale" / "hyp_d.yaml"), *GPU_OVERRIDES, "--dtype", "float32",
        "--model_name_or_path", str(model), "--data_dir", str(tiny_pipeline / "data"),
        "--density_index_path", str(tiny_pipeline / "density"), "--output_dir", str(tmp_path), "--max_steps", "1",
        "--report_to", "none", "--save_strategy", "no", "--eval_strategy", "no", "--gradient_checkpointing", "false",
    ]  # fmt: skip
    if section == "grpo":
        overrides += ["--reward_model_path", str(tiny / "reward"), "--max_completion_length", "8"]
    else:
        overrides += ["--max_length", "128", "--num_train_epochs", "1"]
    script_args, training_args, model_args = parse_args(SECTION_TYPES[section], overrides, section=section)
    # D's reward model is B's (trained once); its GRPO arm is D's.
    assert training_args.density_sampling
    recipe.main(script_args, training_args, model_args)
    assert (tmp_path / "model.safetensors").exists()


def test_real_data_recipes_do_not_invent_synthetic_data(tmp_path):
    from density_rlhf.recipe_kit import ensure_data, load_train_eval

    script_args = parse_args(
        SECTION_TYPES["reward"],
        ["--config", "scale/hyp_b.yaml", *GPU_OVERRIDES, "--data_dir", str(tmp_path / "missing")],
        section="reward",
    )[0]
    assert script_args.build_missing is False
    with pytest.raises(FileNotFoundError, match="prepare it first"):
        load_train_eval(script_args)
    with pytest.raises(FileNotFoundError, match="prepare it first"):
        ensure_data(tmp_path / "missing", build_missing=False)
    assert not (tmp_path / "missing").exists()


def test_a_missing_local_model_is_one_line_naming_the_command(tmp_path, tiny_pipeline):
    """No Hub traceback: the path and the command that creates it, as a one-line error."""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, str(REPO / "recipes" / "train_grpo.py"), "--config", "hyp_c.yaml", "--model_name_or_path",
         str(tmp_path / "outputs" / "sft"), "--reward_model_path", str(tmp_path / "rm"), "--data_dir",
         str(tiny_pipeline / "data"), "--density_index_path", str(tiny_pipeline / "density"), "--output_dir",
         str(tmp_path / "o")],
        capture_output=True, text=True, cwd=tmp_path, env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: model_name_or_path") and str(tmp_path / "outputs" / "sft") in last
    assert "recipes/train_sft.py --config recipes/sft.yaml" in last
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("config_cls", [DensityRewardConfig, DensityGRPOConfig])
def test_the_core_configs_carry_no_experiment_label(config_cls, tmp_path):
    from trl import DPOConfig

    from density_rlhf import density_config

    for cls in (config_cls, density_config(DPOConfig)):
        assert "hypothesis" not in cls.__dataclass_fields__
    with pytest.raises(TypeError, match="hypothesis"):
        config_cls(output_dir=str(tmp_path), use_cpu=True, hypothesis="B")


def test_the_runner_checks_each_arms_density_sampling_against_the_design(tmp_path):
    """The label lives in the experiment: the runner refuses an arm file whose `density_sampling` contradicts the
    design (B's reward model unweighted here, in hyp_b and hyp_d alike), naming the file and the fix."""
    from density_rlhf.experiment.graph import RunnerArguments, build_stages, check_stage_configs

    (tmp_path / "defaults.yaml").write_text((REPO / "recipes" / "defaults.yaml").read_text())
    for h in "abcd":
        text = (REPO / "recipes" / f"hyp_{h}.yaml").read_text()
        if h in "bd":  # B's reward model (which D reuses) unweighted
            text = text.replace("reward:\n  density_sampling: true\n", "reward:\n", 1)
        (tmp_path / f"hyp_{h}.yaml").write_text(text)
    args = RunnerArguments(output_dir=str(tmp_path / "run"), seeds=[0], oracle=False,
                           hypothesis_config=str(tmp_path / "hyp_{h}.yaml"))  # fmt: skip
    with pytest.raises(ValueError, match=r"hyp_b\.yaml: arm B's `reward:` stage samples by density=True.*set "
                                         r"`density_sampling: true`"):  # fmt: skip
        check_stage_configs(build_stages(args))
    args = RunnerArguments(output_dir=str(tmp_path / "run"), seeds=[0], oracle=False, hypotheses=["A", "C"],
                           hypothesis_config=str(tmp_path / "hyp_{h}.yaml"))  # fmt: skip
    check_stage_configs(build_stages(args))  # B is not run: its file is not read


def test_grpo_recipe_loads_reward_funcs_by_name_or_import_path():
    """`reward_funcs` as in TRL's GRPO script: a function of `trl.rewards` or a dotted import path; the experiment's
    rule checker is one such path, and it refuses data without the world's `topic` column."""
    import trl.rewards

    from density_rlhf.experiment import world
    from density_rlhf.recipe_kit import RecipeError

    assert train_grpo.load_reward_funcs(None) is None and train_grpo.load_reward_funcs([]) is None
    funcs = train_grpo.load_reward_funcs(["density_rlhf.experiment.world.ground_truth", "think_format_reward"])
    assert funcs == [world.ground_truth, trl.rewards.think_format_reward]
    for bad, match in (("density_rlhf.experiment.wrold.ground_truth", "cannot import"),
                       ("density_rlhf.experiment.world.ground_truht", "has no callable 'ground_truht'"),
                       ("get_soft_overlong_punishment", "not a function of trl.rewards"),
                       ("no_such_reward", "not a function of trl.rewards")):  # fmt: skip
        with pytest.raises(RecipeError, match=match):
            train_grpo.load_reward_funcs([bad])
    with pytest.raises(ValueError, match="needs the synthetic world's `topic` column"):
        world.ground_truth(["p"], ["c"])
    # The shipped experiment logs the rule checker (weight 0) beside the reward model; the oracle optimizes it alone.
    for name, weights in (("hyp_a.yaml", [0.0]), ("hyp_o.yaml", [1.0])):
        config = load_config(resolve_config(name), "grpo")
        assert config["reward_funcs"] == ["density_rlhf.experiment.world.ground_truth"]
        assert config["reward_weights"] == weights


# One gloo rank in a fresh interpreter (teardown leaves state in the process), on a free port.
SINGLE_RANK = """
import os
from density_rlhf.experiment.execution import free_port
os.environ.update(DS_ACCELERATOR="cpu", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), RANK="0", WORLD_SIZE="1",
                  LOCAL_RANK="0")
"""

DEEPSPEED_TEARDOWN = """
import deepspeed
import torch.distributed as dist
from deepspeed.utils import groups
from density_rlhf.recipe_kit import distributed_run

with distributed_run():
    deepspeed.init_distributed(dist_backend="gloo")
    groups._clone_world_group()  # the group ZeRO-3 gathers on
    assert groups._WORLD_GROUP is not None
print("released" if groups._WORLD_GROUP is None and not dist.is_initialized() else "kept")
"""

ZERO3_ENGINE_TEARDOWN = """
import weakref
import deepspeed
import torch
import torch.distributed as dist
from density_rlhf.recipe_kit import distributed_run

def gloo_workers():
    return sum(open(f"/proc/self/task/{t}/comm").read().strip() == "pt_gloo_runloop" for t in os.listdir("/proc/self/task"))

config = {"train_micro_batch_size_per_gpu": 2, "zero_optimization": {"stage": 3},
          "optimizer": {"type": "AdamW", "params": {"lr": 1e-3, "torch_adam": True}}}
with distributed_run():
    deepspeed.init_distributed(dist_backend="gloo")
    with deepspeed.zero.Init(config_dict_or_path=config):
        model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    engine, *_ = deepspeed.initialize(model=model, config=config, model_parameters=model.parameters())
    for _ in range(3):  # from the second step on, ZeRO-3 releases parameters by the trace it recorded
        engine.backward(engine(torch.randn(2, 4)).sum())
        engine.step()
    model, world = weakref.ref(model), weakref.ref(dist.group.WORLD)
    del engine
    print("workers during", gloo_workers())
print("model", "kept" if model() else "freed", "world", "kept" if world() else "freed", "workers", gloo_workers())
"""


def _run_single_rank(script: str) -> list[str]:
    """The stdout lines of `script` run as one gloo rank in a fresh interpreter; a non-zero exit fails."""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", SINGLE_RANK + script], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()


def test_distributed_run_frees_zero3_engines_and_every_process_group():
    """DeepSpeed keeps ZeRO-3 engines (and through them the groups they gather on) for the life of the process, and
    modules imported after the group starts keep WORLD as a default argument; the teardown frees all of them, so no
    gloo worker thread is left for interpreter finalization."""
    pytest.importorskip("deepspeed")
    lines = _run_single_rank(ZERO3_ENGINE_TEARDOWN)
    assert "workers during 4" in lines, lines[-20:]  # two groups (WORLD and DeepSpeed's clone), 2 each
    assert lines[-1] == "model freed world freed workers 0", lines[-20:]


def test_distributed_run_releases_the_groups_deepspeed_keeps():
    """A recipe's teardown goes through DeepSpeed's live backend, so DeepSpeed's clone of WORLD does not outlive it."""
    pytest.importorskip("deepspeed")
    assert _run_single_rank(DEEPSPEED_TEARDOWN)[-1] == "released"
