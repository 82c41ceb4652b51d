import json
import math
from pathlib import Path

import numpy as np
import pytest

from density_rlhf.experiment.graph import check_stage_configs
from density_rlhf.experiment.report import KEY_METRICS, aggregate
from density_rlhf.experiment.runner import RunnerArguments, StageFailed, build_stages, run
from density_rlhf.experiment.stats import holm, mean_ci, minimum_detectable_effect, seeds_needed, verdict
from density_rlhf.index import BUCKETS
from density_rlhf.recipe_kit.recipe import parse_args


REPO = Path(__file__).resolve().parent.parent


SMOKE = dict(
    seeds=[0], n_train_pairs=600, max_parallel=2, sft_max_steps=10, rm_max_steps=10, grpo_max_steps=2, eval_num_samples=2,
    eval_prompts_per_topic=2, report_to="none",
)  # fmt: skip


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    results = run(RunnerArguments(output_dir=str(root), **SMOKE))
    return root, results


def test_runner_end_to_end(smoke_run, capsys):
    root, results = smoke_run
    saved = json.loads((root / "results.json").read_text())
    groups = (*BUCKETS, "all", "rare_topics", "other_topics", "topic/weather", "topic/law")
    for policy in ("SFT", "O", "A", "B", "C", "D"):
        for group in groups:
            metrics = saved["policies"][policy][group]
            for metric in ("rule_satisfied", "tic_rate", "reward/uniform", "reward/density", "within/distinct_2",
                           "em_dash_rate", "agreement/uniform"):  # fmt: skip
                assert metric in metrics, (policy, group, metric)
                assert {"mean", "ci_low", "ci_high", "n", "values"} <= set(metrics[metric])
            assert not math.isnan(metrics["rule_satisfied"]["mean"])
    for rm in ("uniform", "density"):
        for group in groups:
            assert {"accuracy", "loss", "on_policy_agreement", "tic_effect"} <= set(saved["reward_models"][rm][group])
    for comparison in ("O-A", "B-A", "C-A", "D-A", "RM density-uniform"):
        assert {"rare_topics", "all"} <= set(saved["comparisons"][comparison])
    assert len(saved["primary_endpoints"]) <= 8
    assert all("mde" in row for row in saved["primary_endpoints"] if row.get("status") != "not run")
    for plot in ("weights_by_bucket", "rm_accuracy", "policy_by_group", "diversity", "training_curves"):
        path = root / f"{plot}.png"
        assert path.exists() and path.read_bytes()[:4] == b"\x89PNG"
    report = (root / "report.md").read_text()
    assert report.index("## Primary endpoints") < report.index("## Exploratory")
    assert "Holm" in report and "MDE" in report


def test_runner_resume_skips_completed_stages(smoke_run, capsys):
    root, _ = smoke_run
    results = run(RunnerArguments(output_dir=str(root), **SMOKE))
    assert all(stage["skipped"] for stage in results["stages"])
    assert "up to date, skipped" in capsys.readouterr().out
    # Changing one stage's configuration re-runs it and what depends on it, nothing upstream.
    changed = run(RunnerArguments(output_dir=str(root), **{**SMOKE, "grpo_max_steps": 1}))
    ran = {s["stage"] for s in changed["stages"] if not s["skipped"]}
    assert ran == {f"grpo_{h}[seed=0]" for h in "OABCD"} | {"evaluate[seed=0]"}
    # The changed stages started from scratch (stale checkpoints removed), not from the old run's last checkpoint.
    state = json.loads((root / "seed0" / "grpo_a" / "trainer_state.json").read_text())
    assert state["global_step"] == 1 and state["max_steps"] == 1


def test_failing_stage_names_itself_and_its_log(smoke_run, tmp_path):
    root, _ = smoke_run
    bad = tmp_path / "sft_bad.yaml"
    bad.write_text("learning_rate: not-a-number\n")
    with pytest.raises(StageFailed, match=r"stage sft\[seed=0\] failed .*log: .*sft_seed0\.log") as err:
        run(RunnerArguments(output_dir=str(root), sft_config=str(bad), **SMOKE))
    assert (root / "world0" / "data" / "dataset").exists()  # earlier outputs are kept
    # the failure carries the end of the stage's own log: the parser's error line, not only the exit code
    last = str(err.value).strip().splitlines()[-1]
    assert "error: argument --learning_rate" in last and "not-a-number" in last, str(err.value)


