"""What a TRL user meets first: recipes that resume only when asked, conversational prompts, honest model cards,
errors before any embedding, the launcher, and the DPO/KTO/RLOO commands."""

import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
from datasets import Dataset, load_from_disk

from density_rlhf import DensityIndex, DensitySampler, add_prompt_ids, prompt_id, prompt_text, unique_prompts
from density_rlhf.embedding import DEFAULT_EMBEDDER
from density_rlhf.recipe_kit import BuildDensityArguments, RecipeError, build_density, last_checkpoint, parse_args
from density_rlhf.recipes import train_rm

from .conftest import REPO


TINY_RM = ["--max_steps", "2", "--save_steps", "2", "--eval_strategy", "no", "--report_to", "none",
           "--logging_steps", "1", "--max_length", "128", "--per_device_train_batch_size", "8"]  # fmt: skip


def _rm_args(tiny_pipeline, output_dir, *extra):
    return parse_args(
        list(train_rm.DATACLASSES),
        ["--config", "hyp_b.yaml", "--model_name_or_path", str(tiny_pipeline / "data" / "tiny" / "reward"),
         "--data_dir", str(tiny_pipeline / "data"), "--density_index_path", str(tiny_pipeline / "density"),
         "--output_dir", str(output_dir), *TINY_RM, *extra],
        section="reward",
    )  # fmt: skip


# --- 1. no silent resume --------------------------------------------------------------------------------------------
def test_a_rerun_into_a_used_output_dir_fails_and_resume_true_resumes(tiny_pipeline, tmp_path):
    out = tmp_path / "rm"
    train_rm.main(*_rm_args(tiny_pipeline, out))
    assert (out / "checkpoint-2").is_dir()
    first = (out / "model.safetensors").read_bytes()
    with pytest.raises(RecipeError) as err:
        train_rm.main(*_rm_args(tiny_pipeline, out, "--learning_rate", "1e-2"))
    message = str(err.value)
    assert "\n" not in message and "already holds checkpoints (newest checkpoint-2)" in message
    assert "--resume_from_checkpoint true" in message and "--output_dir" in message
    assert (out / "model.safetensors").read_bytes() == first  # nothing was trained or saved
    # asked: resumes from checkpoint-2 and trains on to step 4
    train_rm.main(*_rm_args(tiny_pipeline, out, "--resume_from_checkpoint", "true", "--max_steps", "4"))
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4 and [h["step"] for h in state["log_history"] if "loss" in h] == [1, 2, 3, 4]


def test_resume_settings_without_training(tmp_path):
    from types import SimpleNamespace

    from density_rlhf.recipe_kit import DensityScriptArguments

    args = SimpleNamespace(output_dir=str(tmp_path), resume_from_checkpoint=None)
    assert last_checkpoint(args) is None  # empty output_dir
    args.resume_from_checkpoint = "true"
    assert last_checkpoint(args) is None  # nothing to resume: starts anew
    for step in (5, 20):
        (tmp_path / f"checkpoint-{step}").mkdir()
    assert last_checkpoint(args) == str(tmp_path / "checkpoint-20")
    args.resume_from_checkpoint = str(tmp_path / "checkpoint-5")
    assert last_checkpoint(args) == str(tmp_path / "checkpoint-5")
    args.resume_from_checkpoint = str(tmp_path / "checkpoint-7")
    with pytest.raises(RecipeError, match="is not a directory"):
        last_checkpoint(args)
    args.resume_from_checkpoint = None
    with pytest.raises(RecipeError, match="already holds checkpoints"):
        last_checkpoint(args, DensityScriptArguments())
    assert last_checkpoint(args, DensityScriptArguments(overwrite_output_dir=True)) is None
    assert not list(tmp_path.glob("checkpoint-*"))  # deleted, as the flag says


def test_the_runner_passes_the_resume_flag_to_training_stages_only(tmp_path):
    from density_rlhf.experiment.execution import _command
    from density_rlhf.experiment.graph import RunnerArguments, build_stages

    stages = build_stages(RunnerArguments(output_dir=str(tmp_path), seeds=[0]))
    for stage in stages:
        command = _command(stage, "accelerate launch")
        trains = stage.script.startswith("train_")
        assert (command[-2:] == ["--resume_from_checkpoint", "true"]) == trains, stage.name


