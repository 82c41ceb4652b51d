"""Compression ratio (gzip size reduction of the joined texts) and ROUGE-L homogenization.

Both follow the `diversity` package (Shaib et al. 2024, "Standardizing the Measurement of Text Diversity"): the
compression ratio is original bytes / gzip bytes of the space-joined corpus, homogenization is the mean pairwise
ROUGE-L F-measure. We reimplement these two formulas because `diversity` 0.2 imports spaCy (and needs a spaCy
language model) at package import, which an offline install cannot provide; ROUGE-L comes from `rouge-score`, the
library `diversity` itself uses.
"""

import evaluate

from density_rlhf.metrics import functions
from density_rlhf.metrics.text import text_metric_info


class Compression(evaluate.Metric):
    def _info(self):
        return text_metric_info(__doc__, "Shaib et al. 2024, arXiv:2403.00553")

    def _compute(self, predictions, max_pairs: int = 2000):
        return functions.compression(predictions, max_pairs)
