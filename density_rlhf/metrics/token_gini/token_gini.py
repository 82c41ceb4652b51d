"""Gini coefficient of token frequencies (0 = every token equally frequent; near 1 = collapse onto few tokens)."""

import evaluate

from density_rlhf.metrics import functions
from density_rlhf.metrics.text import text_metric_info


class TokenGini(evaluate.Metric):
    def _info(self):
        return text_metric_info(__doc__)

    def _compute(self, predictions):
        return functions.token_gini(predictions)
