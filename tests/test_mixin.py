"""`DensitySamplingMixin` on TRL's trainers: rows drawn through each trainer's own dataloader follow the density
weights (chi-square), resume continues the same rows, the sampler state is checkpointed and `density/*` is logged."""

import json

import numpy as np
import pytest
from datasets import load_from_disk
from scipy.stats import chisquare
from transformers import AutoTokenizer
from trl import (
    DPOConfig,
    DPOTrainer,
    GRPOConfig,
    GRPOTrainer,
    KTOConfig,
    KTOTrainer,
    RewardConfig,
    RewardTrainer,
    RLOOConfig,
    RLOOTrainer,
    SFTConfig,
    SFTTrainer,
)

from density_rlhf import (
    DensityGRPOTrainer,
    DensityIndex,
    DensityRewardTrainer,
    DensitySamplingMixin,
    density_config,
    with_density_sampling,
)


ROWS_PER_BUCKET = 16


def length_reward(prompts, completions, **kwargs):
    return [float(len(c)) for c in completions]


@pytest.fixture(scope="module")
def pipe(tiny_pipeline):
    """48 rows with distinct prompts, 16 from each density bucket, in every format the trainers take."""
    train = load_from_disk(str(tiny_pipeline / "data" / "dataset"))["train"]
    index = DensityIndex.load(tiny_pipeline / "density")
    buckets = dict(zip(index.prompt_ids, index.buckets))
    picked, seen, per_bucket = [], set(), {"rare": 0, "mid": 0, "common": 0}
    for i, pid in enumerate(train["prompt_id"]):
        bucket = buckets[pid]
        if pid not in seen and per_bucket[bucket] < ROWS_PER_BUCKET:
            picked.append(i)
            seen.add(pid)
            per_bucket[bucket] += 1
    assert sorted(per_bucket.values()) == [ROWS_PER_BUCKET] * 3
    pairs = train.select(picked).select_columns(["prompt", "chosen", "rejected", "prompt_id"])
    unpaired = pairs.map(lambda x: {"completion": x["chosen"]})
    kto = pairs.map(lambda x, i: {"completion": x["chosen"] if i % 2 else x["rejected"], "label": bool(i % 2)},
                    with_indices=True).select_columns(["prompt", "completion", "label", "prompt_id"])  # fmt: skip
    tiny = tiny_pipeline / "data" / "tiny"
    return {
        "pairs": pairs, "prompts": pairs.select_columns(["prompt", "prompt_id"]), "kto": kto,
        "sft": unpaired.select_columns(["prompt", "completion", "prompt_id"]), "policy": str(tiny / "policy"),
        "reward": str(tiny / "reward"), "index": str(tiny_pipeline / "density"),
    }  # fmt: skip


COMMON = dict(
    use_cpu=True, bf16=False, report_to=[], per_device_train_batch_size=8, max_steps=4, logging_steps=1,
    save_strategy="steps", save_steps=2, seed=0, learning_rate=1e-4, density_sampling=True,
)  # fmt: skip
ONLINE = dict(num_generations=4, max_completion_length=8)

# trainer class, config class, dataset key, model key, extra config, extra trainer arguments
TRAINERS = {
    "dpo": (DPOTrainer, DPOConfig, "pairs", "policy", {}, {}),
    "kto": (KTOTrainer, KTOConfig, "kto", "policy", {"loss_type": "apo_zero_unpaired"}, {}),  # no KL term
    "sft": (SFTTrainer, SFTConfig, "sft", "policy", {}, {}),
    "reward": (RewardTrainer, RewardConfig, "pairs", "reward", {}, {}),
    "rloo": (RLOOTrainer, RLOOConfig, "prompts", "policy", ONLINE, {"reward_funcs": length_reward}),
    "grpo": (GRPOTrainer, GRPOConfig, "prompts", "policy", ONLINE, {"reward_funcs": length_reward}),
}


def build(pipe, name, output_dir, **overrides):
    trainer_cls, config_cls, data, model, extra, kwargs = TRAINERS[name]
    args = density_config(config_cls)(
        str(output_dir), density_index_path=pipe["index"], **{**COMMON, **extra, **overrides}
    )
    tokenizer = AutoTokenizer.from_pretrained(pipe[model])
    return with_density_sampling(trainer_cls)(
        pipe[model], args=args, train_dataset=pipe[data], processing_class=tokenizer, **kwargs
    )


