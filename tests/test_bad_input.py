"""Bad input, one case per scenario: a clear error naming what to change, or the behaviour the user asked for.

Four paths that would train on something other than what was asked, and exit 0, if unchecked: a shared index
rewritten by the next trainer, KTO's KL pairing broken by density batches, a mistyped `data_dir` replaced by the
synthetic world (and a stale index from it), a failed `reweight` leaving the index half-changed.
"""

import json
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoTokenizer
from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer

from density_rlhf import DensityIndex, DensitySampler, density_config, with_density_sampling
from density_rlhf.row_weights import map_prompt_weights

from .conftest import REPO
from .test_mixin import COMMON, build, pipe  # noqa: F401 - the fixture


def _index(n=60, seed=0) -> DensityIndex:
    rng = np.random.default_rng(seed)
    x = np.vstack([rng.normal(size=(n - 10, 8)) * 0.2, rng.normal(size=(10, 8)) * 2]).astype(np.float32)
    return DensityIndex.build(None, [f"p{i}" for i in range(n)], embeddings=x, k=5)


# --- 1. a shared index ------------------------------------------------------------------------------------------
def test_trainers_sharing_one_index_keep_their_own_weights(pipe, tmp_path):  # noqa: F811
    shared = DensityIndex.load(pipe["index"])
    before = shared.weights.copy()
    first = build(pipe, "dpo", tmp_path / "a", density_alpha=1.0)
    first_none = build(pipe, "dpo", tmp_path / "c", density_alpha=None)
    tokenizer = AutoTokenizer.from_pretrained(pipe["policy"])
    trainers = []
    for alpha in (1.0, 0.0, None):
        args = density_config(DPOConfig)(str(tmp_path / f"t{alpha}"), density_alpha=alpha, **COMMON)
        trainers.append(with_density_sampling(DPOTrainer)(
            pipe["policy"], args=args, train_dataset=pipe["pairs"], processing_class=tokenizer, density_index=shared
        ))  # fmt: skip
    ess = [t._get_train_sampler().summary()["ess"] for t in trainers]
    assert shared.metadata["alpha"] == 1.0 and np.array_equal(shared.weights, before)  # the caller's, untouched
    assert trainers[0].density_index.metadata["alpha"] == 1.0 and trainers[1].density_index.metadata["alpha"] == 0.0
    assert trainers[2].density_index.metadata["alpha"] == 1.0  # None: the index's own alpha, not the last trainer's
    assert ess[1] == pytest.approx(len(pipe["pairs"])) and ess[0] < 0.9 * len(pipe["pairs"])
    assert ess[0] == pytest.approx(first._get_train_sampler().summary()["ess"]) == pytest.approx(ess[2])
    assert first_none.density_index.metadata["alpha"] == 1.0


# --- 2. KTO's KL term -------------------------------------------------------------------------------------------
def test_kto_with_its_kl_term_is_refused_and_apo_zero_unpaired_trains(pipe, tmp_path):  # noqa: F811
    args = density_config(KTOConfig)(str(tmp_path), density_index_path=pipe["index"], **COMMON)
    assert args.loss_type == "kto"
    with pytest.raises(ValueError, match="KL term.*apo_zero_unpaired"):
        with_density_sampling(KTOTrainer)(
            pipe["policy"], args=args, train_dataset=pipe["kto"],
            processing_class=AutoTokenizer.from_pretrained(pipe["policy"]),
        )  # fmt: skip
    trainer = build(pipe, "kto", tmp_path / "ok")
    assert trainer.args.loss_type == "apo_zero_unpaired" and not trainer.calculate_KL


# --- 3. a mistyped data_dir or density_index_path ---------------------------------------------------------------
def test_a_missing_data_dir_that_is_not_the_default_is_an_error_and_nothing_is_written(tmp_path, monkeypatch):
    from density_rlhf.recipe_kit import RecipeError, load_train_eval, parse_args
    from density_rlhf.recipes import train_rm

    monkeypatch.chdir(tmp_path)
    script_args = parse_args(
        train_rm.DATACLASSES, ["--config", "hyp_a.yaml", "--data_dir", "outputs/data_hhx"], section="reward"
    )[0]
    assert script_args.build_missing is True
    built = []
    with pytest.raises(FileNotFoundError, match=r"data_hhx/dataset not found.*prepare_data\.py.*data_hhx") as err:
        load_train_eval(script_args, build_default=lambda *a: built.append(a))
    assert isinstance(err.value, RecipeError)  # printed as one line by the recipes
    assert not built and not (tmp_path / "outputs").exists()


def test_the_missing_default_data_dir_is_built_by_the_recipes_builder_only(tmp_path, monkeypatch):
    from density_rlhf.recipe_kit import DEFAULT_DATA_DIR, MissingInputError, ensure_data

    monkeypatch.chdir(tmp_path)
    with pytest.raises(MissingInputError, match="prepare it first"):  # the core alone builds nothing
        ensure_data(DEFAULT_DATA_DIR)
    built = []

    def builder(data_dir, seed):
        built.append((data_dir, seed))
        raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        ensure_data(DEFAULT_DATA_DIR, seed=3, build_default=builder)
    assert built == [(DEFAULT_DATA_DIR, 3)]
    with pytest.raises(MissingInputError):  # build_missing=False wins
        ensure_data(DEFAULT_DATA_DIR, build_missing=False, build_default=builder)
    assert len(built) == 1


