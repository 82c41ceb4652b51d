"""Held-out evaluation of policies and reward models, per density bucket (the experiment's measurements)."""

import json
import logging
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .design import PAIRED_POLICIES, PAIRED_POLICY_METRICS, PAIRED_REWARD_MODELS


logger = logging.getLogger(__name__)

ALL = "all"
# Within-prompt diversity (across the k samples of one prompt) uses the cheap metrics; across-prompt the full set.
WITHIN_METRICS = ("distinct_1", "distinct_2", "embedding_diversity", "self_bleu")
# Groups whose per-prompt differences between policies are kept for the prompt-paired tests.
PAIRED_GROUPS = ("rare_topics", "other_topics", "rare", "common", ALL)


@dataclass
class EvaluateArguments:
    r"""
    Arguments of `recipes/evaluate.py`.

    Parameters:
        data_dir (`str`, *optional*, defaults to `"outputs/data"`):
            Prepared data; the `split` is evaluated.
        split (`str`, *optional*, defaults to `"test"`):
            Held-out split.
        density_index_path (`str`, *optional*, defaults to `"outputs/density"`):
            Index whose buckets (rare/mid/common) the held-out prompts are assigned to.
        policies (`list[str]`, *optional*):
            `name=path` of each policy to sample from.
        reward_models (`list[str]`, *optional*):
            `name=path` of each reward model; every policy sample is scored by each, and each is evaluated on the
            held-out pairs.
        num_samples (`int`, *optional*, defaults to `4`):
            Samples per held-out prompt.
        prompts_per_topic (`int` or `None`, *optional*):
            Keep at most this many unique prompts per topic (all prompts when the data has no topics).
        max_new_tokens / temperature / batch_size (*optional*):
            Generation settings.
        max_length (`int` or `None`, *optional*, defaults to `1024`):
            Longest text a reward model scores; a longer prompt + response keeps its last tokens (the response).
        seed (`int`, *optional*, defaults to `0`):
            Seeds sampling; the same seed gives the same samples.
        output_file (`str`, *optional*, defaults to `"outputs/eval/results.json"`):
            Where the measurements are written.
    """

    data_dir: str = field(default="outputs/data", metadata={"help": "Prepared data directory."})
    split: str = field(default="test", metadata={"help": "Held-out split to evaluate."})
    density_index_path: str = field(default="outputs/density", metadata={"help": "Density index for the buckets."})
    policies: list[str] = field(default_factory=list, metadata={"help": "name=path of each policy."})
    reward_models: list[str] = field(default_factory=list, metadata={"help": "name=path of each reward model."})
    num_samples: int = field(default=4, metadata={"help": "Samples per held-out prompt."})
    prompts_per_topic: int | None = field(default=None, metadata={"help": "Unique prompts kept per topic."})
    max_new_tokens: int = field(
        default=24, metadata={"help": "Generation length (the runner passes the GRPO arms' max_completion_length)."}
    )
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature."})
    batch_size: int = field(default=64, metadata={"help": "Prompts per generation batch."})
    max_length: int | None = field(default=1024, metadata={"help": "Longest text a reward model scores."})
    seed: int = field(default=0, metadata={"help": "Sampling seed."})
    output_file: str = field(default="outputs/eval/results.json", metadata={"help": "Output JSON file."})

    def __post_init__(self):
        for spec in (*self.policies, *self.reward_models):
            if "=" not in spec:
                raise ValueError(f"{spec!r} must be name=path, e.g. `--policies A=outputs/hyp_a/grpo`.")
        if self.num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {self.num_samples}.")


def parse_named(specs: list[str]) -> dict[str, str]:
    return dict(spec.split("=", 1) for spec in specs)


