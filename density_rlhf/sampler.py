"""Samplers that draw dataset rows with probability proportional to a per-row weight.

Both samplers are pure functions of `(seed, epoch)`: every rank builds the same sequence, so accelerate's batch
sharding hands the ranks disjoint slices of one global draw, and a resumed run that skips the first batches of an
epoch sees exactly the batches an uninterrupted run would have seen.
"""

import dataclasses
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import Sampler

from .row_weights import map_prompt_weights
from .selection import RewardHistory, SelectionRules, bound_product, rule_factors


if TYPE_CHECKING:
    from .index import DensityIndex
    from .schedule import AlphaSchedule

logger = logging.getLogger(__name__)


def validate_weights(weights: Any) -> np.ndarray:
    """Float64 copy of `weights` normalized to sum to 1; `ValueError` unless 1-D, finite, >= 0 and not all zero."""
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1:
        raise ValueError(f"weights must be 1-D, one per dataset row; got shape {w.shape}.")
    if w.size == 0:
        raise ValueError("weights are empty: the dataset has no rows to sample.")
    if not np.isfinite(w).all():
        bad = np.flatnonzero(~np.isfinite(w))
        raise ValueError(f"weights contain {bad.size} NaN or infinite values (first at rows {bad[:5].tolist()}).")
    if (w < 0).any():
        bad = np.flatnonzero(w < 0)
        raise ValueError(f"weights contain {bad.size} negative values (first at rows {bad[:5].tolist()}).")
    total = w.sum()
    if total <= 0:
        raise ValueError("weights are all zero: nothing can be sampled.")
    return w / total


def _weights_fingerprint(w: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(w, dtype=np.float64).tobytes()).hexdigest()[:16]


