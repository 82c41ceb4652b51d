"""Prompt selection by reward signal: a reward history per prompt, and rules that turn it into sampling factors.

A GRPO group whose completions all get the same reward has zero advantage: it costs a generation and teaches nothing.
`RewardHistory` keeps, per prompt (the rows of one prompt share it), what its groups scored; `SelectionRules` turns
that into a factor per row that multiplies the density (or cluster, or uniform) weights of a `DensityRepeatSampler`, which draws each generation chunk
from the history known when the chunk is needed:

- `zero_variance_skip`: a row whose last groups all had zero variance is drawn with factor (1 - rate)^streak, never
  below `zero_variance_floor` (GRESO's probabilistic skipping, arXiv 2506.02177; the floor lets it come back);
- `learnability`: factor p(1 - p) / 0.25, with p the posterior mean pass rate of a Beta(a, b) prior updated by the
  rewards in [0, 1] (arXiv 2502.12272); `reward_std` uses the mean within-group reward spread instead (continuous
  rewards), relative to the largest seen; unseen rows get the prior's factor;
- a pass-rate band: rows whose posterior pass rate, after `pass_rate_min_groups` groups, lies above `pass_rate_max`
  (or below `pass_rate_min`) get factor 0 (open-instruct's `no_resampling_pass_rate`).

The product is bounded as the density weights are (`max_weight_ratio` among the rows left, then `target_ess`).
"""

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .estimators import bounded_log_weights


LEARNABILITY = ("off", "pass_rate", "reward_std")


@dataclass(frozen=True)
class SelectionRules:
    """Settings of the reward-signal rules; every rule is off by default (today's draws exactly)."""

    zero_variance_skip: float = field(
        default=0.0, metadata={"help": "Skip rate per zero-variance group in a row's streak (0: off)."}
    )
    zero_variance_floor: float = field(
        default=0.05, metadata={"help": "Lowest factor a zero-variance streak can reach (exploration floor)."}
    )
    learnability: str = field(default="off", metadata={"help": f"One of {LEARNABILITY}."})
    learnability_prior: tuple[float, float] = field(
        default=(1.0, 1.0), metadata={"help": "Beta(a, b) prior of the pass rate."}
    )
    pass_rate_max: float | None = field(
        default=None, metadata={"help": "Stop drawing rows whose pass rate is above this (None: no upper band)."}
    )
    pass_rate_min: float | None = field(
        default=None, metadata={"help": "Stop drawing rows whose pass rate is below this (None: no lower band)."}
    )
    pass_rate_min_groups: int = field(
        default=2, metadata={"help": "Groups a row needs before the pass-rate band applies to it."}
    )

    def __post_init__(self):
        object.__setattr__(self, "learnability_prior", tuple(float(v) for v in self.learnability_prior))
        if len(self.learnability_prior) != 2:
            raise ValueError(f"learnability_prior must be two numbers (a, b), got {self.learnability_prior}.")
        if not 0.0 <= self.zero_variance_skip < 1.0:
            raise ValueError(f"zero_variance_skip must be in [0, 1), got {self.zero_variance_skip}.")
        if not 0.0 < self.zero_variance_floor <= 1.0:
            raise ValueError(
                f"zero_variance_floor must be in (0, 1] (0 would skip a prompt for good), got {self.zero_variance_floor}."
            )
        if self.learnability not in LEARNABILITY:
            raise ValueError(f"learnability must be one of {LEARNABILITY}, got {self.learnability!r}.")
        a, b = self.learnability_prior
        if not (a > 0 and b > 0):
            raise ValueError(
                f"learnability_prior must be two numbers > 0 (a Beta prior), got {self.learnability_prior}."
            )
        for name in ("pass_rate_max", "pass_rate_min"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}.")
        if (
            self.pass_rate_min is not None
            and self.pass_rate_max is not None
            and self.pass_rate_min >= self.pass_rate_max
        ):
            raise ValueError(
                f"pass_rate_min ({self.pass_rate_min}) must be below pass_rate_max ({self.pass_rate_max}): the band "
                "would leave no row."
            )
        if self.pass_rate_min_groups < 1:
            raise ValueError(f"pass_rate_min_groups must be >= 1, got {self.pass_rate_min_groups}.")

    @property
    def active_rules(self) -> tuple[str, ...]:
        """The names of the rules that are on."""
        on = {
            "zero_variance_skip": bool(self.zero_variance_skip),
            "learnability": self.learnability != "off",
            "pass_rate_max": self.pass_rate_max is not None,
            "pass_rate_min": self.pass_rate_min is not None,
        }
        return tuple(name for name, is_on in on.items() if is_on)

    @property
    def active(self) -> bool:
        return bool(self.active_rules)


def zero_variance_groups(rewards: Any) -> np.ndarray:
    """Whether each group (a row of `rewards`; NaN: not scored) had zero reward variance, as TRL's
    `frac_reward_zero_std` counts it; a group with fewer than two scored completions did not."""
    rewards = np.atleast_2d(np.asarray(rewards, dtype=np.float64))
    spread = np.nanmax(rewards, axis=1, initial=-np.inf) - np.nanmin(rewards, axis=1, initial=np.inf)
    return ((~np.isnan(rewards)).sum(axis=1) > 1) & (spread == 0)