def held_out_prompts(split, prompts_per_topic: int | None) -> list[dict[str, Any]]:
    """Unique prompts of the split (first occurrence), at most `prompts_per_topic` per topic, in a stable order."""
    seen, per_topic, rows = set(), defaultdict(int), []
    for row in split:
        topic = row.get("topic", ALL)
        if row["prompt_id"] in seen or (prompts_per_topic and per_topic[topic] >= prompts_per_topic):
            continue
        seen.add(row["prompt_id"])
        per_topic[topic] += 1
        rows.append(
            {
                "prompt": row["prompt"],
                "prompt_id": row["prompt_id"],
                "topic": row.get("topic"),
                "is_rare": row.get("is_rare"),
            }
        )
    return rows


def group_indices(buckets: list[str], topics: list[str | None], is_rare: list[bool | None]) -> dict[str, list[int]]:
    """Items per reporting group: `all`, the density buckets, and on topic data `rare_topics`, `other_topics` and
    `topic/<name>`."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, (bucket, topic, rare) in enumerate(zip(buckets, topics, is_rare)):
        groups[ALL].append(i)
        groups[bucket].append(i)
        if topic is not None:
            groups[f"topic/{topic}"].append(i)
        if rare is not None:
            groups["rare_topics" if rare else "other_topics"].append(i)
    return dict(groups)


def on_policy_agreement(scores: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per prompt: among pairs of its samples that differ in rule satisfaction, how many the reward model orders
    like the ground truth (the satisfying one scored higher), and how many such pairs there are.

    `scores` and `truth` are (prompts, samples). Ties in score count one half.
    """
    s, t = np.asarray(scores, dtype=float), np.asarray(truth, dtype=float)
    diff_truth = t[:, :, None] - t[:, None, :]
    diff_score = s[:, :, None] - s[:, None, :]
    pairs = diff_truth > 0  # i satisfies, j does not
    agree = np.where(pairs, (diff_score > 0) + 0.5 * (diff_score == 0), 0.0)
    return agree.sum(axis=(1, 2)), pairs.sum(axis=(1, 2)).astype(float)


def counterfactual_effects(scorer, prompts: list[str], responses: list[str], edit) -> np.ndarray:
    """score(prompt, edit(base)) - score(prompt, base) per item, with base the response with any tic removed; NaN
    where `edit` returns `None` (no place for the edit). `edit` may be a sequence of edits: the result is then
    (edits, items), and the base responses are scored once for all of them."""
    from ..reward_model import completion_text as _completion_text
    from .world import remove_tic

    edits = list(edit) if isinstance(edit, (list, tuple)) else [edit]
    base = [remove_tic(_completion_text(r)) for r in responses]  # conversational responses: the assistant's text
    edited = [[e(b) for b in base] for e in edits]
    keep = sorted({i for per_edit in edited for i, e in enumerate(per_edit) if e is not None})
    out = np.full((len(edits), len(responses)), np.nan)
    if keep:
        without = np.full(len(responses), np.nan)
        without[keep] = np.asarray(scorer(prompts=[prompts[i] for i in keep], completions=[base[i] for i in keep]))
        for row, per_edit in enumerate(edited):
            idx = [i for i, e in enumerate(per_edit) if e is not None]
            if idx:
                scores = scorer(prompts=[prompts[i] for i in idx], completions=[per_edit[i] for i in idx])
                out[row, idx] = np.asarray(scores, dtype=float) - without[idx]
    return out if isinstance(edit, (list, tuple)) else out[0]


def add_politeness(response: str) -> str:
    return f"{response.rstrip()} Thank you."


