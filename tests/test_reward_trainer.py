import copy
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from datasets import load_from_disk
from transformers import AutoTokenizer
from trl import RewardConfig, RewardTrainer

from density_rlhf import DensityIndex, DensityRewardConfig, DensityRewardTrainer, DensitySampler


def rm_args(output_dir, cls=DensityRewardConfig, **overrides):
    base = dict(
        output_dir=str(output_dir), use_cpu=True, bf16=False, gradient_checkpointing=False,
        per_device_train_batch_size=8, per_device_eval_batch_size=64, learning_rate=1e-3, max_steps=6,
        logging_steps=1, report_to=[], save_strategy="no", eval_strategy="no", seed=0, max_length=128,
    )  # fmt: skip
    base.update(overrides)
    return cls(**base)


@pytest.fixture(scope="module")
def pipe(tiny_pipeline):
    data = load_from_disk(str(tiny_pipeline / "data" / "dataset"))
    model = str(tiny_pipeline / "data" / "tiny" / "reward")
    return {
        "root": tiny_pipeline, "train": data["train"], "test": data["test"], "model": model,
        "tokenizer": AutoTokenizer.from_pretrained(model), "index": str(tiny_pipeline / "density"),
    }  # fmt: skip


def losses(trainer):
    return [h["loss"] for h in trainer.state.log_history if "loss" in h]


def make(pipe, args, **kwargs):
    kwargs.setdefault("train_dataset", pipe["train"])
    return DensityRewardTrainer(pipe["model"], args, processing_class=pipe["tokenizer"], **kwargs)


def test_parity_with_reward_trainer_when_density_off(pipe, tmp_path):
    ours = make(pipe, rm_args(tmp_path / "ours", density_index_path=pipe["index"]))
    ours.train()
    theirs = RewardTrainer(
        pipe["model"], rm_args(tmp_path / "trl", cls=RewardConfig), train_dataset=pipe["train"],
        processing_class=pipe["tokenizer"],
    )  # fmt: skip
    theirs.train()
    assert len(losses(ours)) == 6
    assert losses(ours) == losses(theirs)
    # The index only added logging: the fraction of rare-bucket pairs seen.
    assert any("density/rare_frac" in h for h in ours.state.log_history)


def test_density_sampling_raises_rare_fraction_and_logs_ess(pipe, tmp_path):
    def rare_frac(sampling):
        trainer = make(
            pipe,
            rm_args(
                tmp_path / str(sampling),
                density_index_path=pipe["index"],
                density_sampling=sampling,
                max_steps=20,
                logging_steps=20,
            ),
        )
        trainer.train()
        return trainer.state.log_history[0]

    a, b = rare_frac(False), rare_frac(True)
    assert b["density/rare_frac"] > a["density/rare_frac"] + 0.1
    assert "density/ess" in b and "density/ess" not in a


def test_training_loss_goes_down(pipe, tmp_path):
    trainer = make(
        pipe,
        rm_args(tmp_path, max_steps=60, logging_steps=1, density_index_path=pipe["index"], density_sampling=True),
    )
    trainer.train()
    history = losses(trainer)
    first, last = history[0], np.mean(history[-20:])  # an untrained RM starts at ln 2; batches are noisy after
    assert first == pytest.approx(np.log(2), abs=0.05) and last < 0.5 * first


def test_per_bucket_eval_metrics(pipe, tmp_path):
    # One eval batch: TRL's eval_accuracy averages batch means, which equal the per-pair mean only then.
    args = rm_args(
        tmp_path, density_index_path=pipe["index"], max_steps=2, per_device_eval_batch_size=len(pipe["test"]),
        eval_group_columns=["topic", "is_rare"],
    )  # fmt: skip
    trainer = make(pipe, args, eval_dataset=pipe["test"])
    trainer.train()
    metrics = trainer.evaluate()
    for bucket in ("rare", "mid", "common"):
        assert 0.0 <= metrics[f"eval_{bucket}_accuracy"] <= 1.0
        assert metrics[f"eval_{bucket}_loss"] > 0
    assert "eval_topic/weather_accuracy" in metrics and "eval_is_rare/True_accuracy" in metrics
    # by default only the density buckets: the world's columns are the experiment's to ask for
    default = make(pipe, rm_args(tmp_path, density_index_path=pipe["index"]), eval_dataset=pipe["test"])
    assert default._group_columns == ["density_bucket"]
    # Per-bucket numbers are exact per-pair averages: weighted by counts they give back the overall accuracy.
    counts = {bucket: row for bucket, row in trainer._last_bucket_eval.items() if bucket != "all"}
    total = sum(row["count"] for row in counts.values())
    assert total == len(pipe["test"]) == trainer._last_bucket_eval["all"]["count"]
    overall = sum(row["accuracy"] * row["count"] for row in counts.values()) / total
    assert overall == pytest.approx(metrics["eval_accuracy"], abs=1e-6)
    assert overall == pytest.approx(metrics["eval_all_accuracy"], abs=1e-6)
    assert any("eval_rare_accuracy" in h for h in trainer.state.log_history)