class Recorder:
    """Wraps the trainer's collator and records every example it is handed, as a JSON key."""

    def __init__(self, collator):
        self.collator, self.keys = collator, []

    def __call__(self, examples):
        self.keys += [json.dumps(e, sort_keys=True, default=str) for e in examples]
        return self.collator(examples)


def test_density_trainers_are_built_on_the_mixin():
    assert issubclass(DensityRewardTrainer, DensitySamplingMixin) and issubclass(DensityRewardTrainer, RewardTrainer)
    assert issubclass(DensityGRPOTrainer, DensitySamplingMixin) and issubclass(DensityGRPOTrainer, GRPOTrainer)
    dpo = with_density_sampling(DPOTrainer)
    assert dpo is with_density_sampling(DPOTrainer) and dpo.__name__ == "DensityDPOTrainer"
    assert "density-rlhf" in dpo._tag_names and dpo._density_config_class is density_config(DPOConfig)


@pytest.mark.parametrize("name", list(TRAINERS))
def test_rows_drawn_through_the_trainers_dataloader_follow_the_weights(pipe, tmp_path, name):
    trainer = build(pipe, name, tmp_path)
    trainer.data_collator = recorder = Recorder(trainer.data_collator)
    loader = trainer.get_train_dataloader()
    sampler = trainer._active_sampler
    rows = trainer._remove_unused_columns(trainer.train_dataset, description="training")
    position = {json.dumps(row, sort_keys=True, default=str): i for i, row in enumerate(rows)}
    assert len(position) == len(rows) == 3 * ROWS_PER_BUCKET
    for epoch in range(6):
        loader.set_epoch(epoch)
        for _ in loader:
            pass
    drawn = np.array([position[key] for key in recorder.keys])
    repeats = getattr(sampler, "mini_repeat_count", 1) * getattr(sampler, "repeat_count", 1)  # GRPO/RLOO groups
    buckets = sampler.row_buckets
    names = ["rare", "mid", "common"]
    counts = np.array([(buckets[drawn] == b).sum() for b in names]) / repeats
    assert counts.sum() >= 6 * 40
    expected = np.array([sampler.weights[buckets == b].sum() for b in names]) * counts.sum()
    assert chisquare(counts, expected).pvalue > 1e-3, (counts, expected)
    # The test can fail: the same draws are far from uniform.
    assert chisquare(counts, np.full(3, counts.sum() / 3)).pvalue < 1e-3, counts


@pytest.mark.parametrize("name", list(TRAINERS))
def test_resume_continues_the_same_rows_and_logs_density_metrics(pipe, tmp_path, name):
    full = build(pipe, name, tmp_path / "full")
    full.data_collator = seen = Recorder(full.data_collator)
    full.train()
    assert (tmp_path / "full" / "checkpoint-2" / "density_sampler_state.json").exists()
    logged = [entry for entry in full.state.log_history if "density/ess" in entry]
    assert len(logged) == 4 and all(0 < entry["density/ess"] < 3 * ROWS_PER_BUCKET for entry in logged)
    assert all(0 < entry["density/rare_mass"] < 1 for entry in logged)
    full.create_model_card()
    card = (tmp_path / "full" / "README.md").read_text()
    assert "## Density-aware sampling (density_rlhf)" in card and "Sampler ESS over rows" in card

    resumed = build(pipe, name, tmp_path / "full")
    resumed.data_collator = later = Recorder(resumed.data_collator)
    resumed.train(resume_from_checkpoint=str(tmp_path / "full" / "checkpoint-2"))
    # The resumed run collates what the full run collated after its first two steps (the dataloader reads one
    # batch ahead, so both recorded one batch beyond the last step).
    per_step = len(seen.keys) // 5
    assert len(later.keys) == 3 * per_step and later.keys == seen.keys[2 * per_step :]


