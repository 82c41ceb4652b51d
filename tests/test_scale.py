"""The scale path on CPU: the density stage sharded over two processes, and LoRA adapters through the recipes."""

import json

import numpy as np
import pytest

from density_rlhf.index import DensityIndex

from .helpers import accelerate_launch


def test_two_processes_build_exactly_the_index_one_builds(tiny_pipeline, tmp_path):
    """`accelerate launch` on 2 CPU processes: each embeds its share of the prompts (and says so), the main process
    gathers them in prompt order and builds; the prompt order and the weights equal the 1-process build's."""
    import subprocess
    import sys

    from .conftest import REPO

    common = ["--config", "build_density.yaml", "--data_dir", str(tiny_pipeline / "data"), "--k", "5"]
    one = subprocess.run(
        [sys.executable, str(REPO / "recipes" / "build_density.py"), *common, "--density_dir", str(tmp_path / "one")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert one.returncode == 0, one.stderr[-3000:]
    two = accelerate_launch("cpu_2proc.yaml", "build_density.py", [*common, "--density_dir", str(tmp_path / "two")])
    log = two.stdout + two.stderr
    first, second = DensityIndex.load(tmp_path / "one"), DensityIndex.load(tmp_path / "two")
    n = first.metadata["n"]
    counts = {r: int(next(line.split("embedded ")[1].split()[0] for line in log.splitlines()
                          if f"prompts on rank {r} of 2" in line)) for r in (0, 1)}  # fmt: skip
    assert sum(counts.values()) == n and min(counts.values()) > 0, counts
    assert "prompts on rank 0 of 1" in one.stdout + one.stderr
    assert first.prompt_ids == second.prompt_ids
    np.testing.assert_array_equal(first.embeddings, second.embeddings)
    np.testing.assert_array_equal(first.weights, second.weights)
    assert first.metadata["embedder"] == second.metadata["embedder"]
    assert not (tmp_path / "two" / ".embedding_shards").exists()
    built = json.loads((tmp_path / "two" / "build_args.json").read_text())
    assert built["data_dir"] == str(tiny_pipeline / "data")


LORA_COMMON = ["--use_peft", "true", "--report_to", "none", "--save_strategy", "no", "--eval_strategy", "no"]


def _paths(tiny_pipeline) -> list[str]:
    return ["--data_dir", str(tiny_pipeline / "data"), "--density_index_path", str(tiny_pipeline / "density")]


@pytest.fixture(scope="module")
def lora_rm(tiny_pipeline, tmp_path_factory):
    """`train_rm.py --use_peft true` on the tiny reward model: a LoRA adapter with its score head."""
    from density_rlhf.recipe_kit import parse_args
    from density_rlhf.recipes import train_rm

    out = tmp_path_factory.mktemp("lora") / "rm"
    argv = ["--config", "hyp_a.yaml", *LORA_COMMON, *_paths(tiny_pipeline), "--output_dir", str(out),
            "--model_name_or_path", str(tiny_pipeline / "data" / "tiny" / "reward"), "--max_steps", "4",
            "--learning_rate", "1e-2"]  # fmt: skip
    train_rm.main(*parse_args(train_rm.DATACLASSES, argv, section="reward"))
    return out


def test_rm_recipe_saves_a_lora_adapter_that_the_grpo_scorer_scores_as_trained(lora_rm, tiny_pipeline):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification

    from density_rlhf.reward_model import RewardModelScorer

    config = json.loads((lora_rm / "adapter_config.json").read_text())
    assert config["task_type"] == "SEQ_CLS" and "score" in (config["modules_to_save"] or [])
    assert not (lora_rm / "model.safetensors").exists()
    prompts = ["What is the weather like today?", "Write a poem about the sea."]
    completions = ["sunny and warm.", "The waves roll in and out."]
    scorer = RewardModelScorer(str(lora_rm))
    scores = scorer(prompts=prompts, completions=completions)

    def score_with(model):
        tok = scorer.tokenizer
        out = []
        for p, c in zip(prompts, completions):
            with torch.no_grad():
                out.append(model(**tok(p + c + tok.eos_token, return_tensors="pt")).logits[0, 0].item())
        return out

    base = AutoModelForSequenceClassification.from_pretrained(tiny_pipeline / "data" / "tiny" / "reward").eval()
    untrained = score_with(base)
    trained = score_with(PeftModel.from_pretrained(base, str(lora_rm)).eval())  # the adapter, not merged
    assert scores == pytest.approx(trained, abs=1e-5)
    assert max(abs(a - b) for a, b in zip(trained, untrained)) > 1e-4  # the adapter changed the scores


def test_grpo_recipe_trains_a_lora_policy_on_a_lora_reward_model(lora_rm, tiny_pipeline, tmp_path):
    from density_rlhf.recipe_kit import parse_args
    from density_rlhf.recipes import train_grpo

    out = tmp_path / "grpo"
    argv = ["--config", "hyp_a.yaml", *LORA_COMMON, *_paths(tiny_pipeline), "--output_dir", str(out),
            "--model_name_or_path", str(tiny_pipeline / "data" / "tiny" / "policy"), "--reward_model_path",
            str(lora_rm), "--max_steps", "2", "--max_completion_length", "8", "--logging_steps", "1"]  # fmt: skip
    train_grpo.main(*parse_args(train_grpo.DATACLASSES, argv, section="grpo"))
    assert json.loads((out / "adapter_config.json").read_text())["task_type"] == "CAUSAL_LM"
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    rewards = [h["rewards/reward_model/mean"] for h in history if "rewards/reward_model/mean" in h]
    assert rewards and all(np.isfinite(rewards))


def test_ivf_self_search_finds_what_index_search_finds():
    """List-by-list search of an IVF-Flat index gives `index.search`'s hits at the same nprobe (the same probes,
    exact distances within them), and `knn_search` takes that path for an IVF index."""
    from density_rlhf.knn import ivf_self_search, knn_search, make_faiss_index
    from density_rlhf.settings import SearchSettings

    rng = np.random.default_rng(0)
    centers = rng.normal(size=(12, 32))
    x = (centers[rng.integers(0, 12, 3000)] + 0.3 * rng.normal(size=(3000, 32))).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    index = make_faiss_index(x, SearchSettings(index_type="ivf", ivf_nlist=32, ivf_nprobe=4))
    d_ref, i_ref = index.search(x, 11)
    d, i = ivf_self_search(index, x, 10)
    np.testing.assert_allclose(d, d_ref, atol=1e-5)
    assert np.mean(np.sort(i, axis=1) == np.sort(i_ref, axis=1)) > 0.999  # ties may swap
    assert (i[:, 0] == np.arange(3000)).mean() > 0.99  # each point finds itself first
    distances, neighbours = knn_search(index, x, 10)
    np.testing.assert_allclose(distances, np.sqrt(np.maximum(d_ref[:, 1:], 0)), atol=1e-3)
    # the check can fail: at nprobe 1 the hits differ from a wider search
    index.nprobe = 1
    assert np.mean(np.sort(ivf_self_search(index, x, 10)[1], axis=1) == np.sort(i_ref, axis=1)) < 0.999