def test_resume_reproduces_an_uninterrupted_run(pipe, tmp_path):
    common = dict(
        density_index_path=pipe["index"],
        density_sampling=True,
        save_strategy="steps",
        save_steps=2,
        record_seen_ids=True,
    )
    full = make(pipe, rm_args(tmp_path, **common))
    full.train()
    full_ids = json.loads((tmp_path / "seen_ids_rank0.json").read_text())
    assert (tmp_path / "checkpoint-4" / "density_sampler_state.json").exists()
    resumed = make(pipe, rm_args(tmp_path, **common))
    resumed.train(resume_from_checkpoint=str(tmp_path / "checkpoint-4"))
    assert losses(resumed)[-2:] == pytest.approx(losses(full)[-2:], abs=1e-6)
    # the resumed run continues the ids its checkpoint recorded: the file holds the whole run, as the full run's does
    assert json.loads((tmp_path / "seen_ids_rank0.json").read_text()) == full_ids


def test_checkpoint_from_another_dataset_is_refused(pipe, tmp_path):
    common = dict(
        density_index_path=pipe["index"], density_sampling=True, save_strategy="steps", save_steps=2, max_steps=2
    )
    make(pipe, rm_args(tmp_path, **common)).train()
    smaller = make(
        pipe, rm_args(tmp_path, **{**common, "max_steps": 4}), train_dataset=pipe["train"].select(range(500))
    )
    with pytest.raises(ValueError, match="cannot resume .* changed since the checkpoint"):
        smaller.train(resume_from_checkpoint=str(tmp_path / "checkpoint-2"))


def test_user_sampler_plugs_in(pipe, tmp_path):
    weights = np.zeros(len(pipe["train"]))
    weights[:3] = 1.0  # only the first three rows may be drawn
    trainer = make(pipe, rm_args(tmp_path, max_steps=2, record_seen_ids=True), density_sampler=DensitySampler(weights))
    trainer.train()
    seen = set(json.loads((tmp_path / "seen_ids_rank0.json").read_text()))
    assert seen <= set(pipe["train"]["id"][:3])


def test_bad_inputs_fail_before_training(pipe, tmp_path):
    with pytest.raises(ValueError, match="density_sampling=True needs a density index"):
        make(pipe, rm_args(tmp_path, density_sampling=True))
    with pytest.raises(ValueError, match="no 'prompt_id' column"):
        make(
            pipe,
            rm_args(tmp_path, density_index_path=pipe["index"]),
            train_dataset=pipe["train"].remove_columns(["prompt_id", "prompt"]),  # implicit prompts: no id to take
        )
    other = pipe["train"].map(lambda x: {"prompt_id": "0" * 16 if x["topic"] == "law" else x["prompt_id"]})
    with pytest.raises(ValueError, match=r"rows have a prompt id missing from the density index"):  # at once
        make(pipe, rm_args(tmp_path, density_index_path=pipe["index"], density_sampling=True), train_dataset=other)
    lenient = make(
        pipe,
        rm_args(
            tmp_path, density_index_path=pipe["index"], density_sampling=True, density_missing="uniform", max_steps=1
        ),
        train_dataset=other,
    )
    lenient.train()
    assert lenient._active_sampler.num_missing == sum(t == "law" for t in pipe["train"]["topic"])
    with pytest.raises(ValueError, match="density_pair_weighting"):
        rm_args(tmp_path, density_pair_weighting="per_token")


