import inspect
import json

import numpy as np
import pytest
import torch
from datasets import load_from_disk
from packaging.version import Version
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from density_rlhf import DensityGRPOConfig, DensityGRPOTrainer, DensitySampler
from density_rlhf.advantages import compute_advantages
from density_rlhf.experiment.world import GroundTruthReward
from density_rlhf.reward_model import RewardModelScorer


@pytest.fixture(scope="module")
def pipe(tiny_pipeline):
    data = load_from_disk(str(tiny_pipeline / "data" / "dataset"))
    tiny = tiny_pipeline / "data" / "tiny"
    return {
        "root": tiny_pipeline, "train": data["train"], "policy": str(tiny / "policy"), "rm": str(tiny / "reward"),
        "tokenizer": AutoTokenizer.from_pretrained(tiny / "policy"), "index": str(tiny_pipeline / "density"),
    }  # fmt: skip


def grpo_args(output_dir, ground_truth_reward="log", **overrides):
    """The test config; the synthetic rule checker is logged (weight 0), optimized (`reward`) or left out (`off`),
    as the experiment's `reward_weights` for `reward_funcs: [density_rlhf.experiment.world.ground_truth]` do."""
    base = dict(
        output_dir=str(output_dir), use_cpu=True, bf16=False, per_device_train_batch_size=8, num_generations=4,
        max_completion_length=12, max_steps=2, logging_steps=1, report_to=[], save_strategy="no", seed=0,
        learning_rate=1e-4,
    )  # fmt: skip
    if ground_truth_reward != "off":
        base["reward_weights"] = [1.0 if ground_truth_reward == "reward" else 0.0]
    base.update(overrides)
    return DensityGRPOConfig(**base)


def make(pipe, args, **kwargs):
    """A trainer on the tiny policy; with `reward_weights` set, the rule checker is its one user reward function."""
    kwargs.setdefault("train_dataset", pipe["train"])
    funcs = [GroundTruthReward()] if args.reward_weights is not None else None
    return DensityGRPOTrainer(pipe["policy"], funcs, args=args, processing_class=pipe["tokenizer"], **kwargs)


def test_trl_hooks_we_rely_on():
    """The advantage modes wrap these private GRPOTrainer methods; pin the TRL range they were checked against."""
    import trl
    from trl import GRPOTrainer

    assert Version("1.16") <= Version(trl.__version__) < Version("2")
    assert list(inspect.signature(GRPOTrainer._calculate_rewards).parameters) == [
        "self", "inputs", "prompts", "completions", "completion_ids_list",
    ]  # fmt: skip
    assert list(inspect.signature(GRPOTrainer._generate_and_score_completions).parameters)[:2] == ["self", "inputs"]
    assert "_get_train_sampler" in GRPOTrainer.__dict__


@pytest.mark.parametrize("mode", ["grpo", "softmax", "gaussian_quantile"])
@pytest.mark.parametrize("density", [False, True])
def test_two_step_runs(pipe, tmp_path, mode, density):
    args = grpo_args(
        tmp_path,
        advantage_mode=mode,
        density_sampling=density,
        density_index_path=pipe["index"],
        reward_model_path=pipe["rm"],
    )
    trainer = make(pipe, args)
    trainer.train()
    logs = trainer.state.log_history
    assert trainer.state.global_step == 2
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in logs if "loss" in h)
    assert ("density/ess" in logs[0]) is density


def test_per_step_statistics_are_logged(pipe, tmp_path):
    trainer = make(
        pipe, grpo_args(tmp_path, density_index_path=pipe["index"], reward_model_path=pipe["rm"], max_steps=3)
    )
    trainer.train()
    keys = set().union(*(h.keys() for h in trainer.state.log_history))
    for key in (
        "advantages/max_weight", "advantages/weight_entropy", "advantages/effective_n", "reward/group_std",
        "frac_reward_zero_std", "grad_norm", "rewards/reward_model/mean", "rewards/ground_truth/mean",
        "density/rare_frac",
    ):  # fmt: skip
        assert key in keys, key
    # per bucket: every reward function (the rule checker too, weight 0) and the weighted sum
    assert any(k.startswith("density/") and k.endswith("/rewards/ground_truth") for k in keys)
    assert any(k.startswith("density/") and k.endswith("/rewards/reward_model") for k in keys)
    assert any(k.startswith("density/") and k.endswith("/reward") for k in keys)
    # The ground truth is logged with weight 0: the optimized reward is the reward model's alone.
    first = trainer.state.log_history[0]
    assert first["reward"] == pytest.approx(first["rewards/reward_model/mean"], abs=1e-4)


