"""Embedding diversity: mean pairwise cosine distance of MiniLM embeddings, and the Vendi score (vendi-score)."""

import evaluate

from density_rlhf.metrics import functions
from density_rlhf.metrics.text import text_metric_info


class EmbeddingDiversity(evaluate.Metric):
    def _info(self):
        return text_metric_info(__doc__, "Friedman & Dieng 2023, The Vendi Score")

    def _compute(self, predictions, embeddings=None, embedder=None):
        return functions.embedding_diversity(predictions, embeddings, embedder)