def test_model_card_and_push_at_the_hub_boundary(pipe, tmp_path, monkeypatch):
    import huggingface_hub

    calls = {}

    class Repo:
        repo_id = "me/rm"

    def create_repo(self, repo_id, **kwargs):
        calls["create"] = repo_id
        return Repo()

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        calls["upload"] = (repo_id, sorted(os.listdir(folder_path)))
        calls["card"] = Path(folder_path, "README.md").read_text()
        return "commit"

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    args = rm_args(
        tmp_path,
        density_index_path=pipe["index"],
        density_sampling=True,
        max_steps=2,
        hub_model_id="me/rm",
    )
    trainer = make(pipe, args, eval_dataset=pipe["test"])
    trainer.train()
    trainer.evaluate()
    trainer.push_to_hub()
    assert calls["upload"][0] == "me/rm" and "model.safetensors" in calls["upload"][1]
    card = calls["card"]
    for needle in (
        "density-rlhf",
        "Density sampling: on (per_pair)",
        "all-MiniLM-L6-v2",
        "k = 5",
        "alpha = 1.0",
        "ESS",
        "| rare |",
        "synthetic",
    ):
        assert needle in card, needle


def test_index_mismatch_is_caught(pipe, tmp_path):
    index = DensityIndex.load(pipe["index"])
    with pytest.raises(ValueError, match="not in the index"):
        index.check_compatible(prompt_ids=["not-a-prompt"])


def _launch(pipe, tmp_path, accelerate_config, max_steps, extra_env=None, extra_args=()):
    from .helpers import accelerate_launch

    args = [
        "--config", "hyp_b.yaml", "--max_steps", str(max_steps), "--data_dir", str(pipe["root"] / "data"),
        "--density_index_path", pipe["index"], "--model_name_or_path", pipe["model"], "--output_dir", str(tmp_path),
        "--eval_strategy", "no", "--save_strategy", "no", "--per_device_train_batch_size", "4", "--report_to", "none",
        *extra_args,
    ]  # fmt: skip
    return accelerate_launch(accelerate_config, "train_rm.py", args, env=extra_env, cwd=tmp_path.parent)


