import json
import math

import pytest

from density_rlhf.index import BUCKETS
from density_rlhf.runner import (
    KEY_METRICS,
    RunnerArguments,
    StageFailed,
    aggregate,
    build_stages,
    mean_ci,
    run,
    verdict,
)


SMOKE = dict(
    seeds=[0], n_train_pairs=600, sft_max_steps=10, rm_max_steps=10, grpo_max_steps=2, eval_num_samples=2,
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
    for policy in ("SFT", "A", "B", "C", "D"):
        for bucket in (*BUCKETS, "all"):
            metrics = saved["policies"][policy][bucket]
            for metric in ("rule_satisfied", "reward/uniform", "reward/density", "within/distinct_2",
                           "across/embedding_diversity", "across/self_bleu", "em_dash_rate"):  # fmt: skip
                assert metric in metrics, (policy, bucket, metric)
                assert not math.isnan(metrics[metric]["mean"])
    for rm in ("uniform", "density"):
        assert {"rare", "mid", "common", "all", "rare_topics"} <= set(saved["reward_models"][rm])
    for comparison in ("B-A", "C-A", "D-A"):
        assert set(saved["comparisons"][comparison]) == {*BUCKETS, "all"}
    for plot in ("weights_by_bucket", "rm_accuracy", "policy_by_bucket", "diversity", "training_curves"):
        path = root / f"{plot}.png"
        assert path.exists() and path.read_bytes()[:4] == b"\x89PNG"
    report = (root / "report.md").read_text()
    assert "no detectable difference" in report and "The seeds' predictions" in report


def test_runner_resume_skips_completed_stages(smoke_run, capsys):
    root, _ = smoke_run
    results = run(RunnerArguments(output_dir=str(root), **SMOKE))
    assert all(stage["skipped"] for stage in results["stages"])
    assert "up to date, skipped" in capsys.readouterr().out
    # Changing one stage's configuration re-runs it and what depends on it, nothing upstream.
    changed = run(RunnerArguments(output_dir=str(root), **{**SMOKE, "grpo_max_steps": 1}))
    ran = {s["stage"] for s in changed["stages"] if not s["skipped"]}
    assert ran == {"grpo_A[seed=0]", "grpo_B[seed=0]", "grpo_C[seed=0]", "grpo_D[seed=0]", "evaluate[seed=0]"}
    # The changed stages started from scratch (stale checkpoints removed), not from the old run's last checkpoint.
    state = json.loads((root / "seed0" / "grpo_a" / "trainer_state.json").read_text())
    assert state["global_step"] == 1 and state["max_steps"] == 1


def test_failing_stage_names_itself_and_its_log(smoke_run, tmp_path):
    root, _ = smoke_run
    bad = tmp_path / "sft_bad.yaml"
    bad.write_text("learning_rate: not-a-number\n")
    with pytest.raises(StageFailed, match=r"stage sft\[seed=0\] failed .*log: .*sft_seed0\.log"):
        run(RunnerArguments(output_dir=str(root), sft_config=str(bad), **SMOKE))
    assert (root / "data" / "dataset").exists()  # earlier outputs are kept


def test_scale_config_without_gpu_is_refused_up_front(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("only meaningful without a GPU")
    args = RunnerArguments(
        output_dir=str(tmp_path), sft_config="scale/sft.yaml", hypothesis_config="scale/hyp_{h}.yaml", **SMOKE
    )
    with pytest.raises(SystemExit, match="GPU recipe"):
        run(args)
    assert not (tmp_path / "data").exists()  # nothing ran


def test_stage_graph_and_reward_model_reuse(tmp_path):
    stages = build_stages(RunnerArguments(output_dir=str(tmp_path), seeds=[0, 1]))
    names = [s.name for s in stages]
    assert names[:2] == ["prepare_data", "build_density"]
    assert names.count("rm_A[seed=1]") == 1 and "rm_C[seed=0]" not in names  # C and D reuse A's and B's RMs
    trained = [s for s in stages if s.launched]
    assert all(s.args[s.args.index("--report_to") + 1] == "tensorboard" for s in trained)  # TensorBoard by default
    grpo_c = next(s for s in stages if s.name == "grpo_C[seed=0]")
    assert grpo_c.args[grpo_c.args.index("--reward_model_path") + 1].endswith("seed0/rm_a")


def test_statistics():
    stat = mean_ci([1.0, 2.0, 3.0])
    assert stat["mean"] == pytest.approx(2.0)
    assert stat["ci_low"] == pytest.approx(2.0 - 4.302653 * 1.0 / math.sqrt(3), abs=1e-4)
    assert verdict({**mean_ci([0.5, 0.6, 0.7])}) == "higher"
    assert verdict({**mean_ci([-0.1, 0.1, 0.05])}) == "no detectable difference"
    assert verdict(mean_ci([0.3])).startswith("no detectable difference (1 seed")


def test_aggregate_pairs_differences_by_seed():
    def seed_result(a, b):
        pol = {b_: {"rule_satisfied": v} for b_, v in (("rare", a), ("all", a))}
        pol_b = {b_: {"rule_satisfied": v} for b_, v in (("rare", b), ("all", b))}
        return {"policies": {"SFT": pol, "A": pol, "B": pol_b}, "reward_models": {}}

    out = aggregate({0: seed_result(0.2, 0.5), 1: seed_result(0.4, 0.6), 2: seed_result(0.1, 0.45)}, ["A", "B"])
    diff = out["comparisons"]["B-A"]["rare"]["rule_satisfied"]
    assert diff["values"] == pytest.approx([0.3, 0.2, 0.35]) and diff["verdict"] == "higher"
    assert set(out["comparisons"]["B-A"]["rare"]) <= set(KEY_METRICS)


def test_stage_hash_follows_the_config_content(tmp_path, monkeypatch):
    import shutil

    from .conftest import REPO

    for name in ("hyp_a.yaml", "sft.yaml"):
        shutil.copy(REPO / "recipes" / name, tmp_path / name)
    args = RunnerArguments(output_dir=str(tmp_path / "out"), hypotheses=["A"], sft_config=str(tmp_path / "sft.yaml"),
                           hypothesis_config=str(tmp_path / "hyp_{h}.yaml"))  # fmt: skip
    before = {s.name: s.hash for s in build_stages(args)}
    text = (tmp_path / "hyp_a.yaml").read_text().replace("max_steps: 200", "max_steps: 201")
    (tmp_path / "hyp_a.yaml").write_text(text)
    after = {s.name: s.hash for s in build_stages(args)}
    changed = {name for name in before if before[name] != after[name]}
    assert changed == {"grpo_A[seed=0]", "evaluate[seed=0]"}
