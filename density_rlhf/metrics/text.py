"""Tokenization and formulas shared by the metric modules."""

import re
from collections import Counter


_WORD = re.compile(r"\b\w+\b")


def words(text: str) -> list[str]:
    """Lower-cased word tokens: the runs of word characters."""
    return _WORD.findall(text.lower())


def gini(counts: list[int]) -> float:
    """Gini coefficient of frequencies: 0 when all tokens are equally frequent, (m-1)/m when one token takes all."""
    x = sorted(counts)
    m, total = len(x), sum(x)
    if m == 0 or total == 0:
        return 0.0
    return sum((2 * i - m - 1) * v for i, v in enumerate(x, start=1)) / (m * total)


def ngrams(tokens: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def token_counts(texts: list[str]) -> Counter:
    return Counter(t for text in texts for t in words(text))


def text_metric_info(description: str, citation: str = ""):
    """`evaluate.MetricInfo` of a metric over a list of strings (`predictions`)."""
    import datasets
    import evaluate

    return evaluate.MetricInfo(
        description=description,
        citation=citation,
        inputs_description="predictions: list of str",
        features=datasets.Features({"predictions": datasets.Value("string")}),
    )
