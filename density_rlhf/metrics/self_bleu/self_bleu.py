"""Self-BLEU (sacrebleu): mean BLEU of each prediction against all the others; higher = more repetitive."""

import evaluate

from density_rlhf.metrics import functions
from density_rlhf.metrics.text import text_metric_info


class SelfBleu(evaluate.Metric):
    def _info(self):
        return text_metric_info(__doc__, "Zhu et al. 2018, Texygen")

    def _compute(self, predictions, max_references: int = 64):
        return functions.self_bleu(predictions, max_references)