class RewardHistory:
    """What each dataset row's generation groups scored: groups, completions, rewards summed, successes (each reward
    clipped to [0, 1], for the pass rate), within-group spread summed, and the current streak of zero-variance groups.
    Identical on every rank when it is fed the gathered rewards."""

    def __init__(self, num_rows: int):
        self.num_rows = int(num_rows)
        self.groups = np.zeros(self.num_rows, dtype=np.int64)
        self.completions = np.zeros(self.num_rows, dtype=np.int64)
        self.reward_sum = np.zeros(self.num_rows)
        self.success_sum = np.zeros(self.num_rows)
        self.std_sum = np.zeros(self.num_rows)
        self.streak = np.zeros(self.num_rows, dtype=np.int64)
        self.version = 0  # counts the changes, so the weights drawn from the history are computed once per change

    def record(self, rows: Any, rewards: Any) -> None:
        """Add one group per entry of `rows`: `rewards[i]` are the rewards of row `rows[i]`'s completions (NaN: not
        scored, left out). A group with fewer than two scored completions says nothing about variance."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        rewards = np.asarray(rewards, dtype=np.float64).reshape(len(rows), -1)
        if rows.size and (rows.min() < 0 or rows.max() >= self.num_rows):
            raise ValueError(f"rows must be in [0, {self.num_rows}), got {rows.min()}..{rows.max()}.")
        zero = zero_variance_groups(rewards)
        for row, values, is_zero in zip(rows.tolist(), rewards, zero):
            values = values[~np.isnan(values)]
            if values.size == 0:
                continue
            self.groups[row] += 1
            self.completions[row] += values.size
            self.reward_sum[row] += values.sum()
            self.success_sum[row] += np.clip(values, 0.0, 1.0).sum()
            if values.size > 1:
                self.std_sum[row] += float(values.std())
                self.streak[row] = self.streak[row] + 1 if is_zero else 0
        self.version += 1

    def pass_rate(self, prior: tuple[float, float]) -> np.ndarray:
        """Posterior mean pass rate per row: (a + successes) / (a + b + completions), each reward clipped to [0, 1]
        (meant for 0/1 rewards; `learnability: reward_std` suits continuous ones)."""
        a, b = prior
        return (a + self.success_sum) / (a + b + self.completions)

    def state_dict(self) -> dict[str, Any]:
        seen = np.flatnonzero(self.groups)
        return {
            "num_rows": self.num_rows,
            "rows": seen.tolist(),
            **{name: getattr(self, name)[seen].tolist() for name in self._ARRAYS},
        }

    _ARRAYS = ("groups", "completions", "reward_sum", "success_sum", "std_sum", "streak")

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["num_rows"] != self.num_rows:
            raise ValueError(f"reward history of {state['num_rows']} rows, this sampler has {self.num_rows}.")
        rows = np.asarray(state["rows"], dtype=np.int64)
        for name in self._ARRAYS:
            array = getattr(self, name)
            array[:] = 0
            array[rows] = np.asarray(state[name], dtype=array.dtype)
        self.version += 1


def rule_factors(rules: SelectionRules, history: RewardHistory) -> dict[str, np.ndarray]:
    """Each active rule's factor per row (1 = unchanged)."""
    factors = {}
    if rules.zero_variance_skip:
        factors["zero_variance_skip"] = np.maximum(
            rules.zero_variance_floor, (1.0 - rules.zero_variance_skip) ** history.streak
        )
    if rules.learnability == "pass_rate":
        p = history.pass_rate(rules.learnability_prior)
        factors["learnability"] = p * (1.0 - p) / 0.25
    elif rules.learnability == "reward_std":
        seen = history.groups > 0
        spread = np.divide(history.std_sum, np.maximum(history.groups, 1))
        top = spread[seen].max() if seen.any() and spread[seen].max() > 0 else 1.0
        # unseen rows: the spread of an even split of 0/1 rewards relative to the top, at most 1 (the prior)
        factors["learnability"] = np.where(seen, spread / top, 1.0)
    if rules.pass_rate_max is not None or rules.pass_rate_min is not None:
        p = history.pass_rate(rules.learnability_prior)
        judged = history.groups >= rules.pass_rate_min_groups
        out = np.zeros(history.num_rows, dtype=bool)
        if rules.pass_rate_max is not None:
            out |= judged & (p > rules.pass_rate_max)
        if rules.pass_rate_min is not None:
            out |= judged & (p < rules.pass_rate_min)
        factors["pass_rate_band"] = np.where(out, 0.0, 1.0)
    return factors


def bound_product(
    weights: np.ndarray, max_weight_ratio: float | None, target_ess: float | None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Normalized `weights` bounded as density weights are (`density_rlhf.estimators.bounded_log_weights`): among
    the rows left (weight > 0), the product is tempered until max/min <= `max_weight_ratio` and capped until ESS >=
    `target_ess` of them. Returns the probabilities and the bounds' statistics (`mass_moved`, ...)."""
    w = np.asarray(weights, dtype=np.float64)
    if not (w >= 0).all() or not np.isfinite(w).all() or w.sum() <= 0:
        raise ValueError(
            "the selection rules left no prompt to draw: the pass-rate band excludes every one (all solved above "
            "pass_rate_max, or below pass_rate_min); widen the band, or stop training."
        )
    live = w > 0
    log_w, stats = bounded_log_weights(-np.log(w[live]), 1.0, max_weight_ratio=max_weight_ratio, target_ess=target_ess)
    p = np.zeros_like(w)
    p[live] = np.exp(log_w - np.logaddexp.reduce(log_w))
    return p, stats
