"""Counts of stock phrasings that mark mode collapse, per 1,000 words and in total.

Patterns (case-insensitive): "not just X but (also) Y", "it's not X, it's Y", "not only X but (also) Y",
"let's dive in", "delve", "in today's fast-paced", "it's worth noting", "a testament to", "tapestry", and the
politeness habit "please" / "thank(s|you)" that a reward model can reward regardless of content.
"""

import re

import evaluate

from density_rlhf.metrics.text import text_metric_info, words


PATTERNS = {
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
_COMPILED = {name: re.compile(p, re.IGNORECASE) for name, p in PATTERNS.items()}


class StockPatterns(evaluate.Metric):
    def _info(self):
        return text_metric_info(__doc__)

    def _compute(self, predictions):
        text = "\n".join(p.replace("\u2019", "'") for p in predictions)
        counts = {f"pattern_{name}": len(rx.findall(text)) for name, rx in _COMPILED.items()}
        total = sum(counts.values())
        n_words = len(words(text))
        return {
            **counts,
            "stock_patterns": total,
            "stock_patterns_per_1k_words": 1000.0 * total / n_words if n_words else 0.0,
        }