def test_unsupported_settings_are_refused(pipe, tmp_path):
    with pytest.raises(ValueError, match="packing"):
        build(pipe, "sft", tmp_path, packing=True)
    with pytest.raises(TypeError, match=r"density_config\(DPOConfig\)"):
        plain = DPOConfig(str(tmp_path), use_cpu=True, bf16=False)
        with_density_sampling(DPOTrainer)(pipe["policy"], args=plain, train_dataset=pipe["pairs"])
    args = density_config(SFTConfig)(str(tmp_path), density_index_path=pipe["index"], **COMMON)
    text_only = pipe["sft"].map(lambda x: {"text": x["prompt"] + x["completion"]}).select_columns(["text"])
    with pytest.raises(ValueError, match="'prompt_id' column"):  # no prompt to take an id from
        with_density_sampling(SFTTrainer)(pipe["policy"], args=args, train_dataset=text_only)
    with pytest.raises(ValueError, match="implemented by DensityRewardTrainer only"):
        build(pipe, "dpo", tmp_path, record_seen_ids=True)
    with pytest.raises(ValueError, match="density_bucket_column feeds"):
        build(pipe, "kto", tmp_path, density_bucket_column="topic")
    args = density_config(DPOConfig)(str(tmp_path), density_index_path=pipe["index"], **COMMON)
    with pytest.raises(ValueError, match="map-style dataset"):
        with_density_sampling(DPOTrainer)(pipe["policy"], args=args, train_dataset=pipe["pairs"].to_iterable_dataset())


def test_without_an_id_column_the_trainer_adds_one_and_leaves_the_callers_dataset(pipe, tmp_path):
    args = density_config(DPOConfig)(str(tmp_path), density_index_path=pipe["index"], **COMMON)
    given = pipe["pairs"].remove_columns("prompt_id")
    trainer = with_density_sampling(DPOTrainer)(pipe["policy"], args=args, train_dataset=given)
    assert "prompt_id" not in given.column_names
    assert trainer.train_dataset["prompt_id"] == pipe["pairs"]["prompt_id"]


def test_with_density_off_the_trainer_is_its_base(pipe, tmp_path):
    """Density sampling off: the same losses as the plain TRL trainer."""
    ours = build(pipe, "dpo", tmp_path / "ours", density_sampling=False, save_strategy="no")
    ours.train()
    plain = {k: v for k, v in COMMON.items() if k != "density_sampling"}
    args = DPOConfig(str(tmp_path / "trl"), **{**plain, "save_strategy": "no"})
    theirs = DPOTrainer(pipe["policy"], args=args, train_dataset=pipe["pairs"],
                        processing_class=AutoTokenizer.from_pretrained(pipe["policy"]))  # fmt: skip
    theirs.train()
    losses = [[h["loss"] for h in t.state.log_history if "loss" in h] for t in (ours, theirs)]
    assert len(losses[0]) == 4 and losses[0] == losses[1]


def test_the_readme_dpo_example_runs(pipe, tmp_path, monkeypatch):
    """The README's "density sampling in your DPO project" block, run as written on the tiny policy (two CPU steps)."""
    from .conftest import REPO

    text = (REPO / "README.md").read_text()
    start = text.index("```python\n", text.index("## Quick start: density sampling in your DPO project")) + len(
        "```python\n"
    )
    code = text[start : text.index("```", start)]
    assert len(code.strip().splitlines()) <= 10
    cpu = '"dpo-density", use_cpu=True, bf16=False, max_steps=2, logging_steps=1, report_to=[], save_strategy="no",'
    monkeypatch.chdir(tmp_path)
    namespace = {"model": pipe["policy"], "dataset": pipe["pairs"].remove_columns("prompt_id")}
    exec(code.replace('"dpo-density",', cpu), namespace)
    history = namespace["trainer"].state.log_history
    assert any("density/ess" in entry for entry in history) and namespace["index"].summary()["n"] == 48


SELECTION_RULES = {
    "learnability+zero_variance_skip": {"learnability": "reward_std", "zero_variance_skip": 0.5},
    "pass_rate_band": {"pass_rate_max": 0.8, "pass_rate_min_groups": 1},
}


