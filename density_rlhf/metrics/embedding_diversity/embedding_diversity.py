"""Embedding diversity: mean pairwise cosine distance of MiniLM embeddings, and the Vendi score (vendi-score)."""

import evaluate
import numpy as np

from density_rlhf.metrics.text import text_metric_info


class EmbeddingDiversity(evaluate.Metric):
    def _info(self):
        return text_metric_info(__doc__, "Friedman & Dieng 2023, The Vendi Score")

    def _compute(self, predictions, embeddings=None, embedder=None):
        from vendi_score import vendi

        if len(predictions) < 2:
            return {"embedding_diversity": 0.0, "vendi_score": float(len(predictions))}
        if embeddings is None:
            from density_rlhf.embedding import embed_prompts

            embeddings = embed_prompts(predictions, embedder, show_progress=False)
        x = np.asarray(embeddings, dtype=np.float64)
        x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        sim = x @ x.T
        n = len(x)
        mean_distance = float((1.0 - sim)[~np.eye(n, dtype=bool)].mean())
        return {"embedding_diversity": mean_distance, "vendi_score": float(vendi.score_X(x, normalize=False))}