def test_sampler_contract(pipe, tmp_path):
    args = grpo_args(
        tmp_path,
        density_sampling=True,
        density_index_path=pipe["index"],
        reward_model_path=pipe["rm"],
        per_device_train_batch_size=8,
        steps_per_generation=2,
    )
    samplers = [make(pipe, args)._get_train_sampler() for _ in range(2)]  # two "ranks": same seed, same sampler
    sequences = [list(s) for s in samplers]
    assert sequences[0] == sequences[1]
    seq = sequences[0]
    groups = [seq[i : i + 4] for i in range(0, 64, 4)]
    assert all(len(set(g)) == 1 for g in groups)  # each prompt num_generations times in a row
    # generation_batch_size 16 -> 4 unique prompts per chunk, repeated num_iterations * steps_per_generation = 2 times
    assert seq[:16] == seq[16:32]


def test_density_sampler_copies_trl_repeat_structure_and_validates_user_samplers(pipe, tmp_path):
    from trl.trainer.utils import RepeatSampler

    from density_rlhf import DensityRepeatSampler

    common = dict(density_index_path=pipe["index"], reward_model_path=pipe["rm"], steps_per_generation=2)
    trainer = make(pipe, grpo_args(tmp_path, density_sampling=True, num_iterations=3, **common))
    ours = trainer._get_train_sampler()
    theirs = RepeatSampler(pipe["train"], mini_repeat_count=4, batch_size=4, repeat_count=6, seed=0)
    assert DensityRepeatSampler.repeat_params(ours) == DensityRepeatSampler.repeat_params(theirs)
    assert (ours.mini_repeat_count, ours.batch_size, ours.repeat_count, ours.seed) == (4, 4, 6, 0)
    # data_seed takes precedence over seed, for both trainers (transformers' rule for the data order)
    assert make(pipe, grpo_args(tmp_path, density_sampling=True, data_seed=7, **common))._get_train_sampler().seed == 7
    assert make(pipe, grpo_args(tmp_path, density_sampling=True, **common))._get_train_sampler().replacement
    without = make(pipe, grpo_args(tmp_path, density_sampling=True, density_replacement=False, **common))
    assert not without._get_train_sampler().replacement

    weights = np.ones(len(pipe["train"]))
    good = DensityRepeatSampler.like(trainer._get_train_sampler(), weights)
    assert (
        make(pipe, grpo_args(tmp_path, num_iterations=3, **common), density_sampler=good)._get_train_sampler() is good
    )
    wrong = DensityRepeatSampler(weights, mini_repeat_count=2, batch_size=4, repeat_count=2)
    with pytest.raises(ValueError, match="needs .*mini_repeat_count.: 4"):
        make(pipe, grpo_args(tmp_path, **common), density_sampler=wrong)._get_train_sampler()
    with pytest.raises(ValueError, match="RepeatSampler contract"):
        make(pipe, grpo_args(tmp_path, **common), density_sampler=DensitySampler(weights))._get_train_sampler()


def _trl_whitening(rewards: torch.Tensor, num_generations: int) -> torch.Tensor:
    """TRL's GRPO advantages with `scale_rewards="group"`: (R - group mean) / (group std + 1e-4)."""
    from trl.trainer.utils import nanstd

    grouped = rewards.float().view(-1, num_generations)
    mean = torch.nanmean(grouped, dim=1, keepdim=True)
    return ((grouped - mean) / (nanstd(grouped, dim=1, keepdim=True) + 1e-4)).reshape(-1)


def test_advantage_mode_rewrites_the_advantages(pipe, tmp_path):
    batch = [pipe["train"][i] for i in range(2) for _ in range(4)]
    outputs = {}
    for mode in ("grpo", "softmax"):
        trainer = make(
            pipe,
            grpo_args(tmp_path / mode, advantage_mode=mode, reward_model_path=pipe["rm"], ground_truth_reward="off"),
        )
        torch.manual_seed(0)
        out = trainer._generate_and_score_completions(batch)
        rewards = trainer._last_rewards_per_func[:, 0]
        expected = _trl_whitening(rewards, 4) if mode == "grpo" else compute_advantages(rewards, 4, mode)
        torch.testing.assert_close(out["advantages"], expected, atol=1e-4, rtol=0)
        # the completions table shows the advantages used, one per completion of this batch
        logged = torch.tensor(list(trainer._logs["advantages"]))
        assert len(logged) == len(batch)
        torch.testing.assert_close(logged, out["advantages"].cpu(), atol=1e-6, rtol=0)
        outputs[mode] = out["advantages"]
    assert not torch.allclose(outputs["grpo"], outputs["softmax"])


def test_normalize_then_sum_is_refused_where_it_would_be_ignored(tmp_path):
    for mode in ("softmax", "gaussian_quantile"):
        with pytest.raises(
            ValueError, match="multi_objective_aggregation: sum_then_normalize, or advantage_mode: grpo"
        ):
            grpo_args(tmp_path, advantage_mode=mode, multi_objective_aggregation="normalize_then_sum")
    # TRL computes it in grpo mode, and the default aggregation goes with every mode
    assert grpo_args(tmp_path, multi_objective_aggregation="normalize_then_sum").advantage_mode == "grpo"
    assert grpo_args(tmp_path, advantage_mode="softmax").multi_objective_aggregation == "sum_then_normalize"


