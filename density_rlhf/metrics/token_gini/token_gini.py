"""Gini coefficient of token frequencies (0 = every token equally frequent; near 1 = collapse onto few tokens)."""

import evaluate

from density_rlhf.metrics.text import gini, text_metric_info, token_counts


class TokenGini(evaluate.Metric):
    def _info(self):
        return text_metric_info(__doc__)

    def _compute(self, predictions):
        return {"token_gini": gini(list(token_counts(predictions).values()))}