def test_scale_config_without_gpu_is_refused_up_front(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("only meaningful without a GPU")
    args = RunnerArguments(
        output_dir=str(tmp_path),
        sft_config="scale/sft.yaml",
        hypothesis_config="scale/hyp_{h}.yaml",
        oracle=False,
        **SMOKE,
    )  # no oracle, as in recipes/scale/run_hypotheses.yaml (the tiny oracle's 24 tokens would be refused first)
    with pytest.raises(SystemExit, match="GPU recipe"):
        run(args)
    assert not (tmp_path / "world0").exists()  # nothing ran


def test_stage_graph_and_reward_model_reuse(tmp_path):
    stages = build_stages(RunnerArguments(output_dir=str(tmp_path), seeds=[0, 1]))
    names = [s.name for s in stages]
    assert names[:2] == ["prepare_data[world=0]", "build_density[world=0]"] and "prepare_data[world=1]" in names
    assert names.count("rm_A[seed=1]") == 1 and "rm_C[seed=0]" not in names  # C and D reuse A's and B's RMs
    trained = [s for s in stages if s.launched]
    assert all(s.args[s.args.index("--report_to") + 1] == "tensorboard" for s in trained)  # TensorBoard by default
    grpo_c = next(s for s in stages if s.name == "grpo_C[seed=0]")
    assert grpo_c.args[grpo_c.args.index("--reward_model_path") + 1].endswith("seed0/rm_a")
    oracle = next(s for s in stages if s.name == "grpo_O[seed=1]")
    assert "--reward_model_path" not in oracle.args and oracle.config == "hyp_o.yaml"
    assert oracle.args[oracle.args.index("--data_dir") + 1].endswith("world1/data")
    position = {s.name: i for i, s in enumerate(stages)}
    assert all(position[d.name] < position[s.name] for s in stages for d in s.deps)
    # A fixed world: one data stage shared by every seed.
    fixed = build_stages(RunnerArguments(output_dir=str(tmp_path), seeds=[0, 1], world_seed=7))
    assert [s.name for s in fixed if s.name.startswith("prepare")] == ["prepare_data[world=7]"]


def test_alpha_dose_response_arms_and_table(tmp_path):
    """`--alphas`: per alpha an RM on B's recipe and a GRPO arm on D's, both at that alpha, evaluated by name."""
    stages = build_stages(RunnerArguments(output_dir=str(tmp_path), seeds=[0], alphas=[0.0, 0.5]))
    by_name = {s.name: s for s in stages}
    rm, grpo = by_name["rm_alpha0.5[seed=0]"], by_name["grpo_alpha0.5[seed=0]"]
    assert rm.config == "hyp_b.yaml" and rm.args[rm.args.index("--density_alpha") + 1] == "0.5"
    assert rm.args.count("--output_dir") == 1 and rm.output.name == "rm_alpha0.5"
    assert grpo.config == "hyp_d.yaml" and grpo.args[grpo.args.index("--density_alpha") + 1] == "0.5"
    assert grpo.args[grpo.args.index("--reward_model_path") + 1] == str(rm.output) and rm in grpo.deps
    evaluate = by_name["evaluate[seed=0]"]
    assert (
        f"density@0.5={rm.output}" in evaluate.args and f"D@0={by_name['grpo_alpha0[seed=0]'].output}" in evaluate.args
    )
    with pytest.raises(ValueError, match="non-negative"):
        RunnerArguments(output_dir=str(tmp_path), alphas=[-1.0])

    def seed_result(acc, tic):
        rare = lambda v: {"rare_topics": v}  # noqa: E731
        return {"policies": {"SFT": rare({"tic_rate": 0.3}), "A": rare({"tic_rate": 0.3}),
                             "D@0.5": rare({"tic_rate": tic, "rule_satisfied": 0.5})},
                "reward_models": {"density@0.5": rare({"accuracy": acc, "tic_effect": 0.1})}}  # fmt: skip

    out = aggregate({0: seed_result(0.8, 0.4), 1: seed_result(0.9, 0.5)}, alphas=[0.5])
    (row,) = out["dose_response"]
    assert row["alpha"] == 0.5 and row["rm_accuracy"]["mean"] == pytest.approx(0.85)
    assert row["tic_rate"]["values"] == [0.4, 0.5] and row["rm_tic_effect"]["mean"] == pytest.approx(0.1)


def test_statistics():
    stat = mean_ci([1.0, 2.0, 3.0])
    assert stat["mean"] == pytest.approx(2.0)
    assert stat["ci_low"] == pytest.approx(2.0 - 4.302653 * 1.0 / math.sqrt(3), abs=1e-4)
    assert verdict({**mean_ci([0.5, 0.6, 0.7])}) == "higher"
    assert verdict({**mean_ci([-0.1, 0.1, 0.05])}) == "no detectable difference"
    assert verdict(mean_ci([0.3])).startswith("no detectable difference (1 seed")
    # MDE = (t_0.975,2 + t_0.8,2) * sd / sqrt(3) = (4.3027 + 1.0607) * 1 / sqrt(3)
    assert minimum_detectable_effect([1.0, 2.0, 3.0]) == pytest.approx((4.302653 + 1.060660) / math.sqrt(3), abs=1e-4)
    assert minimum_detectable_effect([1.0]) is None


def test_holm_step_down():
    # m = 4: thresholds 0.0125, 0.0167, 0.025, 0.05 for the sorted p-values
    assert holm([0.01, 0.04, 0.03, 0.005]) == [True, False, False, True]
    assert holm([0.001, 0.012, 0.02, 0.04]) == [True, True, True, True]
    assert holm([0.02, 0.001, None]) == [True, True, None]  # 0.02 <= 0.05 / 1 once 0.001 is rejected
    assert holm([0.3, 0.001, 0.026]) == [False, True, False]  # 0.026 > 0.05 / 2 stops the walk


def test_aggregate_pairs_differences_by_seed():
    def seed_result(a, b):
        pol = {b_: {"rule_satisfied": v} for b_, v in (("rare", a), ("all", a))}
        pol_b = {b_: {"rule_satisfied": v} for b_, v in (("rare", b), ("all", b))}
        return {"policies": {"SFT": pol, "A": pol, "B": pol_b}, "reward_models": {}}

    out = aggregate({0: seed_result(0.2, 0.5), 1: seed_result(0.4, 0.6), 2: seed_result(0.1, 0.45)})
    diff = out["comparisons"]["B-A"]["rare"]["rule_satisfied"]
    assert diff["values"] == pytest.approx([0.3, 0.2, 0.35]) and diff["verdict"] == "higher"
    assert diff["mde"] == pytest.approx(minimum_detectable_effect([0.3, 0.2, 0.35]))
    assert set(out["comparisons"]["B-A"]["rare"]) <= set(KEY_METRICS)
    assert {"holm_verdict", "p_value"} <= set(diff)


def test_stage_hash_follows_the_config_content(tmp_path, monkeypatch):
    import shutil

    from .conftest import REPO

    for name in ("hyp_a.yaml", "defaults.yaml", "sft.yaml"):
        shutil.copy(REPO / "recipes" / name, tmp_path / name)
    args = RunnerArguments(output_dir=str(tmp_path / "out"), hypotheses=["A"], sft_config=str(tmp_path / "sft.yaml"),
                           hypothesis_config=str(tmp_path / "hyp_{h}.yaml"), seeds=[0])  # fmt: skip
    before = {s.name: s.hash for s in build_stages(args)}
    text = (tmp_path / "hyp_a.yaml").read_text()
    assert text.rstrip().splitlines()[-1].startswith("  ") and "max_steps" not in text  # grpo is the last section
    (tmp_path / "hyp_a.yaml").write_text(text.rstrip() + "\n  max_steps: 201\n")
    after = {s.name: s.hash for s in build_stages(args)}
    changed = {name for name in before if before[name] != after[name]}
    assert changed == {"grpo_A[seed=0]", "evaluate[seed=0]"}
    # The recipe's code is part of the hash too: editing train_rm.py re-runs the RM and everything downstream.
    from density_rlhf.experiment import graph

    recipes = tmp_path / "recipes"
    shutil.copytree(REPO / "recipes", recipes)
    monkeypatch.setattr(graph, "RECIPES_DIR", recipes)
    same = {s.name: s.hash for s in build_stages(args)}
    (recipes / "train_rm.py").write_text((recipes / "train_rm.py").read_text() + "\n# changed\n")
    edited = {s.name: s.hash for s in build_stages(args)}
    assert same == after
    assert {n for n in same if same[n] != edited[n]} == {"rm_A[seed=0]", "grpo_A[seed=0]", "evaluate[seed=0]"}


def _scale_args(tmp_path, **overrides):
    from density_rlhf.recipe_kit import load_config, resolve_config

    config = load_config(resolve_config("scale/run_hypotheses.yaml"))
    return RunnerArguments(**{**config, "output_dir": str(tmp_path), **overrides})


def test_scale_dry_run_prints_every_command_and_validates_for_eight_gpus(tmp_path, capsys):
    args = _scale_args(tmp_path, dry_run=True)
    stages = build_stages(args)
    assert run(args) == {}
    out = capsys.readouterr().out
    assert "every training config builds for 8 processes" in out  # read from accelerate_configs/zero3.yaml
    for stage in stages:
        assert stage.name in out
    commands = [line.strip() for line in out.splitlines() if "recipes/" in line]
    assert len(commands) == len(stages) and not any("/tiny/" in c for c in commands)  # SFT/RM train the config's model
    assert not (tmp_path / "logs").exists()  # nothing ran


def test_scale_dry_run_reports_each_problem_in_one_line(tmp_path):
    overrides = tmp_path / "bad.yaml"
    overrides.write_text(
        "grpo: {num_generations: 7}\nreward: {density_sampling: true}\n"
        "sft: {model_name_or_path: outputs/data/tiny/policy}\n"
    )
    with pytest.raises(StageFailed) as err:
        run(_scale_args(tmp_path, seeds=[0], dry_run=True, overrides=str(overrides)))
    lines = str(err.value).splitlines()
    assert "problem(s)" in lines[0]
    assert any(line.startswith("grpo_A[seed=0]") and "divisible by num_generations" in line for line in lines)
    assert any(line.startswith("rm_A[seed=0]") and "density_sampling" in line for line in lines)
    assert any(line.startswith("sft[seed=0]") and "tiny test model" in line for line in lines)


def test_overrides_file_rejects_unknown_sections(tmp_path):
    overrides = tmp_path / "bad.yaml"
    overrides.write_text("trainer: {max_steps: 2}\n")
    with pytest.raises(ValueError, match="unknown keys \\['trainer'\\]"):
        RunnerArguments(output_dir=str(tmp_path), overrides=str(overrides))


@pytest.mark.slow
def test_scale_rehearsal_on_two_cpu_processes_with_zero3(tmp_path):
    """recipes/scale/ end to end under 2 CPU processes and DeepSpeed ZeRO-3 (README: "Rehearsing the scale run")."""
    import os
    import subprocess
    import sys

    from .conftest import REPO

    pytest.importorskip("deepspeed")
    if not (REPO.parent / "shared" / "data" / "hh_rlhf_harmless_sample.jsonl.gz").exists():
        pytest.skip("needs ../shared/data/hh_rlhf_harmless_sample.jsonl.gz")
    cmd = [
        sys.executable, "recipes/run_hypotheses.py", "--config", "recipes/scale/run_hypotheses.yaml", "--overrides",
        "recipes/scale/rehearsal_cpu.yaml", "--seeds", "0", "--output_dir", str(tmp_path), "--report_to", "none",
    ]  # fmt: skip
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, (result.stdout + result.stderr)[-6000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["policies"]) == {"SFT", "A", "B", "C", "D"} and set(results["reward_models"]) == {
        "uniform", "density"
    }  # fmt: skip
    for log in ("sft_seed0", "rm_B_seed0", "grpo_D_seed0"):  # each command: ZeRO-3 on 2 CPU processes
        assert "zero3_cpu_2proc.yaml" in (tmp_path / "logs" / f"{log}.log").read_text().splitlines()[0]
    assert "/tiny/policy" in (tmp_path / "logs" / "sft_seed0.log").read_text().splitlines()[0]
    assert json.loads((tmp_path / "seed0" / "grpo_d" / "trainer_state.json").read_text())["global_step"] == 2
    stats = json.loads((tmp_path / "world0" / "data" / "stats.json").read_text())
    assert set(stats["rows_read"]) == {"hh", "uf", "se"}  # the three sources, from their local samples


def test_concurrent_accelerate_stages_get_their_own_ports(tmp_path):
    from density_rlhf.experiment.execution import _command

    launcher = "accelerate launch --config_file accelerate_configs/zero3_cpu_2proc.yaml"
    stages = [s for s in build_stages(RunnerArguments(output_dir=str(tmp_path), launcher=launcher)) if s.launched]
    commands = [_command(s, launcher, own_port=True) for s in stages[:2]]
    ports = [c[c.index("--main_process_port") + 1] for c in commands]
    assert all(c[c.index("--main_process_port") - 1] == "launch" for c in commands) and ports[0] != ports[1]
    fixed = f"{launcher} --main_process_port 29600"
    assert _command(stages[0], fixed, own_port=True).count("--main_process_port") == 1
    assert "--main_process_port" not in _command(stages[0], launcher)  # a dry run prints the command as configured


def test_a_reward_section_the_runner_would_ignore_is_refused(tmp_path):
    from density_rlhf.recipe_kit import RECIPES_DIR

    for name in ("defaults", "hyp_a", "hyp_b", "hyp_c", "hyp_d"):
        text = (RECIPES_DIR / f"{name}.yaml").read_text()
        if name == "hyp_c":
            text = text.replace("reward:\n", "reward:\n  learning_rate: 7.0e-4\n", 1)
        (tmp_path / f"{name}.yaml").write_text(text)
    pattern = str(tmp_path / "hyp_{h}.yaml")
    with pytest.raises(
        ValueError, match=r"C reuses A's reward model, but the `reward:` sections differ in \['learning_rate'\]"
    ):
        build_stages(RunnerArguments(output_dir=str(tmp_path / "run"), hypothesis_config=pattern))
    build_stages(RunnerArguments(output_dir=str(tmp_path / "run"), hypothesis_config=pattern, hypotheses=["A", "B"]))


def test_evaluation_samples_at_the_grpo_arms_generation_length(tmp_path):
    from density_rlhf.recipe_kit import RECIPES_DIR

    def eval_length(stages):
        stage = next(s for s in stages if s.name.startswith("evaluate"))
        return stage.args[stage.args.index("--max_new_tokens") + 1]

    assert eval_length(build_stages(RunnerArguments(output_dir=str(tmp_path), seeds=[0]))) == "24"
    overrides = tmp_path / "overrides.yaml"
    overrides.write_text("grpo: {max_completion_length: 16}\n")
    args = RunnerArguments(output_dir=str(tmp_path), seeds=[0], overrides=str(overrides))
    assert eval_length(build_stages(args)) == "16"
    for name in ("defaults", "hyp_a", "hyp_b", "hyp_c", "hyp_d", "hyp_o"):
        text = (RECIPES_DIR / f"{name}.yaml").read_text()
        if name == "hyp_o":
            text = text.replace("grpo:\n", "grpo:\n  max_completion_length: 40\n", 1)
        (tmp_path / f"{name}.yaml").write_text(text)
    mismatched = RunnerArguments(output_dir=str(tmp_path / "run"), seeds=[0], hypothesis_config=str(
        tmp_path / "hyp_{h}.yaml"), oracle_config=str(tmp_path / "hyp_o.yaml"))  # fmt: skip
    with pytest.raises(ValueError, match=r"different max_completion_length \[24, 40\]"):
        build_stages(mismatched)


def test_concurrent_stages_share_the_cores_and_a_last_stage_alone_gets_them_all(tmp_path, monkeypatch):
    from density_rlhf.experiment import execution, graph

    threads = {}

    def fake_run_stage(stage, launcher, log_dir, index, total, threads_for_stage=0, workers=None):
        threads[stage.name] = threads_for_stage
        return {"stage": stage.name, "seconds": 0.0}

    monkeypatch.setattr(execution, "run_stage", fake_run_stage)
    monkeypatch.setattr(execution.os, "cpu_count", lambda: 4)
    first, second = (graph.Stage(n, "train_rm.py", None, None, [], tmp_path / n) for n in ("a", "b"))
    last = graph.Stage("c", "evaluate.py", None, None, [], tmp_path / "c", [first, second])
    execution.run_all([first, second, last], "accelerate", tmp_path, max_parallel=2)
    assert threads == {"a": 2, "b": 2, "c": 4}


def test_baselines_graph_samples_each_stage_from_its_own_index(tmp_path):
    """The baselines run: kNN, cluster and topic indexes per world; the density RM without its GRPO arm; cluster and
    topic RMs; K scored by A's RM with cluster-balanced prompts; O on the topic index; every RM evaluated."""
    args = parse_args([RunnerArguments], ["--config", str(REPO / "recipes" / "run_baselines.yaml")])[0]
    args.output_dir, args.seeds = str(tmp_path), [0]
    by_name = {s.name: s for s in build_stages(args)}
    world = tmp_path / "world0"
    for kind, flags in (("", []), ("_cluster", ["--estimator", "cluster"]), ("_topic", ["--cluster_column", "topic"])):
        stage = by_name[f"build_density{kind}[world=0]"]
        assert stage.output == world / f"density{kind}" and all(f in stage.args for f in flags)

    def index(name):
        stage = by_name[name]
        return Path(stage.args[stage.args.index("--density_index_path") + 1])

    assert index("rm_A[seed=0]") == index("rm_B[seed=0]") == world / "density"
    assert index("rm_cluster[seed=0]") == world / "density_cluster" and by_name["rm_cluster[seed=0]"].arm == "cluster"
    assert index("rm_topic[seed=0]") == index("grpo_O[seed=0]") == world / "density_topic"
    assert index("grpo_K[seed=0]") == world / "density_cluster" and index("grpo_C[seed=0]") == world / "density"
    grpo_k = by_name["grpo_K[seed=0]"]
    assert grpo_k.args[grpo_k.args.index("--reward_model_path") + 1].endswith("seed0/rm_a")
    assert by_name["build_density_cluster[world=0]"] in grpo_k.deps
    assert "grpo_B[seed=0]" not in by_name and "grpo_D[seed=0]" not in by_name
    evaluate = by_name["evaluate[seed=0]"].args
    for rm in ("uniform", "density", "cluster", "topic"):
        assert any(a.startswith(f"{rm}=") for a in evaluate)
    check_stage_configs(list(by_name.values()))  # every YAML samples the way the design says
    # the default experiment builds only what it samples from: the kNN index and O's topic index
    default = [s.name for s in build_stages(RunnerArguments(output_dir=str(tmp_path), seeds=[0]))]
    assert [n for n in default if n.startswith("build_density")] == [
        "build_density[world=0]",
        "build_density_topic[world=0]",
    ]
    with pytest.raises(ValueError, match="unknown reward_baselines"):
        RunnerArguments(output_dir=str(tmp_path), reward_baselines=["knn"])


def test_baseline_rows_and_seeds_needed():
    def seed_result(shift):
        rare = lambda v: {"rare_topics": v}  # noqa: E731
        pol = lambda v: rare({"rule_satisfied": v, "tic_rate": 0.3})  # noqa: E731
        rm = lambda v: rare({"accuracy": v, "tic_effect": 0.5})  # noqa: E731
        return {
            "policies": {"SFT": pol(0.2), "O": pol(0.6), "A": pol(0.3), "C": pol(0.4 + shift), "K": pol(0.35)},
            "reward_models": {"uniform": rm(0.8), "density": rm(0.95 + shift), "cluster": rm(0.9), "topic": rm(0.97)},
            "paired_items": {"density-cluster": {"rare_topics": {"n": 10, "only_first": 4, "only_second": 1,
                                                                 "difference": 0.3, "p_value": 0.4}}},
        }  # fmt: skip

    out = aggregate({s: seed_result(d) for s, d in enumerate((0.0, 0.02, -0.01))})
    rows = {(r["comparison"], r["metric"]): r for r in out["baselines"]}
    assert set(rows) == {(c, m) for c in ("RM density-cluster", "RM density-topic", "RM cluster-uniform")
                         for m in ("accuracy", "tic_effect")} | {("C-K", "rule_satisfied"), ("C-K", "tic_rate")}  # fmt: skip
    row = rows[("RM density-cluster", "accuracy")]
    assert row["values"] == pytest.approx([0.05, 0.07, 0.04]) and row["verdict"] == "higher" and row["mde"] > 0
    assert row["mcnemar"]["only_first"] == 12 and "holm_verdict" in row["mcnemar"]
    assert rows[("C-K", "rule_satisfied")]["mean"] == pytest.approx(0.05 + 0.01 / 3)
    assert rows[("RM density-topic", "accuracy")]["verdict"] == "no detectable difference"
    # an undecided endpoint says how many seeds would decide it; a decided one does not
    endpoints = {e["difference"]: e for e in out["primary_endpoints"] if "difference" in e}
    assert endpoints["O - SFT"]["verdict"] == "supported" and endpoints["O - SFT"]["seeds_needed"] is None
    c_a = endpoints["C - A"]
    assert c_a["verdict"] == "supported"
    # sd 0.1: MDE (t_.975 + t_.8) sd / sqrt(n) is 0.208 at 4 seeds and 0.166 at 5
    assert seeds_needed([0.1, 0.3, 0.2], 0.2) == 5 and seeds_needed([0.0, 0.4, 0.2], 0.05) > 20
    assert seeds_needed([0.1, 0.1], 0.1) == 2 and seeds_needed([0.1], 0.1) is None


def test_policies_are_paired_by_prompt_and_pooled_over_seeds():
    from scipy.stats import wilcoxon

    from density_rlhf.experiment.evaluation import paired_prompts

    groups = {"all": np.arange(4), "rare_topics": np.array([2, 3])}
    c = {"rule_satisfied": np.array([0.5, 0.25, 1.0, 0.75]), "tic_rate": np.zeros(4)}
    a = {"rule_satisfied": np.array([0.25, 0.25, 0.5, 0.0]), "tic_rate": np.zeros(4)}
    out = paired_prompts(c, a, groups)
    assert out["rare_topics"]["rule_satisfied"] == [0.5, 0.75] and out["all"]["tic_rate"] == [0.0] * 4
    per_seed = {s: {"policies": {"SFT": {}}, "reward_models": {}, "paired_prompts": {"C-A": out}} for s in range(3)}
    pooled = aggregate(per_seed)["paired_prompts"]["C-A"]
    rule = pooled["all"]["rule_satisfied"]
    assert rule["n"] == 12 and rule["difference"] == pytest.approx(0.375)
    diffs = [0.25, 0.0, 0.5, 0.75] * 3
    assert rule["p_value"] == pytest.approx(wilcoxon(diffs, zero_method="wilcox").pvalue)
    assert pooled["all"]["tic_rate"]["p_value"] == 1.0 and pooled["all"]["tic_rate"]["holm_verdict"].startswith("no")


def test_forked_stages_get_their_arguments_threads_and_log_and_an_abort_takes_only_its_own_stage(tmp_path):
    """A single-process stage runs in a process forked from the stage server: it sees its own argv, environment and
    thread count, writes its own log, and a stage that aborts (SIGABRT) fails alone while its neighbour finishes."""
    from density_rlhf.experiment import execution, graph

    ok_script, abort_script = tmp_path / "ok.py", tmp_path / "boom.py"
    ok_script.write_text(
        "import os, sys, torch\n"
        "print('argv', sys.argv[1:], 'threads', torch.get_num_threads(), 'omp', os.environ['OMP_NUM_THREADS'])\n"
    )
    abort_script.write_text("import os, time\ntime.sleep(1)\nprint('about to abort', flush=True)\nos.abort()\n")
    ok = graph.Stage("ok", str(ok_script), None, None, ["--flag", "x y"], tmp_path / "ok_out")
    boom = graph.Stage("boom", str(abort_script), None, None, [], tmp_path / "boom_out")
    (tmp_path / "logs_dir").mkdir()
    with pytest.raises(execution.StageFailed) as failed:
        execution.run_all([boom, ok], "", tmp_path / "logs_dir", max_parallel=2, stage_workers=True)
    assert "stage boom failed (exit -6)" in str(failed.value) and "about to abort" in str(failed.value)
    log = (tmp_path / "logs_dir" / "ok.log").read_text()
    assert "in a forked stage process" in log.splitlines()[0]
    assert "argv ['--flag', 'x y'] threads 1 omp 1" in log
    assert json.loads((ok.output / execution.MARKER).read_text())["status"] == "done"


@pytest.mark.parametrize("value, expected", [("auto", None), (3, 3), ("2", 2), ("0", "error"), ("two", "error")])
def test_max_parallel_is_auto_or_a_positive_integer(value, expected, monkeypatch):
    from density_rlhf.experiment import graph

    monkeypatch.setattr(graph.os, "cpu_count", lambda: 16)
    if expected == "error":
        with pytest.raises(ValueError, match="max_parallel must be `auto` or an integer >= 1"):
            RunnerArguments(max_parallel=value)
    else:
        assert RunnerArguments(max_parallel=value).max_parallel == (expected or graph.auto_parallel())
    assert graph.auto_parallel(cores=16, memory_bytes=64 * 1024**3) == 16
    assert graph.auto_parallel(cores=16, memory_bytes=8 * 1024**3) == 4  # 2 GiB per stage
    assert graph.auto_parallel(cores=2, memory_bytes=1024**3) == 1