def test_reward_model_scores_like_reward_trainer_input(pipe):
    scorer = RewardModelScorer(pipe["rm"])
    model = AutoModelForSequenceClassification.from_pretrained(pipe["rm"]).eval()
    tok = AutoTokenizer.from_pretrained(pipe["rm"])
    prompts, completions = ["What is 2 plus 3?", "How do I cook rice for dinner?"], ["The answer is 5.", "slowly"]
    scores = scorer(prompts=prompts, completions=completions)
    for p, c, s in zip(prompts, completions, scores):
        ids = tok(p + c + tok.eos_token, return_tensors="pt")
        with torch.no_grad():
            assert model(**ids).logits[0, 0].item() == pytest.approx(s, abs=1e-5)


def test_sft_coef_changes_the_loss(pipe, tmp_path):
    def first_loss(coef):
        trainer = make(pipe, grpo_args(tmp_path / str(coef), sft_coef=coef, reward_model_path=pipe["rm"], max_steps=1))
        trainer.train()
        return trainer.state.log_history[0]

    plain, with_sft = first_loss(0.0), first_loss(0.5)
    assert "sft/nll" in with_sft and "sft/nll" not in plain
    assert with_sft["loss"] == pytest.approx(plain["loss"] + 0.5 * with_sft["sft/nll"], abs=1e-3)


def test_bad_inputs(pipe, tmp_path):
    with pytest.raises(ValueError, match="advantage_mode"):
        grpo_args(tmp_path, advantage_mode="ppo")
    # Mixin fields that only the reward-model trainer implements are refused, not silently ignored.
    with pytest.raises(ValueError, match="record_seen_ids is implemented by DensityRewardTrainer only"):
        grpo_args(tmp_path, record_seen_ids=True)
    with pytest.raises(ValueError, match="eval_group_columns is implemented by DensityRewardTrainer only"):
        grpo_args(tmp_path, eval_group_columns=["topic"])
    with pytest.raises(ValueError, match="softmax_temperature"):
        grpo_args(tmp_path, softmax_temperature=0.0)
    with pytest.raises(ValueError, match="not a model directory"):
        make(pipe, grpo_args(tmp_path, reward_model_path=str(tmp_path / "nope")))
    with pytest.raises(ValueError, match="not a reward model"):
        make(pipe, grpo_args(tmp_path, reward_model_path=pipe["policy"]))
    with pytest.raises(ValueError, match="needs a density index"):
        make(pipe, grpo_args(tmp_path, density_sampling=True, reward_model_path=pipe["rm"]))
    with pytest.raises(ValueError, match="needs a 'chosen' column"):
        make(
            pipe,
            grpo_args(tmp_path, sft_coef=0.1, reward_model_path=pipe["rm"]),
            train_dataset=pipe["train"].remove_columns("chosen"),
        )
    with pytest.raises(ValueError, match="no reward"):
        make(pipe, grpo_args(tmp_path, ground_truth_reward="off"))


def test_a_user_topic_column_is_left_alone(pipe, tmp_path):
    """The rule checker is opt-in: a user dataset whose `topic` means something else trains on its own rewards."""
    args = grpo_args(tmp_path, reward_model_path=pipe["rm"], ground_truth_reward="off", max_steps=1)
    assert "ground_truth_reward" not in DensityGRPOConfig.__dataclass_fields__  # the experiment's, not the library's
    science = pipe["train"].map(lambda x: {"topic": "science"})
    trainer = make(pipe, args, train_dataset=science)
    trainer.train()
    assert not any("ground_truth" in key for entry in trainer.state.log_history for key in entry)


def test_ground_truth_as_the_reward(pipe, tmp_path):
    trainer = make(pipe, grpo_args(tmp_path, ground_truth_reward="reward", max_steps=1))
    trainer.train()
    first = trainer.state.log_history[0]
    assert first["reward"] == pytest.approx(first["rewards/ground_truth/mean"], abs=1e-6)


def test_accelerate_launch_two_cpu_processes(pipe, tmp_path):
    from .helpers import accelerate_launch

    args = [
        "--config", "hyp_c.yaml", "--max_steps", "2", "--data_dir", str(pipe["root"] / "data"),
        "--density_index_path", pipe["index"], "--model_name_or_path", pipe["policy"], "--reward_model_path", pipe["rm"],
        "--output_dir", str(tmp_path / "run"), "--save_strategy", "no", "--report_to", "none",
        "--per_device_train_batch_size", "4", "--max_completion_length", "8",
    ]  # fmt: skip
    accelerate_launch("cpu_2proc.yaml", "train_grpo.py", args)
    assert (tmp_path / "run" / "model.safetensors").exists()
    assert "Density GRPO" in (tmp_path / "run" / "README.md").read_text()


