"""The metrics as plain functions over a list of texts, each returning a dict of floats or counts. The `evaluate`
modules next to this file wrap them (`load_metric(name).compute(predictions=...)`); callers that evaluate many small
sets call them directly, without `evaluate`'s per-call Arrow round trip."""

import gzip
import re
from collections.abc import Sequence

import numpy as np

from .text import gini, ngrams, token_counts, words


def em_dash_rate(predictions: Sequence[str]) -> dict[str, float]:
    """Em dashes (U+2014) and en dashes (U+2013) per 1,000 characters of the concatenated texts, and their count."""
    chars = sum(len(p) for p in predictions)
    dashes = sum(p.count("\u2014") + p.count("\u2013") for p in predictions)
    return {"em_dash_rate": 1000.0 * dashes / chars if chars else 0.0, "em_dash_count": dashes}


def token_gini(predictions: Sequence[str]) -> dict[str, float]:
    """Gini coefficient of token frequencies (0: every token equally frequent; near 1: collapse onto few tokens)."""
    return {"token_gini": gini(list(token_counts(predictions).values()))}


def distinct_n(predictions: Sequence[str], max_n: int = 3) -> dict[str, float]:
    """distinct-1..max_n (unique n-grams / all n-grams over the corpus) and the vocabulary ratio."""
    tokenized = [words(p) for p in predictions]
    out = {}
    for n in range(1, max_n + 1):
        grams = [g for tokens in tokenized for g in ngrams(tokens, n)]
        out[f"distinct_{n}"] = len(set(grams)) / len(grams) if grams else 0.0
    total = sum(len(t) for t in tokenized)
    out["vocab_ratio"] = len({w for t in tokenized for w in t}) / total if total else 0.0
    return out


def self_bleu(predictions: Sequence[str], max_references: int = 64) -> dict[str, float]:
    """Mean sacrebleu sentence BLEU of each text against (at most `max_references` of) the others."""
    from sacrebleu.metrics import BLEU

    predictions = list(predictions)
    if len(predictions) < 2:
        return {"self_bleu": 0.0}
    bleu = BLEU(effective_order=True)
    scores = []
    for i, hypothesis in enumerate(predictions):
        references = (predictions[:i] + predictions[i + 1 :])[
            :max_references
        ]  # a fixed cap keeps large sets tractable
        scores.append(bleu.sentence_score(hypothesis, references).score / 100.0)
    return {"self_bleu": sum(scores) / len(scores)}


def compression(predictions: Sequence[str], max_pairs: int = 2000) -> dict[str, float]:
    """Original bytes / gzip bytes of the space-joined texts, and the mean pairwise ROUGE-L F-measure over the first
    `max_pairs` pairs (the formulas of the `diversity` package, Shaib et al. 2024)."""
    from rouge_score import rouge_scorer

    predictions = list(predictions)
    data = " ".join(predictions).encode("utf-8")
    ratio = len(data) / len(gzip.compress(data, mtime=0)) if data else 0.0
    pairs = [(i, j) for i in range(len(predictions)) for j in range(i + 1, len(predictions))][:max_pairs]
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    hom = sum(scorer.score(predictions[i], predictions[j])["rougeL"].fmeasure for i, j in pairs)
    return {"compression_ratio": ratio, "homogenization_rougel": hom / len(pairs) if pairs else 0.0}


def embedding_diversity(
    predictions: Sequence[str], embeddings: np.ndarray | None = None, embedder: str | None = None
) -> dict[str, float]:
    """Mean pairwise cosine distance of the texts' embeddings (`embeddings`, or MiniLM's) and their Vendi score."""
    from vendi_score import vendi

    if len(predictions) < 2:
        return {"embedding_diversity": 0.0, "vendi_score": float(len(predictions))}
    if embeddings is None:
        from ..embedding import embed_prompts

        embeddings = embed_prompts(list(predictions), embedder, show_progress=False)
    x = np.asarray(embeddings, dtype=np.float64)
    x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    sim = x @ x.T
    n = len(x)
    mean_distance = float((1.0 - sim)[~np.eye(n, dtype=bool)].mean())
    return {"embedding_diversity": mean_distance, "vendi_score": float(vendi.score_X(x, normalize=False))}


STOCK_PATTERNS = {
    "not_just_but": r"\bnot just\b[^.!?]{1,80}?\bbut\b",
    "its_not_its": r"\bit'?s not\b[^.!?]{1,80}?[,;\u2014\u2013-]\s*it'?s\b",
    "not_only_but": r"\bnot only\b[^.!?]{1,80}?\bbut\b",
    "dive_in": r"\blet'?s dive in\b",
    "delve": r"\bdelv(?:e|es|ing)\b",
    "fast_paced": r"\bin today'?s fast[- ]paced\b",
    "worth_noting": r"\bit'?s worth noting\b",
    "testament": r"\ba testament to\b",
    "tapestry": r"\btapestry\b",
    "please_thank": r"\b(?:please|thank(?:s| you))\b",
}
_COMPILED = {name: re.compile(p, re.IGNORECASE) for name, p in STOCK_PATTERNS.items()}


def stock_patterns(predictions: Sequence[str]) -> dict[str, float]:
    """Counts of each stock phrasing of `STOCK_PATTERNS` (case-insensitive), their total and total per 1,000 words."""
    text = "\n".join(p.replace("\u2019", "'") for p in predictions)
    counts = {f"pattern_{name}": len(rx.findall(text)) for name, rx in _COMPILED.items()}
    total = sum(counts.values())
    n_words = len(words(text))
    return {
        **counts,
        "stock_patterns": total,
        "stock_patterns_per_1k_words": 1000.0 * total / n_words if n_words else 0.0,
    }