def test_accelerate_launch_two_cpu_processes_see_disjoint_shards(pipe, tmp_path):
    _launch(pipe, tmp_path / "run", "cpu_2proc.yaml", 3, extra_args=("--record_seen_ids", "true"))
    ranks = [json.loads((tmp_path / "run" / f"seen_ids_rank{r}.json").read_text()) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 3 * 4
    # The same seeded draw on both ranks, sharded batch by batch: rank r trains on batches r, r+2, r+4.
    sampler = DensitySampler.from_index(DensityIndex.load(pipe["index"]), pipe["train"], seed=0)
    draw = [pipe["train"][i]["id"] for i in list(sampler)[: 6 * 4]]
    batches = [draw[i : i + 4] for i in range(0, len(draw), 4)]
    assert ranks[0] == sum(batches[0::2], []) and ranks[1] == sum(batches[1::2], [])


def test_deepspeed_zero3_two_cpu_processes(pipe, tmp_path):
    pytest.importorskip("deepspeed")
    result = _launch(pipe, tmp_path / "z3", "zero3_cpu_2proc.yaml", 2, extra_env={"DS_ACCELERATOR": "cpu"})
    state = json.loads((tmp_path / "z3" / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    assert "zero" in (result.stdout + result.stderr).lower()
    assert (tmp_path / "z3" / "model.safetensors").exists()


def test_missing_data_and_index_are_built_on_first_run(tmp_path, monkeypatch, pipe):
    """A fresh clone: no outputs/ at all; train_rm.py builds the synthetic data and the index, then trains."""
    from .helpers import load_recipe

    train_rm = load_recipe("train_rm")
    monkeypatch.chdir(tmp_path)
    shutil.copytree(pipe["root"] / "data" / "tiny", tmp_path / "tiny")
    args = train_rm.parse_args(
        [train_rm.DensityScriptArguments, DensityRewardConfig, train_rm.ModelConfig],
        ["--config", "hyp_b.yaml", "--max_steps", "1", "--eval_strategy", "no", "--save_strategy", "no",
         "--model_name_or_path", str(tmp_path / "tiny" / "reward"), "--report_to", "none"],
        section="reward",
    )  # fmt: skip
    train_rm.main(*args)
    assert (tmp_path / "outputs" / "data" / "dataset").exists()
    assert (tmp_path / "outputs" / "density" / "metadata.json").exists()
    assert (tmp_path / "outputs" / "hyp_b" / "rm" / "model.safetensors").exists()


def test_default_hypotheses_a_and_b_learn_common_topics(tmp_path, monkeypatch):
    """The README's comparison means something only if both default reward models learn the common topics."""
    from density_rlhf.experiment.world import TOPICS

    from .helpers import load_recipe

    train_rm = load_recipe("train_rm")
    monkeypatch.chdir(tmp_path)
    common = [t.name for t in TOPICS[:4]]
    for hypothesis in ("a", "b"):
        args = train_rm.parse_args(
            [train_rm.DensityScriptArguments, DensityRewardConfig, train_rm.ModelConfig],
            ["--config", f"hyp_{hypothesis}.yaml", "--report_to", "none", "--save_strategy", "no"],
            section="reward",
        )
        metrics = train_rm.main(*args)
        accuracy = [metrics[f"eval_topic/{t}_accuracy"] for t in common]
        assert min(accuracy) >= 0.9, (hypothesis, accuracy)
        assert metrics["eval_is_rare/True_accuracy"] > 0.5  # reported in the README, not a claim of this test


def test_training_batches_carry_only_the_bucket_label(pipe, tmp_path):
    trainer = make(
        pipe,
        rm_args(tmp_path, density_index_path=pipe["index"], eval_group_columns=["topic", "is_rare"]),
        eval_dataset=pipe["test"],
    )
    train_batch = next(iter(trainer.get_train_dataloader()))
    eval_batch = next(iter(trainer.get_eval_dataloader()))
    assert {k for k in train_batch if k.startswith("group::")} == {"group::density_bucket"}
    assert {"group::density_bucket", "group::topic", "group::is_rare"} <= set(eval_batch)


def test_encoder_reward_model_without_eos_token_trains_and_scores(pipe, tmp_path):
    """BERT-style tokenizers (the offline MiniLM) have no EOS token; texts end with their SEP token instead."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from density_rlhf.embedding import resolve_embedder
    from density_rlhf.reward_model import RewardModelScorer

    path = resolve_embedder(None)
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert tokenizer.eos_token is None and tokenizer.sep_token == "[SEP]"
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
    args = rm_args(tmp_path, max_steps=8, learning_rate=1e-4)
    trainer = DensityRewardTrainer(model, args, train_dataset=pipe["train"], processing_class=tokenizer)
    assert trainer.args.eos_token == "[SEP]" and args.eos_token is None  # the caller's config is left alone
    trainer.train()
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert len(losses) == 8 and all(np.isfinite(losses))
    trainer.save_model(str(tmp_path / "rm"))
    scorer = RewardModelScorer(str(tmp_path / "rm"))
    ids = scorer._ids("Is it sunny?", " Yes.")
    assert ids[-1] == tokenizer.sep_token_id and ids.count(tokenizer.sep_token_id) >= 1
    scores = scorer(prompts=["Is it sunny?", "Is it sunny?"], completions=[" Yes.", " No."])
    assert len(scores) == 2 and all(np.isfinite(scores))


def test_tokenizer_without_eos_or_sep_is_refused(pipe, tmp_path):
    tokenizer = copy.deepcopy(pipe["tokenizer"])
    tokenizer.eos_token = None
    with pytest.raises(ValueError, match="neither an EOS nor a SEP token"):
        DensityRewardTrainer(pipe["model"], rm_args(tmp_path), train_dataset=pipe["train"], processing_class=tokenizer)


def test_the_index_is_reweighted_once_and_the_buckets_added_by_the_hook(pipe, tmp_path, monkeypatch):
    """The mixin prepares the trainer's own copy of the index once; the reward trainer's dataset hook then adds the
    bucket column to both splits from that copy."""
    from density_rlhf.eval_groups import BUCKET_COLUMN
    from density_rlhf.index import DensityIndex

    calls = []
    original = DensityIndex.reweighted
    monkeypatch.setattr(DensityIndex, "reweighted", lambda self, **kw: calls.append(kw) or original(self, **kw))
    args = rm_args(tmp_path, density_index_path=pipe["index"], density_sampling=True, density_alpha=0.5)
    trainer = make(pipe, args, eval_dataset=pipe["test"])
    assert len(calls) == 1 and calls[0]["alpha"] == 0.5 and trainer.density_index.metadata["alpha"] == 0.5
    assert BUCKET_COLUMN in trainer.train_dataset.column_names and BUCKET_COLUMN in trainer.eval_dataset.column_names
    assert BUCKET_COLUMN not in pipe["train"].column_names  # the caller's dataset is left as it was
    assert trainer._group_columns[0] == BUCKET_COLUMN


def test_per_pair_eval_loss_is_trls_loss_with_margin_and_centering(pipe, tmp_path):
    """With TRL's `margin` column and `center_rewards_coefficient`, `eval_all_loss` (a per-pair mean) equals TRL's
    `eval_loss` on one eval batch; without the two terms it would not."""
    test = pipe["test"].map(lambda x, i: {"margin": 0.5 * (i % 3)}, with_indices=True)
    args = rm_args(tmp_path, density_index_path=pipe["index"], max_steps=2, per_device_eval_batch_size=len(test),
                   center_rewards_coefficient=0.3)  # fmt: skip
    trainer = make(pipe, args, eval_dataset=test)
    trainer.train()
    with_terms = trainer.evaluate()
    args.center_rewards_coefficient = None  # TRL's loss reads it at each step, so does the per-pair one
    margin_only = trainer.evaluate()
    for metrics in (with_terms, margin_only):
        assert metrics["eval_all_loss"] == pytest.approx(metrics["eval_loss"], rel=1e-5)
    assert with_terms["eval_all_loss"] != pytest.approx(margin_only["eval_all_loss"], rel=1e-3)


def test_loss_weighting_is_resampling_in_expectation(pipe, tmp_path):
    """`density_weighting: loss` on a batch of all training rows equals sum_i p_i loss_i: the expected TRL loss (so,
    by linearity, the expected gradient) of a pair drawn by the sample mode's sampler, with p_i that sampler's
    weights and loss_i TRL's own `RewardTrainer.compute_loss` on row i alone. Rows are drawn by TRL's sampler."""
    import torch

    train = pipe["train"].select(range(24))
    common = dict(density_index_path=pipe["index"], density_sampling=True, per_device_train_batch_size=24,
                  record_seen_ids=True, max_steps=1)  # fmt: skip
    sampled = make(pipe, rm_args(tmp_path / "s", **common), train_dataset=train)
    weighted = make(pipe, rm_args(tmp_path / "l", density_weighting="loss", **common), train_dataset=train)
    assert isinstance(sampled._get_train_sampler(), DensitySampler)
    assert not isinstance(weighted._get_train_sampler(), DensitySampler)
    p = dict(zip(sampled.train_dataset["id"], sampled._get_train_sampler().weights))
    assert len(set(p.values())) > 1  # the weights differ, so the test can fail
    model = weighted.model
    for module in model.modules():  # deterministic forward in training mode
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    model.train()
    rows = list(weighted.train_dataset)
    batch = weighted.data_collator(rows)
    assert batch.pop("row_ids") == [row["id"] for row in rows]
    loss = weighted.compute_loss(model, dict(batch))
    expected = 0.0
    for row in rows:
        single = weighted.data_collator([row])
        single.pop("row_ids"), single.pop("density_loss_weight")
        expected += p[row["id"]] * RewardTrainer.compute_loss(weighted, model, single).item()
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    weighted.train()
    assert np.isfinite(losses(weighted)).all()


def test_loss_weighting_is_refused_where_it_cannot_act(pipe, tmp_path):
    from trl import DPOConfig, DPOTrainer

    from density_rlhf import density_config, with_density_sampling

    with pytest.raises(ValueError, match="density_weighting must be one of"):
        rm_args(tmp_path, density_weighting="both")
    with pytest.raises(ValueError, match="needs density_sampling: true"):
        rm_args(tmp_path, density_weighting="loss")
    with pytest.raises(ValueError, match="constant schedule"):
        rm_args(tmp_path, density_weighting="loss", density_sampling=True, density_alpha_schedule="linear",
                density_schedule_epochs=2)  # fmt: skip
    args = density_config(DPOConfig)(str(tmp_path / "dpo"), use_cpu=True, bf16=False, density_sampling=True,
                                     density_weighting="loss", density_index_path=pipe["index"])  # fmt: skip
    with pytest.raises(ValueError, match="density_weighting: loss needs a per-row loss"):
        with_density_sampling(DPOTrainer)(pipe["model"], args=args, train_dataset=pipe["train"])
    with pytest.raises(ValueError, match="pass one or the other"):
        sampler = DensitySampler(np.ones(len(pipe["train"])))
        make(pipe, rm_args(tmp_path, density_sampling=True, density_weighting="loss", density_index_path=pipe["index"]),
             density_sampler=sampler)  # fmt: skip