class DensitySampler(Sampler[int]):
    """Draws `num_samples` row indices per epoch, with replacement, with probability ∝ `weights`.

    Args:
        weights: one non-negative weight per dataset row (normalized internally), or a
            [`~density_rlhf.schedule.ScheduledWeights`] whose weights change per epoch (an alpha schedule) and with
            `update()` (a training signal).
        num_samples: draws per epoch; defaults to the number of rows.
        seed: the draw of epoch e is a pure function of `(seed, e)` (and of the schedule's state).

    Example:
    ```python
    >>> sampler = DensitySampler.from_index(DensityIndex.load("outputs/density"), train_dataset)
    >>> loader = DataLoader(train_dataset, batch_size=8, sampler=sampler)
    ```
    """

    def __init__(self, weights: Any, num_samples: int | None = None, seed: int = 0, *, log_summary: bool = True):
        from .schedule import ScheduledWeights

        self.scheduled = weights if isinstance(weights, ScheduledWeights) else None
        # the signal the current epoch was drawn with (updates wait for the next epoch)
        self._epoch_signal = self.scheduled.signal.copy() if self.scheduled else None
        self.weights = validate_weights(self.scheduled.weights(0) if self.scheduled else weights)
        self.num_samples = len(self.weights) if num_samples is None else int(num_samples)
        if self.num_samples <= 0:
            raise ValueError(f"num_samples must be positive, got {num_samples}.")
        self.seed = int(seed)
        self.epoch = 0
        self.num_missing = 0
        self._bucket_codes: np.ndarray | None = None  # int8 per row, set by `from_index`; -1 = not in the index
        self._bucket_names: tuple[str, ...] = ()
        self.bound_stats: dict[str, Any] | None = None  # how the index's bounds changed its weights (`from_index`)
        if log_summary:
            self._log_checklist()

    @classmethod
    def from_index(
        cls,
        index: "DensityIndex",
        dataset: Any,
        prompt_id_column: str = "prompt_id",
        pair_weighting: str = "per_pair",
        *,
        missing: str = "error",
        num_samples: int | None = None,
        seed: int = 0,
        schedule: "AlphaSchedule | None" = None,
        **sampler_kwargs,
    ) -> "DensitySampler":
        """Sampler over `dataset` rows weighted by their prompt's weight in `index` (see `map_prompt_weights`); with
        a `schedule`, by density^-alpha(epoch) with the index's clipping and mixing (`ScheduledWeights`).
        `sampler_kwargs` go to the class's constructor (`DensityRepeatSampler`: the repeat structure)."""
        from .schedule import ScheduledWeights

        row_ids = _prompt_id_column(dataset, prompt_id_column)
        weights, prompt_index = map_prompt_weights(
            row_ids, index.prompt_ids, index.weights, pair_weighting=pair_weighting, missing=missing
        )
        if schedule is not None:
            weights = ScheduledWeights(
                index.log_density,
                prompt_index,
                schedule,
                max_weight_ratio=index.metadata.get("max_weight_ratio"),
                target_ess=index.metadata.get("target_ess"),
                uniform_mix=index.metadata.get("uniform_mix", 0.0),
                pair_weighting=pair_weighting,
            )
        if sampler_kwargs.get("rules") is not None and sampler_kwargs.get("history_keys") is None:
            sampler_kwargs["history_keys"] = _id_list(row_ids)  # the reward history of a prompt is shared by its rows
        sampler = cls(weights, num_samples=num_samples, seed=seed, log_summary=False, **sampler_kwargs)
        sampler.num_missing = int((prompt_index < 0).sum())
        names = tuple(sorted(set(index.buckets)))
        prompt_codes = np.array([names.index(b) for b in index.buckets], dtype=np.int8)
        sampler._bucket_names = names
        sampler._bucket_codes = np.where(prompt_index >= 0, prompt_codes[np.maximum(prompt_index, 0)], -1).astype(
            np.int8
        )
        sampler.bound_stats = dict(index.bound_stats)
        sampler._log_checklist()
        return sampler

    @property
    def row_buckets(self) -> np.ndarray | None:
        """Bucket name of every row (`unknown` for rows not in the index); `None` unless built `from_index`."""
        if self._bucket_codes is None:
            return None
        return np.asarray([*self._bucket_names, "unknown"], dtype=object)[self._bucket_codes]

    def summary(self) -> dict[str, Any]:
        w = self.weights
        n = len(w)
        return {
            "rows": n,
            "rows_assigned": n - self.num_missing,
            "min_weight": float(w.min()),
            "max_weight": float(w.max()),
            "ratio": float(w.max() / w.min()) if w.min() > 0 else float("inf"),
            "ess": float(1.0 / np.square(w).sum()),
            **({"alpha": self.scheduled.schedule(self.epoch)} if self.scheduled else {}),
            **self._bound_summary(),
        }

    def _bound_summary(self) -> dict[str, Any]:
        """alpha asked and used, the share of prompts at the ESS cap and the mass the bounds moved."""
        stats = self.scheduled.bound_stats if self.scheduled is not None else self.bound_stats
        if not stats:
            return {}
        return {
            "alpha_asked": stats["alpha"],
            "alpha_effective": stats["alpha_effective"],
            "bound_capped_fraction": stats["capped_fraction"],
            "bound_mass_moved": stats["mass_moved"],
            "bound_raw_ratio": stats["raw_ratio"],
            "active_bounds": list(stats["active_bounds"]),
        }

    def _log_checklist(self) -> None:
        s = self.summary()
        logger.info(
            "Density sampling: pairs assigned %d/%d, min weight %.3g, max weight %.3g, ratio %.3g, ESS %.1f (%.1f%%)",
            s["rows_assigned"],
            s["rows"],
            s["min_weight"],
            s["max_weight"],
            s["ratio"],
            s["ess"],
            100 * s["ess"] / s["rows"],
        )
        if s.get("active_bounds"):
            logger.info(
                "Density weights bounded by %s: alpha %.3g asked, %.3g used; %.1f%% of prompts at the ESS cap; "
                "%.2f%% of the sampling mass moved (raw max/min %.3g)",
                " and ".join(s["active_bounds"]),
                s["alpha_asked"],
                s["alpha_effective"],
                100 * s["bound_capped_fraction"],
                100 * s["bound_mass_moved"],
                s["bound_raw_ratio"],
            )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        if self.scheduled is not None:
            self._epoch_signal = self.scheduled.signal.copy()
            self.weights = validate_weights(self.scheduled.weights(self.epoch, self._epoch_signal))
            logger.info(
                "density sampler epoch %d: alpha %.3g, ESS %.1f",
                self.epoch,
                self.scheduled.schedule(self.epoch),
                1.0 / np.square(self.weights).sum(),
            )

    def update(self, rows: Any, values: Any) -> None:
        """Re-weight `rows` by `values` (a training signal, e.g. per-prompt reward variance) on top of density, from
        the next epoch on (verl's curriculum-sampler `update`, by row). Needs `ScheduledWeights`."""
        if self.scheduled is None:
            raise ValueError(
                "update() needs a sampler built on ScheduledWeights (density_alpha_schedule or "
                "`DensitySampler(ScheduledWeights(...))`); fixed weights cannot change."
            )
        self.scheduled.update(rows, values)

    def _rng(self) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch])

    def __iter__(self) -> Iterator[int]:
        draws = self._rng().choice(len(self.weights), size=self.num_samples, replace=True, p=self.weights)
        return iter(draws.tolist())

    def __len__(self) -> int:
        return self.num_samples

    def state_dict(self) -> dict[str, Any]:
        """JSON-serializable state: with it a resumed run replays the identical order."""
        state = {
            "seed": self.seed,
            "epoch": self.epoch,
            "num_samples": self.num_samples,
            "num_rows": len(self.weights),
            "weights_sha256": self._fingerprint(),
        }
        if self.scheduled is not None:  # the training signal pending for the next epoch, and the one in use
            state["signal"] = self.scheduled.sparse_signal(self.scheduled.signal)
            state["epoch_signal"] = self.scheduled.sparse_signal(self._epoch_signal)
        return state

    def _fingerprint(self) -> str:
        return self.scheduled.fingerprint() if self.scheduled is not None else _weights_fingerprint(self.weights)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore `seed` and `epoch`; `ValueError` if the state belongs to another dataset or weighting."""
        if state["num_rows"] != len(self.weights) or state["weights_sha256"] != self._fingerprint():
            raise ValueError(
                f"sampler state was saved for {state['num_rows']} rows with weights {state['weights_sha256']}, but this "
                f"sampler has {len(self.weights)} rows with weights {self._fingerprint()}: the dataset, the density "
                "index or the schedule changed since the checkpoint."
            )
        self.seed, self.num_samples, self.epoch = int(state["seed"]), int(state["num_samples"]), int(state["epoch"])
        if self.scheduled is not None:  # redraw this epoch with the signal it started with; keep the pending one
            self._epoch_signal = self.scheduled.dense_signal(state.get("epoch_signal"))
            self.scheduled.signal = self.scheduled.dense_signal(state.get("signal"))
            self.weights = validate_weights(self.scheduled.weights(self.epoch, self._epoch_signal))


def prompt_keys(dataset: Any, column: str = "prompt_id") -> list | None:
    """Each row's prompt id (the `column`, else computed from a `prompt` column), or `None` when the dataset has
    neither: what a reward history is kept by."""
    names = getattr(dataset, "column_names", None) or []
    if column not in names and "prompt" not in names:
        return None
    return _id_list(_prompt_id_column(dataset, column))


def _id_list(ids: Any) -> list:
    """`_prompt_id_column`'s ids (an Arrow column or a list) as a list."""
    return ids.to_pylist() if hasattr(ids, "to_pylist") else list(ids)


