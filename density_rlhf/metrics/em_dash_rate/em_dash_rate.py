"""Em- and en-dash rate: dashes (— and –) per 1,000 characters."""

import evaluate

from density_rlhf.metrics.text import text_metric_info


_DESCRIPTION = "Em dashes (U+2014) and en dashes (U+2013) per 1,000 characters of the concatenated predictions."


class EmDashRate(evaluate.Metric):
    def _info(self):
        return text_metric_info(_DESCRIPTION)

    def _compute(self, predictions):
        chars = sum(len(p) for p in predictions)
        dashes = sum(p.count("\u2014") + p.count("\u2013") for p in predictions)
        return {"em_dash_rate": 1000.0 * dashes / chars if chars else 0.0, "em_dash_count": dashes}