def test_a_missing_index_that_is_not_the_default_is_an_error(tmp_path, tiny_pipeline):
    from density_rlhf.recipe_kit import MissingInputError, ensure_index_for, parse_args
    from density_rlhf.recipes import train_rm

    script_args, training_args, _ = parse_args(train_rm.DATACLASSES, [
        "--config", "hyp_b.yaml", "--data_dir", str(tiny_pipeline / "data"), "--density_index_path",
        str(tmp_path / "densty"),
    ], section="reward")  # fmt: skip
    with pytest.raises(MissingInputError, match=r"densty not found: build it with .*build_density\.py"):
        ensure_index_for(training_args, script_args)
    assert not (tmp_path / "densty").exists()


def test_an_index_built_from_other_data_is_refused_naming_both(tmp_path, tiny_pipeline):
    import shutil

    from density_rlhf.recipe_kit import RecipeError, ensure_index_for, parse_args
    from density_rlhf.recipes import train_rm

    shutil.copytree(tiny_pipeline / "data", tmp_path / "data_hh")
    script_args, training_args, _ = parse_args(train_rm.DATACLASSES, [
        "--config", "hyp_b.yaml", "--data_dir", str(tmp_path / "data_hh"), "--density_index_path",
        str(tiny_pipeline / "density"),
    ], section="reward")  # fmt: skip
    with pytest.raises(
        RecipeError, match=rf"built from {tiny_pipeline / 'data'}, not from this run's data_dir .*data_hh"
    ):
        ensure_index_for(training_args, script_args)


# --- 4. a failed reweight ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, match",
    [({"estimator": "knn"}, "estimator must be one of"), ({"alpha": -1.0}, "alpha must be"),
     ({"uniform_mix": 2.0}, "uniform_mix"), ({"max_weight_ratio": 0.1}, "max_weight_ratio"),
     ({"target_ess": 3.0}, "target_ess"), ({"bucket_quantiles": (0.9, 0.1)}, "bucket_quantiles")],
)  # fmt: skip
def test_a_failed_reweight_leaves_the_index_as_it_was(tmp_path, kwargs, match):
    index = _index()
    meta, weights, buckets = json.dumps(index.metadata, sort_keys=True), index.weights.copy(), list(index.buckets)
    with pytest.raises(ValueError, match=match):
        index.reweight(**kwargs)
    assert json.dumps(index.metadata, sort_keys=True) == meta and np.array_equal(index.weights, weights)
    assert index.buckets == buckets
    assert DensityIndex.load(index.save(tmp_path / "idx")).metadata["alpha"] == 1.0  # still saves and loads


def test_the_config_refuses_an_unknown_estimator_and_bad_bounds(tmp_path):
    cls = density_config(DPOConfig)
    with pytest.raises(ValueError, match="density_estimator must be one of"):
        cls(str(tmp_path), use_cpu=True, bf16=False, density_estimator="knn")
    with pytest.raises(ValueError, match="density_target_ess must be in"):
        cls(str(tmp_path), use_cpu=True, bf16=False, density_target_ess=2.0)


# --- smaller gaps -----------------------------------------------------------------------------------------------
def test_samplers_refuse_weights_that_are_not_one_per_row():
    with pytest.raises(ValueError, match="1-D, one per dataset row; got shape"):
        DensitySampler(np.ones((4, 2)))


def test_a_user_sampler_of_the_wrong_length_is_refused(pipe, tmp_path):  # noqa: F811
    sampler = DensitySampler(np.ones(len(pipe["pairs"]) - 3))
    args = density_config(DPOConfig)(str(tmp_path), density_index_path=pipe["index"], **COMMON)
    trainer = with_density_sampling(DPOTrainer)(
        pipe["policy"], args=args, train_dataset=pipe["pairs"], density_sampler=sampler,
        processing_class=AutoTokenizer.from_pretrained(pipe["policy"]),
    )  # fmt: skip
    with pytest.raises(ValueError, match="45 weights but the processed train dataset has 48 rows"):
        trainer.get_train_dataloader()


def test_an_empty_train_dataset_is_a_clear_error(pipe, tmp_path):  # noqa: F811
    with pytest.raises(ValueError, match="the train dataset is empty"):
        args = density_config(DPOConfig)(str(tmp_path), density_index_path=pipe["index"], **COMMON)
        with_density_sampling(DPOTrainer)(
            pipe["policy"], args=args, train_dataset=pipe["pairs"].select([]),
            processing_class=AutoTokenizer.from_pretrained(pipe["policy"]),
        )  # fmt: skip


def test_the_missing_prompt_id_error_names_the_trainer_field():
    with pytest.raises(ValueError, match="`density_missing: uniform` in the trainer config"):
        map_prompt_weights(["x", "p1"], ["p1"], np.ones(1))