@pytest.mark.parametrize("rules", list(SELECTION_RULES))
@pytest.mark.parametrize("name", ["grpo", "rloo"])
def test_selection_rules_record_the_rewards_trl_computed_and_steer_the_draws(pipe, tmp_path, monkeypatch, name, rules):
    """With a selection rule, TRL's GRPO and RLOO trainers record each generation group's weighted rewards (as TRL
    computed them, gathered) against the group's row, and the sampler draws its chunks from that history."""
    trainer_cls = TRAINERS[name][0]
    seen = []
    original = trainer_cls._calculate_rewards

    def spy(self, inputs, *args):
        per_func = original(self, inputs, *args)
        seen.append(([x["density_row"] for x in inputs], per_func.clone()))
        return per_func

    monkeypatch.setattr(trainer_cls, "_calculate_rewards", spy)
    trainer = build(pipe, name, tmp_path, save_strategy="no", **SELECTION_RULES[rules])
    trainer.train()
    sampler = trainer._active_sampler
    assert sampler.rules is not None and len(seen) == trainer.state.global_step
    totals = np.zeros(sampler.history.num_rows)
    for rows, per_func in seen:
        rewards = (per_func * trainer.reward_weights.unsqueeze(0)).nansum(dim=1).numpy().reshape(-1, 4)
        np.add.at(totals, sampler.row_keys[rows[::4]], rewards.sum(axis=1))  # kept per prompt
    np.testing.assert_allclose(sampler.history.reward_sum, totals)
    logs = [h for h in trainer.state.log_history if "sampling/zero_variance_frac" in h]
    assert logs and all(h["sampling/zero_variance_frac"] == pytest.approx(h["frac_reward_zero_std"]) for h in logs)
    moved = "learnability" if "learnability" in SELECTION_RULES[rules] else "pass_rate_band"
    assert any(h[f"sampling/mass_moved/{moved}"] > 0 for h in logs)  # length rewards: every pass rate > 0.8


def test_selection_rules_are_refused_where_no_groups_are_generated(pipe, tmp_path):
    with pytest.raises(ValueError, match="generates none"):
        build(pipe, "dpo", tmp_path, zero_variance_skip=0.5)
    with pytest.raises(ValueError, match="both move the sampling weights"):
        build(pipe, "grpo", tmp_path, learnability="pass_rate", density_alpha_schedule="linear",
              density_schedule_epochs=2)  # fmt: skip


@pytest.mark.parametrize("name", ["grpo", "rloo"])
def test_a_run_with_selection_rules_resumed_mid_epoch_draws_what_the_uninterrupted_run_draws(pipe, tmp_path, name):
    rules = dict(learnability="reward_std", zero_variance_skip=0.5)
    full = build(pipe, name, tmp_path / "full", **rules)
    full.data_collator = seen = Recorder(full.data_collator)
    full.train()
    state = json.loads((tmp_path / "full" / "checkpoint-2" / "density_sampler_state.json").read_text())
    assert state["history"]["rows"] and state["drawn_chunks"]  # the history and this epoch's chunks travel
    resumed = build(pipe, name, tmp_path / "full", **rules)
    resumed.data_collator = later = Recorder(resumed.data_collator)
    resumed.train(resume_from_checkpoint=str(tmp_path / "full" / "checkpoint-2"))
    per_step = len(seen.keys) // 5
    assert len(later.keys) == 3 * per_step and later.keys == seen.keys[2 * per_step :]
    np.testing.assert_array_equal(resumed._active_sampler.history.reward_sum, full._active_sampler.history.reward_sum)


def test_selection_rules_over_uniform_weights_need_no_index_or_prompt_ids(pipe, tmp_path):
    args = density_config(GRPOConfig)(str(tmp_path), **{**COMMON, **ONLINE, "density_sampling": False,
                                                        "learnability": "reward_std", "max_steps": 2})  # fmt: skip
    data = pipe["prompts"].remove_columns("prompt_id")
    trainer = with_density_sampling(GRPOTrainer)(pipe["policy"], reward_funcs=length_reward, args=args,
                                                 train_dataset=data, processing_class=AutoTokenizer.from_pretrained(
                                                     pipe["policy"]))  # fmt: skip
    trainer.train()
    assert trainer._active_sampler.history.groups.sum() > 0 and "density_row" not in data.column_names
