"""Em- and en-dash rate: dashes (— and –) per 1,000 characters."""

import evaluate

from density_rlhf.metrics import functions
from density_rlhf.metrics.text import text_metric_info


_DESCRIPTION = "Em dashes (U+2014) and en dashes (U+2013) per 1,000 characters of the concatenated predictions."


class EmDashRate(evaluate.Metric):
    def _info(self):
        return text_metric_info(_DESCRIPTION)

    def _compute(self, predictions):
        return functions.em_dash_rate(predictions)
