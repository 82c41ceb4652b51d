"""Adaptive density: alpha schedules, the per-epoch draw, the training-signal hook and exact resume."""

import numpy as np
import pytest
from scipy.stats import chisquare

from density_rlhf import DensityRepeatSampler, DensitySampler
from density_rlhf.estimators import density_weights
from density_rlhf.schedule import AlphaSchedule, ScheduledWeights


LOG_P = np.log(np.array([8.0, 4.0, 2.0, 1.0, 0.5]))  # five prompts, densities 8 ... 0.5
ROWS = np.array([0, 0, 1, 2, 3, 4, 4, 4])  # rows -> prompt; prompt 4 has three pairs


def scheduled(kind="linear", a0=0.0, a1=1.0, epochs=3, **kwargs):
    return ScheduledWeights(LOG_P, ROWS, AlphaSchedule(kind, a0, a1, epochs), **kwargs)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [("constant", [0.0, 0.0, 0.0, 0.0]), ("linear", [0.0, 0.5, 1.0, 1.0]), ("cosine", [0.0, 0.5, 1.0, 1.0])],
)
def test_alpha_schedules(kind, expected):
    schedule = AlphaSchedule(kind, 0.0, 1.0, num_epochs=3)
    assert [schedule(e) for e in range(4)] == pytest.approx(expected)
    assert AlphaSchedule("cosine", 0.0, 1.0, 5)(1) == pytest.approx((1 - np.cos(np.pi / 4)) / 2)  # eases in


@pytest.mark.parametrize("bad", [dict(kind="step"), dict(alpha0=-1.0), dict(alpha1=float("nan")), dict(num_epochs=0)])
def test_bad_schedules_are_refused(bad):
    with pytest.raises(ValueError):
        AlphaSchedule(**{"kind": "linear", **bad})


def test_each_epochs_draw_follows_the_weights_at_that_epochs_alpha():
    sampler = DensitySampler(scheduled(), num_samples=40_000, seed=3)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        alpha = sampler.scheduled.schedule(epoch)
        prompt_w = density_weights(LOG_P, alpha)
        expected = prompt_w[ROWS] / prompt_w[ROWS].sum()  # per_pair: each pair its prompt's weight
        np.testing.assert_allclose(sampler.weights, expected)
        counts = np.bincount(list(sampler), minlength=len(ROWS))
        assert chisquare(counts, expected * counts.sum()).pvalue > 1e-3, (epoch, counts)
    assert sampler.summary()["alpha"] == 1.0
    assert sampler.weights[-1] / sampler.weights[0] == pytest.approx(16.0)  # density 8 vs 0.5 at alpha 1


def test_clipping_and_mixing_apply_at_every_epoch():
    weights = scheduled(max_weight_ratio=4.0, uniform_mix=0.5)
    for epoch in range(3):
        prompt_w = density_weights(LOG_P, weights.schedule(epoch), max_weight_ratio=4.0, uniform_mix=0.5)
        np.testing.assert_allclose(weights.weights(epoch), prompt_w[ROWS] / prompt_w[ROWS].sum())


def test_update_reweights_from_the_next_epoch_and_checks_its_input():
    sampler = DensitySampler(scheduled("constant", 1.0), seed=0)
    before = sampler.weights.copy()
    sampler.update([0, 1], [0.0, 0.0])  # e.g. prompts whose reward variance is 0 teach nothing
    np.testing.assert_allclose(sampler.weights, before)  # this epoch's draw is already fixed
    sampler.set_epoch(1)
    assert sampler.weights[:2].tolist() == [0.0, 0.0]
    np.testing.assert_allclose(sampler.weights[2:], before[2:] / before[2:].sum())
    for rows, values in (([9], [1.0]), ([0], [-1.0]), ([0], [np.nan]), ([0, 1], [1.0])):
        with pytest.raises(ValueError):
            sampler.update(rows, values)
    with pytest.raises(ValueError, match="ScheduledWeights"):
        DensitySampler(np.ones(3)).update([0], [2.0])


@pytest.mark.parametrize("cls", [DensitySampler, DensityRepeatSampler])
def test_resume_across_a_schedule_boundary_is_exact(cls):
    kwargs = dict(mini_repeat_count=2, batch_size=2, repeat_count=1) if cls is DensityRepeatSampler else {}
    run = cls(scheduled(), seed=5, num_samples=8, **kwargs)
    orders = []
    for epoch in range(4):  # alpha 0, 0.5, 1, 1: epochs 1 and 2 cross the schedule
        run.set_epoch(epoch)
        if epoch == 1:
            run.update([3], [5.0])
            state = run.state_dict()
        orders.append(list(run))
    resumed = cls(scheduled(), seed=0, num_samples=8, **kwargs)
    resumed.load_state_dict(state)
    assert resumed.epoch == 1 and resumed.scheduled.signal[3] == 5.0
    assert [list(resumed) if e == 1 else (resumed.set_epoch(e), list(resumed))[1] for e in (1, 2, 3)] == orders[1:]
    with pytest.raises(ValueError, match="schedule changed"):
        cls(scheduled(a1=2.0), seed=0, num_samples=8, **kwargs).load_state_dict(state)


def test_reward_trainer_follows_the_schedule_and_logs_alpha(tiny_pipeline, tmp_path):
    from datasets import load_from_disk
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from density_rlhf import DensityIndex, DensityRewardConfig, DensityRewardTrainer

    train = load_from_disk(str(tiny_pipeline / "data" / "dataset"))["train"]
    index = DensityIndex.load(str(tiny_pipeline / "density"))
    tiny = tiny_pipeline / "data" / "tiny" / "reward"
    args = DensityRewardConfig(
        output_dir=str(tmp_path), use_cpu=True, bf16=False, per_device_train_batch_size=8, max_steps=3,
        logging_steps=1, report_to=[], save_strategy="no", max_length=64, density_sampling=True,
        density_index_path=str(tiny_pipeline / "density"), density_alpha_schedule="linear", density_schedule_epochs=2,
    )  # fmt: skip
    trainer = DensityRewardTrainer(
        AutoModelForSequenceClassification.from_pretrained(tiny, num_labels=1), args, train_dataset=train,
        processing_class=AutoTokenizer.from_pretrained(tiny),
    )  # fmt: skip
    sampler = trainer._get_train_sampler()
    assert sampler.scheduled.schedule(0) == 0.0 and sampler.scheduled.schedule(1) == index.metadata["alpha"]
    np.testing.assert_allclose(sampler.weights, np.full(len(train), 1 / len(train)))  # alpha 0: uniform
    sampler.set_epoch(1)
    expected = DensitySampler.from_index(index, train).weights  # the index's own weights at its alpha
    np.testing.assert_allclose(sampler.weights, expected)
    trainer.train()
    assert [e["density/alpha"] for e in trainer.state.log_history if "density/alpha" in e][0] == 0.0


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (dict(density_alpha_schedule="step"), "density_alpha_schedule must be one of"),
        (dict(density_alpha_start=0.5), "apply to a schedule"),
        (dict(density_alpha_schedule="linear", density_sampling=False), "needs density_sampling"),
    ],
)
def test_schedule_settings_that_cannot_apply_are_refused(fields, message, tmp_path):
    from density_rlhf import DensityRewardConfig

    with pytest.raises(ValueError, match=message):
        DensityRewardConfig(output_dir=str(tmp_path), use_cpu=True, **{"density_sampling": True, **fields})