def test_the_density_summary_is_printed_and_the_first_step_logs_density_metrics(pipe, tmp_path, capsys):  # noqa: F811
    trainer = build(pipe, "dpo", tmp_path, max_steps=2, logging_steps=50, save_strategy="no")
    trainer.train()
    printed = capsys.readouterr().out
    assert "density sampling: 48 rows, ESS" in printed and "rare bucket 33.3% of rows" in printed
    first = [h for h in trainer.state.log_history if "density/ess" in h]
    assert first and first[0]["step"] == 1 and "density/alpha_effective" in first[0]


def test_the_readme_dpo_example_says_what_to_add_on_cpu():
    text = (REPO / "README.md").read_text()
    start = text.index("```python\n", text.index("## Quick start: density sampling in your DPO project"))
    assert "use_cpu=True, bf16=False" in text[start : text.index("```", start + 10)]


def test_the_card_reports_per_pair_accuracy(tmp_path):
    from density_rlhf.mixin import density_card_section

    class Args:
        density_sampling, density_pair_weighting, density_alpha_schedule = True, "per_pair", "constant"

    table = {"all": {"accuracy": 0.5, "loss": 0.7, "count": 3}, "rare": {"accuracy": 1.0, "loss": 0.1, "count": 1}}
    section = density_card_section(Args(), _index(), None, [], table)
    assert "| all | 0.5000 | 0.7000 | 3 |" in section and "Bounds (" in section


def test_recipes_do_not_build_anywhere_but_the_default(tmp_path):
    """The shipped default location is built on first use; the code says which one."""
    from density_rlhf.recipe_kit import DEFAULT_DATA_DIR, DEFAULT_DENSITY_DIR

    defaults = (REPO / "recipes" / "defaults.yaml").read_text()
    assert f"data_dir: {DEFAULT_DATA_DIR}" in defaults and f"density_index_path: {DEFAULT_DENSITY_DIR}" in defaults
    assert Path(DEFAULT_DATA_DIR).parts[0] == "outputs"


# --- YAML mistakes ----------------------------------------------------------------------------------------------
def _yaml(tmp_path, text: str) -> str:
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    (tmp_path / "defaults.yaml").write_text((REPO / "recipes" / "defaults.yaml").read_text())
    return str(path)


@pytest.mark.parametrize(
    "text, match",
    [("default: defaults.yaml\nseed: 0\n", r"unknown key 'default'; did you mean 'defaults'\?"),
     ("defaults: defaults.yaml\nseed: 0\nreward:\n  density_samplng: true\n",
      r"unknown key 'density_samplng'; did you mean 'density_sampling'\?"),
     ("defaults: defaults.yaml\nreward: {}\nseed: 1\nseed: 2\n", r"line 4: key 'seed' is given twice")],
    ids=["default_for_defaults", "misspelled_field", "duplicate_key"],
)  # fmt: skip
def test_yaml_mistakes_are_named_before_any_other_check(tmp_path, text, match):
    from density_rlhf.recipe_kit import RecipeError, parse_args
    from density_rlhf.recipes import train_rm

    with pytest.raises(RecipeError, match=match):
        parse_args(train_rm.DATACLASSES, ["--config", _yaml(tmp_path, text)], section="reward")


@pytest.mark.parametrize("name", ["hyp_a", "hyp_b", "hyp_c", "hyp_d", "hyp_o", "sft", "scale/hyp_d", "scale/sft"])
def test_every_shipped_recipe_yaml_passes_the_key_check(name):
    from density_rlhf.recipe_kit import check_keys, load_config, read_config
    from density_rlhf.recipes import train_grpo, train_rm, train_sft

    path = str(REPO / "recipes" / f"{name}.yaml")
    scripts = {"reward": train_rm, "grpo": train_grpo, "sft": train_sft}
    sections = [s for s in scripts if s in read_config(path)] or ["sft"]
    for section in sections:  # what parse_args hands each script: the top level with its section merged over it
        check_keys(path, load_config(path, section), scripts[section].DATACLASSES)


# --- help -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["rm", "grpo", "density"])
def test_command_help_shows_its_own_options_and_the_density_fields_first(command, capsys, monkeypatch):
    from density_rlhf import cli

    monkeypatch.setattr("sys.argv", ["density-rlhf"])
    assert cli.main([command, "--help"]) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert lines[0] == f"usage: density-rlhf {command} --config FILE [--<field> VALUE ...]"
    assert ("--accelerate_config FILE" in text) is (command != "density")
    assert "dataset_streaming" not in text and "ignore_bias_buffers" not in text
    if command != "density":
        assert text.index("density fields:") < text.index("script fields:") < text.index("--help_all` lists them")
        assert len(lines) < 60 and "--density_target_ess" in text
    assert cli.main([command, "--help_all"]) == 0
    full = capsys.readouterr().out
    assert "dataset_streaming" not in full
    assert len(full.splitlines()) > len(lines) if command != "density" else full == text