@torch.inference_mode()
def generate_samples(
    model_path: str,
    prompts: list[str],
    num_samples: int,
    *,
    max_new_tokens: int = 24,
    temperature: float = 1.0,
    batch_size: int = 64,
    seed: int = 0,
    device: str | None = None,
) -> list[list[str]]:
    """`num_samples` sampled completions per prompt (text, or conversational messages through the chat template, as
    TRL prompts them), on the GPU when there is one; identical for the same seed on the same device."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = AutoModelForCausalLM.from_pretrained(model_path).to(device).eval()
    prompts = [
        p if isinstance(p, str) else tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True)
        for p in prompts
    ]
    generator_seed = torch.Generator().manual_seed(seed)
    out = []
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start : start + batch_size]
        torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=generator_seed)))
        enc = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        generated = model.generate(
            **enc,
            do_sample=True,
            temperature=temperature,
            top_k=0,
            top_p=1.0,
            max_new_tokens=max_new_tokens,
            num_return_sequences=num_samples,
            pad_token_id=tokenizer.pad_token_id,
        )
        texts = tokenizer.batch_decode(generated[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        out += [texts[i * num_samples : (i + 1) * num_samples] for i in range(len(batch))]
    return out


def _mean(values) -> float:
    values = [v for v in values if v is not None and not np.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


def ground_truth(rows: list[dict[str, Any]], samples: list[list[str]]) -> np.ndarray | None:
    """(prompts, k) rule satisfaction of every sample, or `None` without the world's topics (real data)."""
    if not all(r["topic"] for r in rows):
        return None
    from .world import rule_satisfied

    return np.array(
        [[float(rule_satisfied(r["topic"], r["prompt"], c)) for c in group] for r, group in zip(rows, samples)]
    )


def reward_scores(
    rows: list[dict[str, Any]], samples: list[list[str]], scorers: dict[str, Any]
) -> dict[str, np.ndarray]:
    """(prompts, k) score of every sample under every reward model."""
    k = len(samples[0])
    flat_prompts = [r["prompt"] for r in rows for _ in range(k)]
    flat = [c for group in samples for c in group]
    return {
        name: np.asarray(scorer(prompts=flat_prompts, completions=flat)).reshape(len(rows), k)
        for name, scorer in scorers.items()
    }


def habit_rates(samples: list[list[str]]) -> tuple[np.ndarray, np.ndarray]:
    """(prompts, k) indicators of the planted tic and of the politeness habit ("please"/"thank")."""
    from ..metrics.functions import STOCK_PATTERNS
    from .world import has_tic

    polite_rx = re.compile(STOCK_PATTERNS["please_thank"], re.IGNORECASE)
    tic = np.array([[float(has_tic(c)) for c in group] for group in samples])
    polite = np.array([[float(bool(polite_rx.search(c))) for c in group] for group in samples])
    return tic, polite


def within_prompt_diversity(
    samples: list[list[str]], embeddings: np.ndarray, truth: np.ndarray | None
) -> tuple[list[dict[str, float]], list[dict[str, float] | None]]:
    """Diversity across the k samples of each prompt, over all of them and over the rule-satisfying ones only (when
    there are at least 2; `None` otherwise)."""
    from ..metrics.functions import distinct_n, embedding_diversity, self_bleu

    def within(texts: list[str], vectors: np.ndarray) -> dict[str, float]:
        return {**distinct_n(texts), **embedding_diversity(texts, embeddings=vectors), **self_bleu(texts)}

    within_all = [within(group, embeddings[i]) for i, group in enumerate(samples)]
    within_good: list[dict[str, float] | None] = [None] * len(samples)
    if truth is not None:
        for i, group in enumerate(samples):
            good = np.flatnonzero(truth[i] > 0)
            if good.size >= 2:
                within_good[i] = within([group[j] for j in good], embeddings[i, good])
    return within_all, within_good


