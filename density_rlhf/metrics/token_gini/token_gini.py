"""Gini coefficient of token frequencies (0 = every token equally frequent; near 1 = collapse onto few tokens)."""

import datasets
import evaluate

from density_rlhf.metrics.text import gini, token_counts


class TokenGini(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=__doc__, citation="", inputs_description="predictions: list of str",
            features=datasets.Features({"predictions": datasets.Value("string")}),
        )  # fmt: skip

    def _compute(self, predictions):
        return {"token_gini": gini(list(token_counts(predictions).values()))}