def test_sampler_state_travels_with_grpo_checkpoints(pipe, tmp_path):
    common = dict(
        density_sampling=True, density_index_path=pipe["index"], reward_model_path=pipe["rm"], save_strategy="steps",
        save_steps=1,
    )  # fmt: skip
    make(pipe, grpo_args(tmp_path, max_steps=1, **common)).train()
    state = json.loads((tmp_path / "checkpoint-1" / "density_sampler_state.json").read_text())
    assert state["num_rows"] == len(pipe["train"]) and state["seed"] == 0
    other = make(pipe, grpo_args(tmp_path, max_steps=2, **common), train_dataset=pipe["train"].select(range(400)))
    with pytest.raises(ValueError, match="cannot resume"):
        other.train(resume_from_checkpoint=str(tmp_path / "checkpoint-1"))


@pytest.mark.parametrize("zero_stage", [3, 2])
def test_reward_model_scores_under_deepspeed_equal_single_process_scores(pipe, tmp_path, zero_stage):
    """Under ZeRO-3 the reward model is loaded partitioned (`zero3_init_flag`); the scorer must run it through a
    DeepSpeed engine, as TRL does for reward models, and score each rank's completions as one process would."""
    pytest.importorskip("deepspeed")
    from density_rlhf.reward_model import RewardModelScorer

    from .helpers import REPO, accelerate_launch

    args = [
        str(tmp_path / "scores"), "--config", "hyp_c.yaml", "--max_steps", "2", "--data_dir",
        str(pipe["root"] / "data"), "--density_index_path", pipe["index"], "--model_name_or_path", pipe["policy"],
        "--reward_model_path", pipe["rm"], "--output_dir", str(tmp_path / "run"), "--save_strategy", "no",
        "--report_to", "none", "--per_device_train_batch_size", "4", "--max_completion_length", "8",
    ]  # fmt: skip
    launch = ["--zero_stage", str(zero_stage), "--zero3_init_flag", str(zero_stage == 3).lower()]
    accelerate_launch(
        "zero3_cpu_2proc.yaml", str(REPO / "tests" / "fixtures" / "grpo_reward_dump.py"), args,
        env={"DS_ACCELERATOR": "cpu"}, launch_args=launch,
    )  # fmt: skip
    reference = RewardModelScorer(pipe["rm"])
    for rank in (0, 1):
        records = json.loads((tmp_path / f"scores_rank{rank}.json").read_text())
        assert len(records) == 2  # one scoring per generation step
        for record in records:
            assert record["zero_stage"] == zero_stage and record["model"] == "DeepSpeedEngine"
            expected = reference(prompts=record["prompts"], completions=record["completions"])
            assert record["rewards"] == pytest.approx(expected, abs=1e-4)


def test_the_index_is_reweighted_once(pipe, tmp_path, monkeypatch):
    from density_rlhf.eval_groups import BUCKET_COLUMN
    from density_rlhf.index import DensityIndex

    calls = []
    original = DensityIndex.reweighted
    monkeypatch.setattr(DensityIndex, "reweighted", lambda self, **kw: calls.append(kw) or original(self, **kw))
    args = grpo_args(tmp_path, density_index_path=pipe["index"], density_alpha=0.5, reward_model_path=pipe["rm"])
    trainer = make(pipe, args)
    assert len(calls) == 1 and trainer.density_index.metadata["alpha"] == 0.5
    assert BUCKET_COLUMN in trainer.train_dataset.column_names


@pytest.mark.parametrize(
    "rule",
    [{"zero_variance_skip": 0.5}, {"learnability": "pass_rate"}, {"pass_rate_max": 0.9, "pass_rate_min_groups": 1}],
    ids=["zero_variance_skip", "learnability", "pass_rate_band"],
)
def test_selection_rules_run_on_the_density_grpo_trainer(pipe, tmp_path, rule):
    """Each rule over density weights, with the 0/1 rule checker as the reward: the sampling metrics, per density
    bucket too, and a history of every group."""
    args = grpo_args(tmp_path, ground_truth_reward="reward", density_sampling=True, density_index_path=pipe["index"],
                     **rule)  # fmt: skip
    trainer = make(pipe, args)
    trainer.train()
    logs = [h for h in trainer.state.log_history if "sampling/zero_variance_frac" in h]
    assert len(logs) == 2 and any(k.startswith("sampling/") and k.endswith("/zero_variance_frac") and k.count("/") == 2
                                  for k in logs[0])  # fmt: skip
    history = trainer._active_sampler.history
    assert history.groups.sum() == 2 * 8 // 4  # two steps of 2 groups of 4 generations
