"""Per-row sampling weights from per-prompt weights: the pair -> weight mapping shared by the samplers and the alpha
schedule."""

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np


logger = logging.getLogger(__name__)

PAIR_WEIGHTINGS = ("per_pair", "per_prompt")
MISSING_POLICIES = ("error", "uniform")


def map_prompt_weights(
    row_prompt_ids: Any,
    index_prompt_ids: Sequence[str],
    index_weights: np.ndarray,
    *,
    pair_weighting: str = "per_pair",
    missing: str = "error",
) -> tuple[np.ndarray, np.ndarray]:
    """Per-row weights from per-prompt weights, vectorized with Arrow (no Python loop over rows).

    Args:
        row_prompt_ids: the dataset's prompt id column (Arrow array, list or numpy array of str).
        index_prompt_ids / index_weights: the index's prompt ids and weights.
        pair_weighting: `per_pair` gives every pair its prompt's weight; `per_prompt` splits a
            prompt's weight evenly across its pairs, so a prompt's total mass does not grow with its pair count.
        missing: `error` raises for rows whose prompt id is not in the index; `uniform` gives them the mean prompt
            weight and counts them.

    Returns:
        `(row_weights, prompt_index)`, with `prompt_index[i] = -1` for rows not found in the index.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    if pair_weighting not in PAIR_WEIGHTINGS:
        raise ValueError(f"pair_weighting must be one of {PAIR_WEIGHTINGS}, got {pair_weighting!r}.")
    if missing not in MISSING_POLICIES:
        raise ValueError(f"missing must be one of {MISSING_POLICIES}, got {missing!r}.")
    index_weights = np.asarray(index_weights, dtype=np.float64)
    if len(index_prompt_ids) != len(index_weights):
        raise ValueError("index prompt ids and weights have different lengths.")
    rows = row_prompt_ids if isinstance(row_prompt_ids, (pa.Array, pa.ChunkedArray)) else pa.array(row_prompt_ids)
    positions = pc.index_in(rows, value_set=pa.array(list(index_prompt_ids), type=rows.type))
    prompt_index = np.asarray(pc.fill_null(positions, -1).to_numpy(zero_copy_only=False), dtype=np.int64)
    found = prompt_index >= 0
    n_missing = int((~found).sum())
    if n_missing and missing == "error":
        examples = pc.filter(rows, pa.array(~found)).slice(0, 3).to_pylist()
        raise ValueError(
            f"{n_missing} of {len(prompt_index)} rows have a prompt id missing from the density index "
            f"(e.g. {examples}). Rebuild the index on this dataset, or give them the mean prompt weight with "
            "`density_missing: uniform` in the trainer config (`missing='uniform'` here)."
        )
    row_weights = rows_from_prompt_weights(index_weights, prompt_index, pair_weighting)
    if n_missing:
        logger.warning("%d rows have no prompt id in the density index; they get the mean prompt weight", n_missing)
    return row_weights, prompt_index


def rows_from_prompt_weights(prompt_weights: np.ndarray, prompt_index: np.ndarray, pair_weighting: str) -> np.ndarray:
    """Per-row weights from per-prompt weights (`prompt_index[i] = -1`: the mean prompt weight), see
    `map_prompt_weights`."""
    found = prompt_index >= 0
    row_weights = np.where(found, prompt_weights[np.maximum(prompt_index, 0)], prompt_weights.mean())
    if pair_weighting == "per_prompt":
        counts = np.bincount(prompt_index[found], minlength=len(prompt_weights))
        row_weights[found] /= counts[prompt_index[found]]
    return row_weights