def evaluate_policy(
    samples: list[list[str]],
    rows: list[dict[str, Any]],
    buckets: list[str],
    scorers: dict[str, Any],
    embeddings: np.ndarray,
) -> dict[str, dict[str, float]]:
    """Per reporting group: reward (per reward model) and the reward model's agreement with the ground truth on these
    samples, rule satisfaction, tic and politeness rates, and diversity (also among rule-satisfying samples only)."""
    from ..metrics import diversity_metrics
    from ..metrics.functions import em_dash_rate

    k = len(samples[0])
    rewards = reward_scores(rows, samples, scorers)
    truth = ground_truth(rows, samples)
    agreement = {name: on_policy_agreement(r, truth) for name, r in rewards.items()} if truth is not None else {}
    tic, polite = habit_rates(samples)
    emb = embeddings.reshape(len(rows), k, -1)
    within_all, within_good = within_prompt_diversity(samples, emb, truth)
    groups = group_indices(buckets, [r["topic"] for r in rows], [r.get("is_rare") for r in rows])
    results = {}
    for group, idx in groups.items():
        res = {"n_prompts": float(len(idx))}
        for name, r in rewards.items():
            res[f"reward/{name}"] = float(r[idx].mean())
            if name in agreement:
                agree, pairs = (a[idx].sum() for a in agreement[name])
                res[f"agreement/{name}"] = float(agree / pairs) if pairs else float("nan")
        if truth is not None:
            res["rule_satisfied"] = float(truth[idx].mean())
        res["tic_rate"] = float(tic[idx].mean())
        res["politeness_rate"] = float(polite[idx].mean())
        for metric in WITHIN_METRICS:
            res[f"within/{metric}"] = _mean(within_all[i][metric] for i in idx)
            res[f"within_satisfying/{metric}"] = _mean(within_good[i][metric] for i in idx if within_good[i])
        across = [samples[i][0] for i in idx]  # one sample per prompt: diversity across prompts
        if len(across) >= 2:
            for key, value in diversity_metrics(across, emb[idx, 0]).items():
                res[f"across/{key}"] = value
        res["em_dash_rate"] = em_dash_rate([c for i in idx for c in samples[i]])["em_dash_rate"]
        results[group] = res
    return results


def evaluate_reward_model(scorer, split, buckets: list[str]) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    """Held-out accuracy and Bradley-Terry loss of a reward model per group, and two counterfactual probes on the
    held-out responses: `tic_effect` (score with the tic minus without, same response) and `politeness_effect`
    (with " Thank you." appended minus without). Also returns the per-pair correctness and the group indices, for
    `paired_items`."""
    from .world import add_tic

    prompts = list(split["prompt"])
    chosen = np.asarray(scorer(prompts=prompts, completions=list(split["chosen"])))
    rejected = np.asarray(scorer(prompts=prompts, completions=list(split["rejected"])))
    margin = chosen - rejected
    correct, loss = (margin > 0).astype(float), np.logaddexp(0.0, -margin)
    both_prompts, both = prompts + prompts, list(split["chosen"]) + list(split["rejected"])
    tic_effect, polite_effect = counterfactual_effects(scorer, both_prompts, both, (add_tic, add_politeness))
    tic_effect, polite_effect = tic_effect.reshape(2, -1), polite_effect.reshape(2, -1)
    columns = split.column_names
    groups = group_indices(
        buckets,
        list(split["topic"]) if "topic" in columns else [None] * len(split),
        list(split["is_rare"]) if "is_rare" in columns else [None] * len(split),
    )
    stats = {
        g: {
            "accuracy": float(correct[idx].mean()),
            "loss": float(loss[idx].mean()),
            "n": float(len(idx)),
            "tic_effect": _mean(tic_effect[:, idx].ravel()),
            "politeness_effect": _mean(polite_effect[:, idx].ravel()),
        }
        for g, idx in groups.items()
    }
    return stats, {"correct": correct, "groups": groups}


