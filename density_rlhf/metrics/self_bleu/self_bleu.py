"""Self-BLEU (sacrebleu): mean BLEU of each prediction against all the others; higher = more repetitive."""

import evaluate

from density_rlhf.metrics.text import text_metric_info


class SelfBleu(evaluate.Metric):
    def _info(self):
        return text_metric_info(__doc__, "Zhu et al. 2018, Texygen")

    def _compute(self, predictions, max_references: int = 64):
        from sacrebleu.metrics import BLEU

        bleu = BLEU(effective_order=True)
        if len(predictions) < 2:
            return {"self_bleu": 0.0}
        scores = []
        for i, hypothesis in enumerate(predictions):
            others = predictions[:i] + predictions[i + 1 :]
            references = others[:max_references]  # a fixed, deterministic cap keeps large sets tractable
            scores.append(bleu.sentence_score(hypothesis, references).score / 100.0)
        return {"self_bleu": sum(scores) / len(scores)}
