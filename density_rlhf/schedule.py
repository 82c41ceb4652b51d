"""Adaptive density: an alpha schedule over epochs and a training-signal hook, for any density sampler.

A schedule eases into the density weights (alpha 0 = uniform, then up), and `update()` lets a curriculum re-weight
rows by a training signal (e.g. per-prompt reward variance) on top of density, in the spirit of verl's
`AbstractCurriculumSampler`.

Each epoch's weights are a pure function of the schedule, the epoch and the signal recorded so far, so a resumed run
(the signal travels in the sampler state) replays the same draws.
"""

import hashlib
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .estimators import bounded_weights
from .row_weights import rows_from_prompt_weights


SCHEDULES = ("constant", "linear", "cosine")


@dataclass(frozen=True)
class AlphaSchedule:
    """alpha per epoch: `constant` (alpha0), or `linear` / `cosine` from `alpha0` at epoch 0 to `alpha1` at epoch
    `num_epochs - 1`, and `alpha1` after that.

    Args:
        kind: `constant`, `linear` or `cosine`.
        alpha0: alpha at the first epoch.
        alpha1: alpha at the end of the schedule (ignored by `constant`).
        num_epochs: epochs the schedule spans.
    """

    kind: str = "constant"
    alpha0: float = 1.0
    alpha1: float = 1.0
    num_epochs: int = 1

    def __post_init__(self):
        if self.kind not in SCHEDULES:
            raise ValueError(f"alpha schedule must be one of {SCHEDULES}, got {self.kind!r}.")
        for name in ("alpha0", "alpha1"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value}.")
        if self.num_epochs < 1:
            raise ValueError(f"num_epochs must be >= 1, got {self.num_epochs}.")

    def __call__(self, epoch: int) -> float:
        if self.kind == "constant":
            return self.alpha0
        t = 1.0 if self.num_epochs == 1 else min(1.0, max(0, epoch) / (self.num_epochs - 1))
        if self.kind == "cosine":
            t = (1.0 - math.cos(math.pi * t)) / 2.0
        return self.alpha0 + (self.alpha1 - self.alpha0) * t


class ScheduledWeights:
    """Row weights of epoch e: density^-alpha(e) per prompt (within `max_weight_ratio` and `target_ess`, mixed with
    uniform by `uniform_mix`), mapped to rows like `map_prompt_weights`, times the training signal of `update()`.

    Args:
        prompt_log_density: log density of every indexed prompt (`DensityIndex.log_density`).
        prompt_index: index of each row's prompt in that array, -1 for rows the index does not know (they get the
            mean prompt weight).
        schedule: the alpha schedule.
        max_weight_ratio / target_ess / uniform_mix: as in `DensityIndex.build`, applied at every epoch.
        pair_weighting: `per_pair` or `per_prompt`, as in `map_prompt_weights`.
    """

    def __init__(
        self,
        prompt_log_density: np.ndarray,
        prompt_index: np.ndarray,
        schedule: AlphaSchedule,
        *,
        max_weight_ratio: float | None = None,
        target_ess: float | None = None,
        uniform_mix: float = 0.0,
        pair_weighting: str = "per_pair",
    ):
        self.log_density = np.asarray(prompt_log_density, dtype=np.float64)
        if not np.isfinite(self.log_density).all():
            raise ValueError("prompt_log_density has NaN or infinite values; rebuild the density index.")
        self.prompt_index = np.asarray(prompt_index, dtype=np.int64)
        if self.prompt_index.max(initial=-1) >= len(self.log_density):
            raise ValueError("prompt_index points past the index's prompts: the index does not match the dataset.")
        self.schedule = schedule
        self.max_weight_ratio = max_weight_ratio
        self.target_ess = target_ess
        self.bound_stats: dict = {}  # of the epoch drawn last
        self.uniform_mix = float(uniform_mix)
        self.pair_weighting = pair_weighting
        self.signal = np.ones(len(self.prompt_index))

    def __len__(self) -> int:
        return len(self.prompt_index)

    def weights(self, epoch: int, signal: np.ndarray | None = None) -> np.ndarray:
        """Normalized row weights at `epoch`, with `signal` (default: the one recorded so far)."""
        prompt_weights, self.bound_stats = bounded_weights(
            self.log_density,
            self.schedule(epoch),
            max_weight_ratio=self.max_weight_ratio,
            target_ess=self.target_ess,
            uniform_mix=self.uniform_mix,
        )
        signal = self.signal if signal is None else signal
        rows = rows_from_prompt_weights(prompt_weights, self.prompt_index, self.pair_weighting) * signal
        total = rows.sum()
        if not total > 0:
            raise ValueError("the training signal set every row's weight to 0; nothing could be drawn.")
        return rows / total

    def update(self, rows: Any, values: Any) -> None:
        """Multiply the weights of `rows` by `values` (>= 0, finite) from the next epoch on; 1 leaves a row as is."""
        rows, values = self._checked(rows, values)
        self.signal[rows] = values

    def dense_signal(self, sparse: dict[str, list] | None) -> np.ndarray:
        """A signal from its sparse form (`sparse_signal`), checked like `update`; `None` is all ones."""
        signal = np.ones(len(self))
        if sparse:
            rows, values = self._checked(sparse["rows"], sparse["values"])
            signal[rows] = values
        return signal

    @staticmethod
    def sparse_signal(signal: np.ndarray) -> dict[str, list]:
        """The rows whose factor is not 1, and their factors (JSON for the sampler state)."""
        changed = np.flatnonzero(signal != 1.0)
        return {"rows": changed.tolist(), "values": signal[changed].tolist()}

    def _checked(self, rows: Any, values: Any) -> tuple[np.ndarray, np.ndarray]:
        rows = np.asarray(rows, dtype=np.int64)
        values = np.asarray(values, dtype=np.float64)
        if rows.shape != values.shape:
            raise ValueError(f"update got {rows.shape[0]} rows but {values.shape[0]} values.")
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            raise ValueError(f"update rows must lie in [0, {len(self)}).")
        if not (np.isfinite(values).all() and (values >= 0).all()):
            raise ValueError("update values must be finite and >= 0 (they multiply sampling weights).")
        return rows, values

    def fingerprint(self) -> str:
        """Identity of the data and index (not of the epoch or the signal), for checkpoint checks."""
        digest = hashlib.sha256(self.log_density.tobytes())
        digest.update(self.prompt_index.tobytes())
        digest.update(
            repr(
                (self.schedule, self.max_weight_ratio, self.target_ess, self.uniform_mix, self.pair_weighting)
            ).encode()
        )
        return digest.hexdigest()[:16]