# --- 2. conversational prompts --------------------------------------------------------------------------------------
def test_prompt_text_and_ids_of_messages():
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi  there"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "What is  a kNN?"},
    ]
    assert prompt_text(messages) == "What is a kNN?" and prompt_id(messages) == prompt_id("What is a kNN?")
    assert (
        prompt_text(messages, "dialogue")
        == "system: Be brief.\n\nuser: Hi there\n\nassistant: Hello.\n\nuser: What is a kNN?"
    )
    assert prompt_id(messages, "dialogue") != prompt_id(messages)
    parts = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe it"}]}]
    assert prompt_text(parts) == "Describe it"
    assert prompt_id("  a\tb ") == prompt_id("a b")  # strings: the normalized text, as before
    with pytest.raises(ValueError, match="empty"):
        prompt_id("")
    with pytest.raises(ValueError, match="empty"):
        prompt_id(" \n ")
    with pytest.raises(TypeError, match=r"string or a list of messages \(.*\), got NoneType"):
        prompt_id(None)
    with pytest.raises(ValueError, match="no user turn"):
        prompt_id([{"role": "system", "content": "x"}])
    with pytest.raises(ValueError, match="turns must be one of"):
        prompt_text("x", turns="last")
    data = Dataset.from_dict({"prompt": ["ok", None, "fine"]})
    with pytest.raises(TypeError, match=r"column 'prompt', row 1: a prompt must be a string"):
        add_prompt_ids(data)
    texts, ids = unique_prompts(["b", [{"role": "user", "content": "b"}], "a"])
    assert texts == ["b", "a"] and ids == [prompt_id("b"), prompt_id("a")]


def _conversational(rows: Dataset) -> Dataset:
    return rows.map(lambda x: {"prompt": [{"role": "user", "content": x["prompt"]}]})


def test_index_and_sampler_take_conversational_datasets(tiny_pipeline):
    train = load_from_disk(str(tiny_pipeline / "data" / "dataset"))["train"].select(range(120))
    strings = train.select_columns(["prompt", "chosen", "rejected"])
    chat = _conversational(strings)
    rng = np.random.default_rng(0)
    emb = {p: rng.normal(size=8) for p in set(strings["prompt"])}
    by_text = DensityIndex.from_dataset(strings, k=5, embeddings=_embeddings_for(strings, emb))
    by_chat = DensityIndex.from_dataset(chat, k=5, embeddings=_embeddings_for(strings, emb))
    assert by_text.prompt_ids == by_chat.prompt_ids and np.allclose(by_text.weights, by_chat.weights)
    # no prompt_id column: the sampler takes the ids from the messages; the dataset is not changed
    sampler = DensitySampler.from_index(by_chat, chat, seed=0)
    expected = DensitySampler.from_index(by_text, strings.map(lambda x: {"prompt_id": prompt_id(x["prompt"])}), seed=0)
    assert np.allclose(sampler.weights, expected.weights) and "prompt_id" not in chat.column_names


def _embeddings_for(dataset: Dataset, table: dict) -> np.ndarray:
    texts, _ = unique_prompts(dataset["prompt"])
    return np.stack([table[t] for t in texts])


def _quick_start(pipe_policy: str, dataset: Dataset, tmp_path, monkeypatch, grpo: bool = False) -> dict:
    text = (REPO / "README.md").read_text()
    start = text.index("```python\n", text.index("## Quick start: density sampling in your DPO project")) + len(
        "```python\n"
    )
    code = text[start : text.index("```", start)]
    cpu = '"dpo-density", use_cpu=True, bf16=False, max_steps=2, logging_steps=1, report_to=[], save_strategy="no",'
    code = code.replace('"dpo-density",', cpu)
    if grpo:
        code = code.replace("DPOConfig", "GRPOConfig").replace("DPOTrainer", "GRPOTrainer")
        code = code.replace('save_strategy="no",', 'save_strategy="no", num_generations=4, max_completion_length=8,')
        code = code.replace("(model, args=args,", "(model, reward_funcs=lambda completions, **kw: [float(len(c)) for c "
                            "in completions], args=args,")  # fmt: skip
    monkeypatch.chdir(tmp_path)
    namespace = {"model": pipe_policy, "dataset": dataset}
    exec(code, namespace)
    return namespace


@pytest.fixture(scope="module")
def small_pairs(tiny_pipeline):
    train = load_from_disk(str(tiny_pipeline / "data" / "dataset"))["train"]
    first = {}
    for i, pid in enumerate(train["prompt_id"]):
        first.setdefault(pid, i)
    return train.select(sorted(first.values())[:48]).select_columns(["prompt", "chosen", "rejected"])


