"""Diversity and artifact metrics as `evaluate` modules that load from this package, never from the Hub.

>>> from density_rlhf.metrics import load_metric
>>> load_metric("distinct_n").compute(predictions=["a b", "a c"])
"""

from pathlib import Path
from typing import Any

import numpy as np


METRICS = (
    "em_dash_rate",
    "token_gini",
    "distinct_n",
    "self_bleu",
    "compression",
    "embedding_diversity",
    "stock_patterns",
)
_DIR = Path(__file__).resolve().parent
_CACHE: dict[str, Any] = {}


def load_metric(name: str):
    """`evaluate.load` on the module shipped in `density_rlhf/metrics/<name>/`."""
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; available: {METRICS}")
    if name not in _CACHE:
        import evaluate

        _CACHE[name] = evaluate.load(str(_DIR / name))
    return _CACHE[name]


def diversity_metrics(
    texts: list[str], embeddings: np.ndarray | None = None, *, self_bleu: bool = True
) -> dict[str, float]:
    """Every metric on one set of texts; pass `embeddings` (aligned with `texts`) to skip embedding them again."""
    from . import functions

    out: dict[str, float] = {}
    for name in METRICS:
        if name == "self_bleu" and not self_bleu:
            continue
        kwargs = {"embeddings": embeddings} if name == "embedding_diversity" else {}
        out.update(getattr(functions, name)(list(texts), **kwargs))
    return {k: float(v) for k, v in out.items()}