def _prompt_id_column(dataset: Any, column: str):
    if hasattr(dataset, "column_names"):
        if column not in dataset.column_names and "prompt" in dataset.column_names:
            from .prompts import prompt_ids

            # No id column: the ids of the prompts (strings or messages), as `prompt_id` gives them.
            return prompt_ids(dataset["prompt"], where="column 'prompt', row")
        if column not in dataset.column_names:
            raise ValueError(
                f"dataset has no {column!r} column (columns: {dataset.column_names}); add it with "
                "`dataset.map(lambda x: {'prompt_id': density_rlhf.prompt_id(x['prompt'])})`."
            )
        if hasattr(dataset, "data") and hasattr(dataset, "_indices"):  # a map-style `datasets.Dataset`
            # Materialize only this column: flattening a whole tokenized dataset would cost more than the mapping.
            single = dataset.select_columns([column])
            if single._indices is not None:
                single = single.flatten_indices()
            return single.data.column(column)
        return dataset[column]
    return list(dataset)


class DensityRepeatSampler(DensitySampler):
    """GRPO variant: TRL `RepeatSampler`'s contract, with unique prompts drawn by density weight.

    Each chunk of `batch_size` prompts is drawn by weight, then every prompt is repeated `mini_repeat_count` times
    (the generations of one group) and every chunk `repeat_count` times (reuse across iterations). With
    `replacement=False` and uniform weights the first epoch's order is exactly `RepeatSampler(..., shuffle=True,
    seed=seed)`'s; later epochs differ from TRL's, because each epoch's draw is a pure function of `(seed, epoch)`
    (TRL continues one generator), which is what lets a resumed run replay them.

    Args:
        weights: one weight per dataset row.
        mini_repeat_count: repeats of each index in a row (TRL: `num_generations`).
        batch_size: unique indices per chunk (TRL: `generation_batch_size // num_generations`).
        repeat_count: repeats of each chunk (TRL: `num_iterations * steps_per_generation`).
        seed: draws are a pure function of `(seed, epoch)`.
        replacement: draw rows with replacement (the default), or a weighted permutation without.
        num_samples: unique rows drawn per epoch; defaults to the number of rows.
        rules: [`SelectionRules`] by reward signal (`density_rlhf.selection`). With one active, each chunk is drawn
            when it is needed, from these weights times the rules' factors over the reward history that `update`
            recorded so far (bounded by `max_weight_ratio` / `target_ess`), as a pure function of `(seed, epoch,
            chunk, history)`; the chunks drawn in the epoch travel in the state, so a resumed run replays them.
        max_weight_ratio / target_ess: the bounds of that product (default: none).
        history_keys: what the reward history is kept by, one key per row (e.g. its prompt id, so that the rows of
            one prompt share a history: a group's rewards say how the policy does on the prompt); default the row.
    """

    def __init__(
        self,
        weights: Any,
        mini_repeat_count: int,
        batch_size: int = 1,
        repeat_count: int = 1,
        seed: int = 0,
        replacement: bool = True,
        num_samples: int | None = None,
        *,
        log_summary: bool = True,
        rules: SelectionRules | None = None,
        max_weight_ratio: float | None = None,
        target_ess: float | None = None,
        history_keys: Any = None,
    ):
        super().__init__(weights, num_samples=num_samples, seed=seed, log_summary=log_summary)
        for name, value in (
            ("mini_repeat_count", mini_repeat_count),
            ("batch_size", batch_size),
            ("repeat_count", repeat_count),
        ):
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}.")
        if not replacement and self.num_samples > len(self.weights):
            raise ValueError("num_samples cannot exceed the number of rows when replacement=False.")
        self.mini_repeat_count = int(mini_repeat_count)
        self.batch_size = int(batch_size)
        self.repeat_count = int(repeat_count)
        self.replacement = replacement
        self.rules = rules if rules is not None and rules.active else None
        if self.rules is not None and self.scheduled is not None:
            raise ValueError("selection rules and an alpha schedule both change the weights: use one of them.")
        self.history = None
        if self.rules is not None:
            keys = np.arange(len(self.weights)) if history_keys is None else np.asarray(history_keys, dtype=object)
            if len(keys) != len(self.weights):
                raise ValueError(
                    f"history_keys has {len(keys)} entries for {len(self.weights)} rows: pass one per row."
                )
            _, self.row_keys = np.unique(keys.astype(str), return_inverse=True)  # sorted: the same codes every run
            self.history = RewardHistory(int(self.row_keys.max()) + 1)
        self.selection_bounds = (max_weight_ratio, target_ess)
        self.selection_stats: dict[str, float] = {}
        self._selection_cache: tuple[int, np.ndarray] | None = None  # (history version, probabilities)
        self._drawn: list[list[int]] = []  # the chunks drawn this epoch, in order
        self._replay: list[list[int]] = []  # chunks a resumed run yields again before drawing new ones

    REPEAT_PARAMS = ("mini_repeat_count", "batch_size", "repeat_count")

    @classmethod
    def repeat_params(cls, sampler: Any) -> dict[str, int]:
        """The repeat structure of a TRL `RepeatSampler` (or any sampler exposing it), as keyword arguments."""
        missing = [name for name in cls.REPEAT_PARAMS if not hasattr(sampler, name)]
        if missing:
            raise ValueError(
                f"{type(sampler).__name__} has no {missing}: a GRPO/RLOO sampler must keep TRL's RepeatSampler contract; "
                "build it with `DensityRepeatSampler.like(trainer_repeat_sampler, weights)`."
            )
        return {name: int(getattr(sampler, name)) for name in cls.REPEAT_PARAMS}

    @classmethod
    def like(cls, repeat_sampler: Any, weights: Any, **kwargs) -> "DensityRepeatSampler":
        """A density sampler with the repeat structure and seed of `repeat_sampler` (the `RepeatSampler` a GRPO or
        RLOO trainer builds in `_get_train_sampler`), drawing prompts by `weights`; `kwargs` override (`seed`,
        `replacement`, `num_samples`)."""
        params = {**cls.repeat_params(repeat_sampler), "seed": getattr(repeat_sampler, "seed", None) or 0, **kwargs}
        return cls(weights, **params)

    def _draw(self) -> list[int]:
        n = len(self.weights)
        if self.replacement:
            return self._rng().choice(n, size=self.num_samples, replace=True, p=self.weights).tolist()
        if np.allclose(self.weights, self.weights[0]):
            # Uniform without replacement is a uniform permutation: draw it exactly as TRL's RepeatSampler does.
            generator = torch.Generator()
            generator.manual_seed(self.seed + self.epoch)
            return torch.randperm(n, generator=generator).tolist()[: self.num_samples]
        # Weighted permutation (Efraimidis-Spirakis): sort keys u^(1/w); zero-weight rows come last.
        u = self._rng().random(n)
        with np.errstate(divide="ignore"):
            keys = np.where(self.weights > 0, np.log(u) / self.weights, -np.inf)
        return np.argsort(-keys, kind="stable")[: self.num_samples].tolist()

    def __iter__(self) -> Iterator[int]:
        if self.rules is not None:
            chunks = self._selected_chunks()
        else:
            indexes = self._draw()
            chunks = (indexes[i : i + self.batch_size] for i in range(0, len(indexes), self.batch_size))
        for chunk in chunks:
            if len(chunk) < self.batch_size:
                continue
            for _ in range(self.repeat_count):
                for index in chunk:
                    yield from [index] * self.mini_repeat_count

    # --- selection by reward signal -------------------------------------------------------------------------------
    def set_epoch(self, epoch: int) -> None:
        if int(epoch) != self.epoch:
            self._replay = []  # a state's replayed chunks belong to its own epoch
        super().set_epoch(epoch)

    def summary(self) -> dict[str, Any]:
        """`DensitySampler.summary`, plus, with selection rules, the active rules and the sampling mass each of them
        moves now (`selection_mass_moved`, from the history recorded so far)."""
        summary = super().summary()
        if getattr(self, "rules", None) is not None:  # (the base constructor summarizes before the rules are set)
            self.selection_weights()
            summary["selection_rules"] = {f.name: getattr(self.rules, f.name) for f in dataclasses.fields(self.rules)}
            summary["selection_active_rules"] = list(self.rules.active_rules)
            summary["selection_mass_moved"] = {
                key.split("/", 1)[1]: value
                for key, value in self.selection_stats.items()
                if key.startswith("mass_moved/")
            }
        return summary

    def update(self, rows: Any, values: Any) -> None:
        """Record reward signal. With selection rules: one generation group per entry of `rows` (dataset rows), with
        `values[i]` the rewards of its completions (the gathered rewards, so every rank records the same); the next
        chunk is drawn with it. Without rules: `DensitySampler.update` (a per-row signal for the next epoch)."""
        if self.rules is None:
            return super().update(rows, values)
        self.history.record(self.row_keys[np.asarray(rows, dtype=np.int64)], values)

    def selection_weights(self) -> np.ndarray:
        """The probabilities the next chunk is drawn from: these weights times every rule's factor over the history
        recorded so far, bounded; `selection_stats` says how much mass each rule and the bounds moved. Computed once
        per change of the history."""
        if self._selection_cache is not None and self._selection_cache[0] == self.history.version:
            return self._selection_cache[1]
        base = self.weights
        factors = {name: f[self.row_keys] for name, f in rule_factors(self.rules, self.history).items()}
        stats = {}
        product = base.copy()
        for name, factor in factors.items():
            alone = base * factor
            total = alone.sum()
            stats[f"mass_moved/{name}"] = float(0.5 * np.abs(alone / total - base).sum()) if total > 0 else 1.0
            product = product * factor
        probabilities, bound = bound_product(product, *self.selection_bounds)
        stats["mass_moved/all"] = float(0.5 * np.abs(probabilities - base).sum())
        stats["mass_moved/bounds"] = float(bound["mass_moved"])
        stats["excluded_rows"] = float((probabilities == 0).sum())
        self.selection_stats = stats
        self._selection_cache = (self.history.version, probabilities)
        return probabilities

    def _selected_chunks(self) -> Iterator[list[int]]:
        """This epoch's chunks: first those a resumed state replays, then each drawn when it is needed."""
        replay, self._replay, self._drawn = self._replay, [], []
        for k in range(self.num_samples // self.batch_size):
            if k < len(replay):
                chunk = replay[k]
            else:
                p = self.selection_weights()
                rng = np.random.default_rng([self.seed, self.epoch, k])
                live = int((p > 0).sum())
                chunk = rng.choice(len(p), size=self.batch_size, replace=self.replacement or live < self.batch_size,
                                   p=p).tolist()  # fmt: skip
            self._drawn.append(chunk)
            yield chunk

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        if self.rules is not None:
            state["history"] = self.history.state_dict()
            state["drawn_chunks"] = [list(c) for c in self._drawn]
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        if self.rules is not None:
            if "history" not in state:
                raise ValueError("the sampler state has no reward history: it was saved without selection rules.")
            self.history.load_state_dict(state["history"])
            self._replay = [list(c) for c in state["drawn_chunks"]]

    def __len__(self) -> int:
        return (self.num_samples // self.batch_size) * self.batch_size * self.mini_repeat_count * self.repeat_count
