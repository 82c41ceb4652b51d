"""Counts of stock phrasings that mark mode collapse, per 1,000 words and in total.

Patterns (case-insensitive): "not just X but (also) Y", "it's not X, it's Y", "not only X but (also) Y",
"let's dive in", "delve", "in today's fast-paced", "it's worth noting", "a testament to", "tapestry", and the
politeness habit "please" / "thank(s|you)" that a reward model can reward regardless of content.
"""

import evaluate

from density_rlhf.metrics import functions
from density_rlhf.metrics.text import text_metric_info


PATTERNS = functions.STOCK_PATTERNS


class StockPatterns(evaluate.Metric):
    def _info(self):
        return text_metric_info(__doc__)

    def _compute(self, predictions):
        return functions.stock_patterns(predictions)