def test_the_quick_start_runs_on_a_conversational_dataset(tiny_pipeline, small_pairs, tmp_path, monkeypatch):
    chat = _conversational(small_pairs).map(
        lambda x: {
            "chosen": [{"role": "assistant", "content": x["chosen"]}],
            "rejected": [{"role": "assistant", "content": x["rejected"]}],
        }  # fmt: skip
    )
    namespace = _quick_start(str(tiny_pipeline / "data" / "tiny" / "policy"), chat, tmp_path, monkeypatch)
    history = namespace["trainer"].state.log_history
    assert any("density/ess" in entry for entry in history) and namespace["index"].summary()["n"] == 48


def test_the_quick_start_runs_on_a_prompt_only_grpo_dataset(tiny_pipeline, small_pairs, tmp_path, monkeypatch):
    prompts = small_pairs.select_columns(["prompt"])
    namespace = _quick_start(str(tiny_pipeline / "data" / "tiny" / "policy"), prompts, tmp_path, monkeypatch, True)
    history = namespace["trainer"].state.log_history
    assert any("density/ess" in entry for entry in history) and namespace["index"].summary()["n"] == 48


# --- 3. the model card ----------------------------------------------------------------------------------------------
def test_the_card_names_local_model_and_data_and_the_dropped_rows(tiny_pipeline, tmp_path, capsys):
    out = tmp_path / "rm"
    script_args, training_args, model_args = _rm_args(
        tiny_pipeline, out, "--max_length", "40", "--save_strategy", "no"
    )
    train_rm.main(script_args, training_args, model_args)
    card = (out / "README.md").read_text()
    assert "None" not in card, [line for line in card.splitlines() if "None" in line]
    assert "huggingface.co/datasets" not in card and f"on the local data `{tiny_pipeline / 'data'}`" in card
    assert f"the local model `{tiny_pipeline / 'data' / 'tiny' / 'reward'}`" in card
    assert f'pipeline(model="{out}"' in card and "# Model Card for rm" in card
    line = next(x for x in card.splitlines() if x.startswith("- Training rows:"))
    assert "the trainer's preprocessing dropped" in line and "rare " in line and "->" in line
    printed = capsys.readouterr().out
    assert "the trainer's preprocessing dropped" in printed  # the start-of-training line says it too


# --- 4. errors before the embedder is loaded ------------------------------------------------------------------------
def test_settings_are_checked_before_any_embedding(tiny_pipeline, tmp_path, monkeypatch):
    import density_rlhf.embedding
    import density_rlhf.index

    def refuse(*args, **kwargs):
        raise AssertionError("the embedder was loaded")

    monkeypatch.setattr(density_rlhf.embedding, "load_embedder", refuse)
    monkeypatch.setattr(density_rlhf.index, "embed_prompts", refuse)
    args = BuildDensityArguments(data_dir=str(tiny_pipeline / "data"), density_dir=str(tmp_path / "d"), k=5000)
    with pytest.raises(RecipeError, match=r"k=5000 must be between 1 and .* distinct prompts in"):
        build_density(args, across_processes=False)
    with pytest.raises(ValueError, match="alpha must be"):
        build_density(BuildDensityArguments(data_dir=args.data_dir, density_dir=args.density_dir, alpha=-1))
    with pytest.raises(ValueError, match="k=3 must be"):
        DensityIndex.build(["a", "b", "c"], ["1", "2", "3"], k=3)
    assert not (tmp_path / "d").exists()


def test_an_index_that_does_not_cover_the_data_fails_before_embedding(tiny_pipeline, tmp_path, monkeypatch):
    from density_rlhf import DensityRewardConfig, DensityRewardTrainer

    index = DensityIndex.load(tiny_pipeline / "density")
    train = load_from_disk(str(tiny_pipeline / "data" / "dataset"))["train"].select(range(64))
    train = train.map(lambda x, i: {"prompt_id": x["prompt_id"] if i % 2 else f"new{i}"}, with_indices=True)

    def refuse(*args, **kwargs):
        raise AssertionError("unknown prompts were embedded")

    monkeypatch.setattr(DensityIndex, "query", refuse)
    args = DensityRewardConfig(str(tmp_path), use_cpu=True, report_to=[], density_sampling=True)
    with pytest.raises(ValueError, match=r"32 of 64 rows have a prompt id missing from the density index"):
        DensityRewardTrainer(str(tiny_pipeline / "data" / "tiny" / "reward"), args, train_dataset=train,
                             density_index=index)  # fmt: skip


