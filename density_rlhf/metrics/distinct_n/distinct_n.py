"""distinct-1/2/3 (unique n-grams / all n-grams over the corpus) and the vocabulary ratio (unique / total tokens)."""

import evaluate

from density_rlhf.metrics import functions
from density_rlhf.metrics.text import text_metric_info


class DistinctN(evaluate.Metric):
    def _info(self):
        return text_metric_info(
            __doc__, "Li et al. 2016, A Diversity-Promoting Objective Function for Neural Conversation Models"
        )

    def _compute(self, predictions, max_n: int = 3):
        return functions.distinct_n(predictions, max_n)
