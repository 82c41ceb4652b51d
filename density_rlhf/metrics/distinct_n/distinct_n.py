"""distinct-1/2/3 (unique n-grams / all n-grams over the corpus) and the vocabulary ratio (unique / total tokens)."""

import evaluate

from density_rlhf.metrics.text import ngrams, text_metric_info, words


class DistinctN(evaluate.Metric):
    def _info(self):
        return text_metric_info(
            __doc__, "Li et al. 2016, A Diversity-Promoting Objective Function for Neural Conversation Models"
        )

    def _compute(self, predictions, max_n: int = 3):
        tokenized = [words(p) for p in predictions]
        out = {}
        for n in range(1, max_n + 1):
            grams = [g for tokens in tokenized for g in ngrams(tokens, n)]
            out[f"distinct_{n}"] = len(set(grams)) / len(grams) if grams else 0.0
        total = sum(len(t) for t in tokenized)
        out["vocab_ratio"] = len({w for t in tokenized for w in t}) / total if total else 0.0
        return out