# --- 5. the launcher and one-line errors ----------------------------------------------------------------------------
def test_the_launch_command(tmp_path, monkeypatch):
    from accelerate.commands import config as accelerate_config

    from density_rlhf import cli

    monkeypatch.setattr(accelerate_config, "default_config_file", str(tmp_path / "none.yaml"))
    command = cli.launch_command("r.py", ["--config", "x"], None, None, debug=False)
    at = command.index("--num_processes")
    assert command[at + 1] == "1" and "--num_machines" in command and "--quiet" in command
    assert command[-3:] == ["r.py", "--config", "x"]
    two = cli.launch_command("r.py", [], None, 2, debug=True)
    assert two[two.index("--num_processes") + 1] == "2" and "--multi_gpu" in two and "--quiet" not in two
    with_config = cli.launch_command("r.py", [], "cfg.yaml", None, debug=False)
    assert "--num_processes" not in with_config and with_config[with_config.index("--config_file") + 1] == "cfg.yaml"


def test_cpu_with_several_processes_says_how(capsys):
    from density_rlhf import cli

    assert cli.main(["rm", "--config", "hyp_b.yaml", "--cpu", "--num_processes", "2"]) == 2
    err = capsys.readouterr().err
    assert "starts one process" in err and "cpu_2proc.yaml" in err
    assert cli.main(["density", "--cpu"]) == 2


def test_a_recipe_error_is_one_line_and_debug_shows_the_traceback(tmp_path):
    command = [sys.executable, "-m", "density_rlhf.cli", "rm", "--config", "hyp_b.yaml", "--density_alpha", "-1",
               "--output_dir", str(tmp_path / "o")]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    plain = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert plain.returncode != 0
    assert plain.stderr.strip().splitlines()[-1].startswith("error: ") and "density_alpha" in plain.stderr
    assert "Traceback" not in plain.stderr and "was set to a value of" not in plain.stderr + plain.stdout
    debug = subprocess.run([*command, "--debug"], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "ConfigError" in debug.stderr


# --- 6. commands for DPO, KTO and RLOO ------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["dpo", "kto", "rloo"])
def test_dpo_kto_and_rloo_commands_train_on_cpu(tiny_pipeline, tmp_path, command):
    tiny = tiny_pipeline / "data" / "tiny"
    args = [sys.executable, "-m", "density_rlhf.cli", command, "--config", f"{command}.yaml",
            "--model_name_or_path", str(tiny / "policy"), "--data_dir", str(tiny_pipeline / "data"),
            "--density_index_path", str(tiny_pipeline / "density"), "--output_dir", str(tmp_path / "out"),
            "--max_steps", "2", "--save_steps", "2", "--logging_steps", "1", "--report_to", "none",
            "--per_device_train_batch_size", "8"]  # fmt: skip
    if command == "rloo":
        args += ["--reward_model_path", str(tiny / "reward"), "--max_completion_length", "8"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    state = json.loads((tmp_path / "out" / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == 2 and (tmp_path / "out" / "checkpoint-2" / "density_sampler_state.json").exists()
    assert any("density/ess" in entry for entry in state["log_history"])
    assert "density sampling:" in result.stdout  # the start-of-training line


# --- 7. smaller items -----------------------------------------------------------------------------------------------
def test_non_english_prompts_get_a_warning(caplog):
    prompts = [f"an english prompt number {i}" for i in range(95)] + [f"¿Dónde está {i}? 🙂" for i in range(5)]
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(100, 8))
    emb[95:] += 20  # placed far from the rest, as the English-only embedder places them
    with caplog.at_level(logging.WARNING, logger="density_rlhf.index"):
        DensityIndex.build(prompts, [prompt_id(p) for p in prompts], embeddings=emb, embedder=DEFAULT_EMBEDDER, k=5)
    warning = next(r.getMessage() for r in caplog.records if "non-English" in r.getMessage())
    assert "5 of 100 prompts (5.0%)" in warning and "paraphrase-multilingual-MiniLM-L12-v2" in warning
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="density_rlhf.index"):
        DensityIndex.build(prompts[:95], [prompt_id(p) for p in prompts[:95]], embeddings=emb[:95],
                           embedder=DEFAULT_EMBEDDER, k=5)  # fmt: skip
    assert not any("non-English" in r.getMessage() for r in caplog.records)
