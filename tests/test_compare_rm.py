"""`density-rlhf compare-rm`: prompt-disjoint folds that hold every pair out once, the comparison end to end on the
HH-RLHF sample, and its resume per (weighting, fold, seed)."""

import gzip
import json

import numpy as np
import pytest

from density_rlhf import DensityRewardConfig
from density_rlhf.experiment import compare_rm
from density_rlhf.experiment.compare_rm import (
    CompareRMArguments,
    assign_folds,
    compare,
    fold_rows,
    load_comparison_pairs,
    validation_rows,
)


def _local_pairs(path, prompts=30, per_prompt=3):
    with gzip.open(path, "wt") as f:
        for p in range(prompts):
            for j in range(per_prompt):
                f.write(json.dumps({"prompt": f"question number {p} about topic {p % 4}",
                                    "chosen": f"good answer {j}", "rejected": f"bad answer {j} to {p}"}) + "\n")  # fmt: skip
    return path


def test_folds_are_prompt_disjoint_and_hold_every_pair_out_once(tmp_path):
    args = CompareRMArguments(dataset_name=str(_local_pairs(tmp_path / "pairs.jsonl.gz")), folds=4)
    pairs = load_comparison_pairs(args)
    assert len(pairs) == 90 and len(set(pairs["prompt_id"])) == 30
    folds = assign_folds(pairs["prompt_id"], 4)
    validation = validation_rows(pairs["prompt_id"], 0.2)
    held_out = []
    for fold in range(4):
        train, val, held = fold_rows(folds, validation, fold)
        ids = {part: {pairs["prompt_id"][i] for i in rows} for part, rows in (("t", train), ("v", val), ("h", held))}
        assert not (ids["t"] & ids["h"]) and not (ids["v"] & ids["h"]) and not (ids["t"] & ids["v"])
        assert len(train) + len(val) + len(held) == len(pairs)
        held_out.extend(held.tolist())
    assert sorted(held_out) == list(range(len(pairs)))  # every pair held out exactly once
    assert len(set(folds.tolist())) == 4  # no empty fold at this size


@pytest.mark.parametrize(
    "kwargs, message",
    [({"folds": 1}, "folds must be >= 2"), ({"weightings": ["density", "knn"]}, "unknown weightings"),
     ({"budget": "forever"}, "budget must be one of"), ({"seeds": []}, "seeds must be distinct"),
     ({"dataset_format": "csv"}, "dataset_format must be one of")],
)  # fmt: skip
def test_bad_comparison_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CompareRMArguments(dataset_name="x.jsonl", **kwargs)


def test_compare_rm_end_to_end_on_the_hh_sample_and_resume(hh_sample, tiny_pipeline, tmp_path, monkeypatch):
    args = CompareRMArguments(dataset_name=str(hh_sample), folds=2, seeds=[0], weightings=["density_loss"],
                              model_name_or_path=str(tiny_pipeline / "data" / "tiny" / "reward"))  # fmt: skip
    assert args.weightings == ["uniform", "density_loss"]  # uniform is always the comparison
    training = DensityRewardConfig(
        str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=8, per_device_eval_batch_size=64,
        max_length=256, use_cpu=True, bf16=False, gradient_checkpointing=False, report_to=[], logging_steps=1,
    )  # fmt: skip
    summary = compare(args, training)
    pairs = load_comparison_pairs(args)
    for name in args.weightings:
        runs = [json.loads((tmp_path / "out" / "runs" / "fixed" / name / f"fold{f}_seed0.json").read_text())
                for f in range(2)]  # fmt: skip
        scored = [pid for run in runs for pid in run["pairs"]]
        assert len(scored) == len(set(scored)) and set(scored) <= set(pairs["id"])  # each pair scored once at most
        assert sum(run["heldout_pairs"] for run in runs) == len(pairs)  # ... and every pair held out
        assert len(scored) > 0.5 * len(pairs)  # TRL drops only the pairs longer than max_length
    table = summary["table"]
    assert table["density_loss"]["all"]["difference"]["primary"] is False
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| density_loss | rare |" in report and (tmp_path / "out" / "differences.png").exists()

    def no_training(*_args, **_kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(compare_rm, "train_one", no_training)
    resumed = compare(args, training)["table"]  # from the saved runs
    assert json.dumps(resumed, sort_keys=True) == json.dumps(table, sort_keys=True)
    broken = tmp_path / "out" / "runs" / "fixed" / "uniform" / "fold1_seed0.json"
    broken.write_text(broken.read_text().replace('"steps": 2', '"steps": 3'))
    with pytest.raises(AssertionError, match="trained again"):  # a run whose checksum fails is run again
        compare(args, training)
    assert np.isfinite(table["uniform"]["all"]["accuracy"]["mean"])


def test_convergence_budget_stops_on_validation_loss_and_scores_the_held_out_pairs_once(
    hh_sample, tiny_pipeline, tmp_path, monkeypatch
):
    """The convergence budget evaluates only the validation part while training, stops early, keeps the best
    checkpoint, and scores every kept held-out pair at the end."""
    from density_rlhf.reward_trainer import DensityRewardTrainer

    evaluated = []
    evaluate = DensityRewardTrainer.evaluate

    def spy(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
        evaluated.append(metric_key_prefix)
        return evaluate(self, eval_dataset, ignore_keys, metric_key_prefix)

    monkeypatch.setattr(DensityRewardTrainer, "evaluate", spy)
    args = CompareRMArguments(dataset_name=str(hh_sample), folds=2, seeds=[0], weightings=["uniform"],
                              budget="convergence", early_stopping_patience=1,
                              model_name_or_path=str(tiny_pipeline / "data" / "tiny" / "reward"))  # fmt: skip
    training = DensityRewardConfig(
        str(tmp_path / "out"), num_train_epochs=40, learning_rate=5e-3, eval_steps=2, per_device_train_batch_size=16,
        per_device_eval_batch_size=64, max_length=256, use_cpu=True, bf16=False, gradient_checkpointing=False,
        report_to=[],
    )  # fmt: skip
    compare(args, training)
    runs = [json.loads((tmp_path / "out" / "runs" / "convergence" / "uniform" / f"fold{f}_seed0.json").read_text())
            for f in range(2)]  # fmt: skip
    steps_per_epoch = [-(-run["train_pairs"] // 16) for run in runs]
    for run, per_epoch in zip(runs, steps_per_epoch):
        assert run["best_step"] % 2 == 0 and run["best_step"] < run["steps"] < 40 * per_epoch  # stopped early
        assert len(run["pairs"]) > 0.5 * run["heldout_pairs"]
    assert "mean best step / steps run: uniform" in (tmp_path / "out" / "report.md").read_text()
    assert "eval_validation" in evaluated and "eval_heldout" not in evaluated  # held-out pairs: only scored at the end