def paired_items(first: dict[str, Any], second: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Two reward models on the same held-out pairs, paired by pair: per group, how many pairs only the first / only
    the second gets right (the discordant pairs), the accuracy difference, and the exact McNemar p-value."""
    from .stats import mcnemar_p

    out = {}
    for g, idx in first["groups"].items():
        a, b = first["correct"][idx], second["correct"][idx]
        only_first, only_second = int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum())
        out[g] = {
            "n": int(len(idx)),
            "only_first": only_first,
            "only_second": only_second,
            "difference": float((a - b).mean()),
            "p_value": mcnemar_p(only_first, only_second),
        }
    return out


def paired_prompts(
    first: dict[str, np.ndarray], second: dict[str, np.ndarray], groups: dict[str, list[int]]
) -> dict[str, dict[str, list[float]]]:
    """Two policies on the same held-out prompts, paired by prompt: per group and metric, each prompt's rate under
    the first minus under the second (the mean over its samples)."""
    return {
        g: {m: (first[m][idx] - second[m][idx]).tolist() for m in PAIRED_POLICY_METRICS if m in first}
        for g, idx in groups.items()
    }


def run_evaluation(args: EvaluateArguments) -> dict[str, Any]:
    """Sample every policy, score with every reward model and the ground truth, measure diversity; write JSON."""
    from datasets import load_from_disk

    from ..embedding import embed_prompts
    from ..eval_groups import _prompt_texts
    from ..index import DensityIndex
    from ..reward_model import RewardModelScorer

    split = load_from_disk(str(Path(args.data_dir) / "dataset"))[args.split]
    index = DensityIndex.load(args.density_index_path)
    rows = held_out_prompts(split, args.prompts_per_topic)
    pair_buckets = index.buckets_for(list(split["prompt_id"]), _prompt_texts(split))
    bucket_of = dict(zip(split["prompt_id"], pair_buckets))  # held-out prompts are a subset of the split's
    prompt_buckets = [bucket_of[r["prompt_id"]] for r in rows]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    scorers = {
        name: RewardModelScorer(path, max_length=args.max_length).to(device)
        for name, path in parse_named(args.reward_models).items()
    }
    results: dict[str, Any] = {
        "reward_models": {},
        "policies": {},
        "n_prompts": len(rows),
        "num_samples": args.num_samples,
    }
    items = {}
    for name, scorer in scorers.items():
        results["reward_models"][name], items[name] = evaluate_reward_model(scorer, split, pair_buckets)
    paired = {  # both RMs scored the same pairs: the item-paired comparisons
        f"{first}-{second}": paired_items(items[first], items[second])
        for first, second in PAIRED_REWARD_MODELS
        if {first, second} <= set(items)
    }
    if paired:
        results["paired_items"] = paired
    per_prompt: dict[str, dict[str, np.ndarray]] = {}
    for name, path in parse_named(args.policies).items():
        logger.info("evaluating policy %s (%s) on %d prompts x %d samples", name, path, len(rows), args.num_samples)
        samples = generate_samples(
            path,
            [r["prompt"] for r in rows],
            args.num_samples,
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            batch_size=args.batch_size,
            seed=args.seed,
            device=device,
        )
        embeddings = embed_prompts([c for g in samples for c in g], show_progress=False)
        results["policies"][name] = evaluate_policy(samples, rows, prompt_buckets, scorers, embeddings)
        truth = ground_truth(rows, samples)
        per_prompt[name] = {"tic_rate": habit_rates(samples)[0].mean(axis=1)}
        if truth is not None:
            per_prompt[name]["rule_satisfied"] = truth.mean(axis=1)
        results.setdefault("samples", {})[name] = [
            {"prompt": r["prompt"], "samples": s} for r, s in zip(rows[:5], samples[:5])
        ]
    groups = group_indices(prompt_buckets, [r["topic"] for r in rows], [r.get("is_rare") for r in rows])
    groups = {g: idx for g, idx in groups.items() if g in PAIRED_GROUPS}
    paired = {
        f"{x}-{y}": paired_prompts(per_prompt[x], per_prompt[y], groups)
        for x, y in PAIRED_POLICIES
        if {x, y} <= set(per_prompt)
    }
    if paired:
        results["paired_prompts"] = paired
    if "SFT" in results["policies"]:  # each reward model's agreement with the ground truth on the SFT policy's samples
        for rm, groups in results["reward_models"].items():
            for group, stats in groups.items():
                stats["on_policy_agreement"] = results["policies"]["SFT"].get(group, {}).get(f"agreement/{rm}")
    Path(args.output_file).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output_file).write_text(json.dumps(results, indent=2) + "\n")
    return results
