"""Density sampling for any `transformers.Trainer` subclass: `DensitySamplingMixin` and `with_density_sampling`.

The mixin overrides one sampling hook, `_get_train_sampler`: it takes the sampler the trainer built (TRL's
`RepeatSampler` for GRPO/RLOO, the default random sampler otherwise) and replaces it with a density sampler of the
same structure over the dataset the trainer trains on, after its preprocessing (DPO and KTO drop over-long rows while
tokenizing). Besides that it wraps four small methods: `train` (remember the checkpoint to resume), `_save_checkpoint`
(save the sampler state next to TRL's), `log` (the `density/*` metrics) and `create_model_card` (a density section).
"""

import inspect
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from accelerate.utils import gather_object
from torch.utils.data import Sampler
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint
from trl.trainer.utils import get_config_model_id

from .config import DensityConfigMixin, density_config, refuse_reward_only_fields
from .sampler import DensityRepeatSampler, DensitySampler, prompt_keys
from .schedule import AlphaSchedule
from .selection import zero_variance_groups
from .settings import overrides_from


logger = logging.getLogger(__name__)

SAMPLER_STATE_FILE = "density_sampler_state.json"
# Each training row's position, so the gathered rewards of a generation group can be recorded against its row.
ROW_COLUMN = "density_row"


def load_density_index(args: DensityConfigMixin, index=None):
    """The trainer's own index: a copy of `index` (or the one at `args.density_index_path`) reweighted by the
    `density_*` overrides. The index a caller passes in is never changed, so trainers can share one."""
    from .index import DensityIndex

    if index is None and args.density_index_path:
        index = DensityIndex.load(args.density_index_path)
    if index is None:
        return None
    return index.reweighted(**overrides_from(args))


def sampling_seed(args) -> int:
    """The one seed of every density sampler: `data_seed` when set, else `seed` (transformers' rule for data order)."""
    return args.data_seed if args.data_seed is not None else args.seed


def resume_path(output_dir: str, resume_from_checkpoint: str | bool | None) -> str | None:
    """The checkpoint directory `Trainer.train(resume_from_checkpoint=...)` resumes from (`True`: the newest in
    `output_dir`), or `None`."""
    if resume_from_checkpoint is True:
        return get_last_checkpoint(output_dir)
    return resume_from_checkpoint if isinstance(resume_from_checkpoint, str) else None


def save_sampler_state(sampler, checkpoint_dir: str | os.PathLike) -> None:
    if hasattr(sampler, "state_dict"):
        Path(checkpoint_dir, SAMPLER_STATE_FILE).write_text(json.dumps(sampler.state_dict(), indent=2) + "\n")


def load_sampler_state(sampler, checkpoint_dir: str | os.PathLike | None) -> None:
    """Restore the sampler state saved in `checkpoint_dir`; `ValueError` if it belongs to another dataset."""
    if checkpoint_dir is None or not hasattr(sampler, "load_state_dict"):
        return
    path = Path(checkpoint_dir, SAMPLER_STATE_FILE)
    if not path.exists():
        logger.warning(
            "%s has no %s: the density sampler starts from its config seed", checkpoint_dir, SAMPLER_STATE_FILE
        )
        return
    try:
        sampler.load_state_dict(json.loads(path.read_text()))
    except ValueError as err:
        raise ValueError(f"cannot resume from {checkpoint_dir}: {err}") from None


def density_card_section(
    args: DensityConfigMixin, index, sampler, sources: list[str], eval_table: dict, dropped: dict | None = None
) -> str:
    """Markdown appended to the TRL model card: the density config, the index, the sampler, the rows the trainer's
    preprocessing dropped and the eval-by-bucket table."""
    lines = ["", "", "## Density-aware sampling (density_rlhf)", ""]
    lines.append(f"- Density sampling: {'on' if args.density_sampling else 'off'} ({args.density_pair_weighting})")
    if args.density_alpha_schedule != "constant":
        lines.append(
            f"- alpha schedule: {args.density_alpha_schedule} from {args.density_alpha_start} over "
            f"{args.density_schedule_epochs} epochs"
        )
    if index is not None:
        s = index.summary()
        lines.append(
            f"- Index: embedder `{s['embedder']}`, k = {s['k']}, alpha = {s['alpha']}, estimator `{s['estimator']}`, "
            f"{s['n']} prompts, weight ratio {s['ratio']:.3g}, ESS {s['ess']:.1f}"
        )
        bounds = f"max/min bound {s['max_weight_ratio'] or 'none'}, ESS-fraction target {s['target_ess'] or 'none'}"
        if s["active_bounds"]:
            lines.append(
                f"- Bounds ({bounds}) active: {', '.join(s['active_bounds'])}; alpha {s['alpha']} asked, "
                f"{s['alpha_effective']:.3g} used; {100 * s['capped_fraction']:.1f}% of prompts at the ESS cap; "
                f"{100 * s['bound_mass_moved']:.2f}% of the sampling mass moved (raw max/min {s['raw_ratio']:.3g})"
            )
        else:
            lines.append(f"- Bounds ({bounds}): inactive, the weights are the raw density^-alpha")
    if sampler is not None and hasattr(sampler, "summary"):
        lines.append(f"- Sampler ESS over rows: {sampler.summary()['ess']:.1f} of {sampler.summary()['rows']}")
    if dropped:
        lines.append(f"- Training rows: {dropped_rows_text(dropped)}")
    if sources:
        lines.append(f"- Data sources: {', '.join(sources)}")
    if eval_table:
        lines += ["", "| bucket | accuracy | loss | pairs |", "|---|---|---|---|"]
        for bucket, row in eval_table.items():
            lines.append(f"| {bucket} | {row['accuracy']:.4f} | {row['loss']:.4f} | {row.get('count', '')} |")
    return "\n".join(lines) + "\n"


class LogFirstStepCallback(TrainerCallback):
    """Logs the first training step, so the `density/*` metrics appear even when `max_steps < logging_steps`."""

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 1:
            control.should_log = True


def density_summary_line(sampler) -> str:
    """One line on what the sampler draws: rows, ESS, max/min, the rare bucket's mass and the active bounds."""
    s = sampler.summary()
    line = f"density sampling: {s['rows']} rows, ESS {s['ess']:.1f} ({100 * s['ess'] / s['rows']:.1f}%), "
    line += f"max/min weight {s['ratio']:.3g}"
    buckets = getattr(sampler, "row_buckets", None)
    if buckets is not None:
        rare = buckets == "rare"
        line += f", rare bucket {100 * rare.mean():.1f}% of rows and {100 * sampler.weights[rare].sum():.1f}% of draws"
    if s.get("active_bounds"):
        line += (
            f"; bounds active ({', '.join(s['active_bounds'])}): alpha {s['alpha_asked']:g} asked, "
            f"{s['alpha_effective']:.3g} used, {100 * s['bound_mass_moved']:.1f}% of the mass moved"
        )
    elif "active_bounds" in s:
        line += "; no bound active"
    if "selection_mass_moved" in s:
        moved = ", ".join(f"{name} {100 * v:.1f}%" for name, v in s["selection_mass_moved"].items())
        line += f"; selection rules {', '.join(s['selection_active_rules'])} (mass they move now: {moved})"
    return line


def _with_prompt_ids(dataset: Any, column: str, name: str) -> Any:
    """`dataset` with the prompt id column added from its `prompt` column (strings or messages) when it has none;
    a new dataset, so the caller's is left as it is."""
    if isinstance(dataset, dict):  # several eval sets
        return {key: _with_prompt_ids(value, column, f"{name}[{key}]") for key, value in dataset.items()}
    import datasets

    if not isinstance(dataset, datasets.Dataset) or column in dataset.column_names:
        return dataset
    if "prompt" not in dataset.column_names:
        return dataset
    from .prompts import add_prompt_ids

    logger.info(
        "%s has no %r column: adding density_rlhf.prompt_id(prompt) (last user turn of messages)", name, column
    )
    return add_prompt_ids(dataset, "prompt", column)


def _check_coverage(dataset: Any, column: str, index) -> None:
    """The `ValueError` of `map_prompt_weights` for train rows whose prompt the index lacks, raised before the
    trainer's preprocessing and before any prompt is embedded."""
    from .row_weights import map_prompt_weights

    if dataset is None or column not in (getattr(dataset, "column_names", None) or []):
        return
    from .sampler import _prompt_id_column

    map_prompt_weights(_prompt_id_column(dataset, column), index.prompt_ids, index.weights, missing="error")


def _bucket_shares(dataset: Any, column: str, index) -> dict[str, float] | None:
    """Share of `dataset`'s rows in each density bucket of `index` (`unknown`: not in it); `None` without both."""
    if index is None or dataset is None or column not in (getattr(dataset, "column_names", None) or []):
        return None
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from .sampler import _prompt_id_column

    ids = _prompt_id_column(dataset, column)
    ids = ids if isinstance(ids, (pa.Array, pa.ChunkedArray)) else pa.array(list(ids))
    if len(ids) == 0:
        return None
    names = sorted(set(index.buckets))
    codes = np.array([names.index(b) for b in index.buckets] + [len(names)], dtype=np.int64)
    position = pc.index_in(ids, value_set=pa.array(list(index.prompt_ids), type=ids.type))
    rows = np.asarray(pc.fill_null(position, -1).to_numpy(zero_copy_only=False), dtype=np.int64)
    counts = np.bincount(codes[rows], minlength=len(names) + 1)  # -1 -> the last code, `unknown`
    shares = {name: float(counts[i] / len(rows)) for i, name in enumerate([*names, "unknown"]) if counts[i]}
    return shares


def _rows_dropped(given: Any, kept: Any, shares_given: dict | None, column: str, index) -> dict | None:
    """What the trainer's preprocessing dropped from the train rows (e.g. TRL's `max_length` filter): counts and
    the bucket shares before and after; `None` when nothing was dropped or the sizes are unknown."""
    if given is None or kept is None or not hasattr(given, "__len__") or not hasattr(kept, "__len__"):
        return None
    if len(kept) >= len(given):
        return None
    return {
        "given": len(given),
        "kept": len(kept),
        "shares_given": shares_given,
        "shares_kept": _bucket_shares(kept, column, index),
    }


def dropped_rows_text(dropped: dict) -> str:
    """`the trainer's preprocessing dropped 786 of 2,005 rows (bucket shares of rows: rare 20.0% -> 14.6%, ...)`."""
    text = f"the trainer's preprocessing dropped {dropped['given'] - dropped['kept']:,} of {dropped['given']:,} rows"
    before, after = dropped.get("shares_given"), dropped.get("shares_kept")
    if before and after:
        order = [b for b in ("rare", "mid", "common", "unknown") if b in before or b in after]
        order += sorted((set(before) | set(after)) - set(order))
        parts = [f"{b} {100 * before.get(b, 0.0):.1f}% -> {100 * after.get(b, 0.0):.1f}%" for b in order]
        text += f" (bucket shares of rows: {', '.join(parts)})"
    return text


def _check_not_empty(dataset: Any, when: str) -> None:
    if dataset is not None and hasattr(dataset, "__len__") and len(dataset) == 0:
        raise ValueError(f"the train dataset is empty{when}: there is nothing to train on; check the dataset.")


def _is_repeat_sampler(sampler: Any) -> bool:
    return all(hasattr(sampler, name) for name in DensityRepeatSampler.REPEAT_PARAMS)


class DensitySamplingMixin:
    """Density-weighted training rows for any [`~transformers.Trainer`] subclass. Put it first in the bases:

    ```python
    class DensityDPOTrainer(DensitySamplingMixin, DPOTrainer): ...
    ```

    or use [`with_density_sampling`]. The trainer's `args` must carry the density fields ([`density_config`]); the
    trainer takes two more keyword arguments, `density_index` ([`DensityIndex`], overrides
    `args.density_index_path`) and `density_sampler` (any sampler over the processed training rows; GRPO/RLOO need
    TRL's `RepeatSampler` structure, e.g. `DensityRepeatSampler.like(...)`).

    With `density_sampling=False` and no `density_sampler` the trainer trains exactly as its base class. With it, the
    rows are drawn by density weight; the sampler's state is saved in every checkpoint and verified on resume; the
    logs carry `density/ess`, `density/rare_mass` (probability of drawing a rare-bucket row), `density/alpha_effective`
    and the mass the weight bounds moved (`density/bound_*`), and with a schedule `density/alpha`; the model card gets
    a density section.

    Not supported (a `ValueError` says so): packed SFT (packing merges rows), iterable datasets (no row index).
    """

    # Whether the trainer implements `record_seen_ids` and `eval_group_columns` (only `DensityRewardTrainer` does),
    # and `density_bucket_column` (the two density trainers).
    _supports_group_fields = False
    _supports_bucket_column = False
    _supports_loss_weighting = False

    def __init__(self, *args, density_index=None, density_sampler: Sampler | None = None, **kwargs):
        bound = inspect.signature(super().__init__).bind_partial(*args, **kwargs)
        config = self._density_args(bound.arguments.get("model"), bound.arguments.get("args"))
        bound.arguments["args"] = config
        self.density_index = load_density_index(config, density_index)
        if config.density_sampling and self.density_index is None and density_sampler is None:
            raise ValueError(
                "density_sampling=True needs a density index: set `density_index_path` (build one with "
                "`density-rlhf density` or `DensityIndex.build`), or pass `density_index=` or `density_sampler=`."
            )
        if density_sampler is not None and config.density_weighting == "loss":
            raise ValueError(
                "density_sampler draws the rows itself, while density_weighting: loss draws them uniformly and weights "
                "the loss: pass one or the other."
            )
        self._user_sampler = density_sampler
        self._active_sampler = None
        self._loss_weights_sampler = None  # density_weighting: loss: the weights, applied to the loss
        self._resume_checkpoint: str | None = None
        self._sampler_stats_key = None
        _check_not_empty(bound.arguments.get("train_dataset"), "")
        self._selection_rules = config.selection_rules()
        if self._selection_rules.active:
            if not hasattr(super(), "_calculate_rewards"):  # the base trainer's own
                raise ValueError(
                    f"the selection rules (zero_variance_skip, learnability, pass_rate_max/min) learn from the rewards of "
                    f"generation groups; {type(self).__name__} generates none (GRPO and RLOO trainers do). Remove them."
                )
            if density_sampler is not None:
                raise ValueError("density_sampler draws the prompts itself: set the selection rules on it, not here.")
            train = bound.arguments.get("train_dataset")
            if train is not None and ROW_COLUMN not in train.column_names:
                bound.arguments["train_dataset"] = train.add_column(ROW_COLUMN, list(range(len(train))))
        if self._density_on(config):
            self._check_supported(config, bound.arguments.get("train_dataset"))
        if self.density_index is not None:
            for name in ("train_dataset", "eval_dataset"):
                bound.arguments[name] = _with_prompt_ids(bound.arguments.get(name), config.prompt_id_column, name)
            if self._density_on(config) and density_sampler is None and config.density_missing == "error":
                _check_coverage(bound.arguments.get("train_dataset"), config.prompt_id_column, self.density_index)
        given_train = bound.arguments.get("train_dataset")
        shares_given = _bucket_shares(given_train, config.prompt_id_column, self.density_index)
        given = {name: bound.arguments.get(name) for name in ("train_dataset", "eval_dataset")}
        prepared = dict(zip(given, self._prepare_density_datasets(config, *given.values())))
        for name, dataset in prepared.items():
            if dataset is not given[name]:
                bound.arguments[name] = dataset
        super().__init__(*bound.args, **bound.kwargs)
        _check_not_empty(
            self.train_dataset, " after the trainer's preprocessing (it drops rows longer than `max_length`)"
        )
        self.density_rows_dropped = _rows_dropped(
            given_train, self.train_dataset, shares_given, config.prompt_id_column, self.density_index
        )
        if self._density_on(config):
            if getattr(self, "calculate_KL", False):  # KTO's KL term
                raise ValueError(
                    f"loss_type={config.loss_type!r} estimates KTO's KL term from completions rotated within fixed "
                    "dataset batches (TRL's sequential sampler); density sampling draws other batches and would pair "
                    "each with completions from outside it. Use `loss_type='apo_zero_unpaired'` (no KL term) or turn "
                    "density sampling off."
                )
            if self._user_sampler is None and config.density_sampling:  # rules alone need no prompt ids
                self._check_prompt_ids()
            self.add_callback(LogFirstStepCallback())

    # --- set-up ---------------------------------------------------------------------------------------------------
    def _density_args(self, model, args):
        """The config: `args` if it carries the density fields, a default one when `None`, else a `TypeError`;
        checked once (the density trainers check it before their own set-up, the mixin then takes it as it is)."""
        if args is not None and args is getattr(self, "_checked_density_args", None):
            return args
        self._checked_density_args = self._check_density_args(model, args)
        return self._checked_density_args

    def _check_density_args(self, model, args):
        if args is None:
            config_cls = getattr(self, "_density_config_class", None)
            if config_cls is None:
                raise TypeError(f"{type(self).__name__} needs `args`: a config built with `density_config(...)`.")
            config = getattr(model, "config", None)
            name = model if isinstance(model, str) else get_config_model_id(config) if config is not None else ""
            return config_cls(f"{str(name).split('/')[-1] or 'model'}-{type(self).__name__}")
        config_cls = getattr(self, "_density_config_class", None)
        if config_cls is not None and not isinstance(args, config_cls) and isinstance(args, DensityConfigMixin):
            raise TypeError(f"args must be a {config_cls.__name__}, got {type(args).__name__}.")
        if not isinstance(args, DensityConfigMixin):
            raise TypeError(
                f"args is a {type(args).__name__} without the density fields: use "
                f"`density_config({type(args).__name__})(...)` (or a class built on DensityConfigMixin)."
            )
        if not self._supports_group_fields:
            refuse_reward_only_fields(args, type(args).__name__)
        if args.density_weighting == "loss" and not self._supports_loss_weighting:
            raise ValueError(
                f"density_weighting: loss needs a per-row loss, which {type(self).__name__} does not expose "
                "(DensityRewardTrainer does); use density_weighting: sample."
            )
        if not self._supports_bucket_column and args.density_bucket_column is not None:
            raise ValueError(
                f"density_bucket_column feeds the per-bucket metrics of DensityRewardTrainer and DensityGRPOTrainer; "
                f"{type(self).__name__} takes the buckets from the index. Remove it."
            )
        return args

    def _density_row_sampler(self, sampler_cls: type = DensitySampler, **extra: Any) -> DensitySampler:
        """The density sampler over the processed train rows, as the config asks (index, pair weighting, missing
        policy, seed, schedule); `extra` goes to `sampler_cls.from_index`."""
        return sampler_cls.from_index(
            self.density_index,
            self.train_dataset,
            self.args.prompt_id_column,
            self.args.density_pair_weighting,
            missing=self.args.density_missing,
            seed=sampling_seed(self.args),
            schedule=self._density_schedule(),
            **extra,
        )

    def _prepare_density_datasets(self, args, train_dataset, eval_dataset) -> tuple:
        """Hook, called once before the base trainer's `__init__` with `self.density_index` prepared: the train and
        eval datasets as the trainer should receive them (default: unchanged). The density trainers add the bucket
        column here."""
        return train_dataset, eval_dataset

    def _density_on(self, args) -> bool:
        return bool(args.density_sampling or self._user_sampler is not None or self._selection_rules.active)

    @staticmethod
    def _check_supported(args, train_dataset) -> None:
        if getattr(args, "packing", False):
            raise ValueError(
                "density sampling draws whole rows, but SFT packing merges rows into sequences (and drops the prompt "
                "id column): set `packing=False`, or turn density sampling off."
            )
        from torch.utils.data import IterableDataset

        if isinstance(train_dataset, IterableDataset) or type(train_dataset).__name__ == "IterableDataset":
            raise ValueError(
                "density sampling draws rows by index and needs a map-style dataset; load it without streaming "
                "(an IterableDataset has no row index)."
            )

    def _check_prompt_ids(self) -> None:
        column = self.args.prompt_id_column
        if self.train_dataset is None or column not in getattr(self.train_dataset, "column_names", []):
            raise ValueError(
                f"the processed train dataset has no {column!r} column, which density sampling needs (the trainer's "
                "preprocessing kept only its columns). Add it to the dataset with `dataset.map(lambda x: "
                "{'prompt_id': density_rlhf.prompt_id(x['prompt'])})`, or set `prompt_id_column`."
            )

    # --- the sampling hook ----------------------------------------------------------------------------------------
    def _get_train_sampler(self, dataset=None) -> Sampler | None:
        base = super()._get_train_sampler(dataset)
        if not self._density_on(self.args):
            return base
        if self._loss_weights_sampler is not None:  # density_weighting: loss draws as the base trainer does
            if self.is_world_process_zero():
                line = density_summary_line(self._loss_weights_sampler).replace(
                    "density sampling", "density loss weights"
                )
                print(f"{line}; rows drawn uniformly by the trainer's own sampler", flush=True)
            return base
        rows = len(self.train_dataset)
        if dataset is not None and len(dataset) != rows:
            raise ValueError(f"the dataloader's dataset has {len(dataset)} rows, the train dataset {rows}.")
        sampler = self._user_sampler
        repeat = _is_repeat_sampler(base)  # GRPO, RLOO: keep TRL's group structure (generations, batch, reuse)
        expected = DensityRepeatSampler.repeat_params(base) if repeat else {}
        if repeat and sampler is not None:
            given = DensityRepeatSampler.repeat_params(sampler)
            if given != expected:
                raise ValueError(
                    f"density_sampler has {given} but this trainer needs {expected} (num_generations, generation "
                    "batch, num_iterations x steps_per_generation); build it with `DensityRepeatSampler.like(...)`."
                )
        if sampler is None:
            extra = {"replacement": getattr(self.args, "density_replacement", True), **expected} if repeat else {}
            if self._selection_rules.active:
                extra["rules"] = self._selection_rules
                if self.density_index is not None and self.args.density_sampling:
                    meta = self.density_index.metadata
                    extra.update(max_weight_ratio=meta["max_weight_ratio"], target_ess=meta["target_ess"])
            if self.args.density_sampling:
                sampler = self._density_row_sampler(DensityRepeatSampler if repeat else DensitySampler, **extra)
            else:  # the selection rules over uniform weights, with a history per prompt
                keys = prompt_keys(self.train_dataset, self.args.prompt_id_column)
                sampler = DensityRepeatSampler(
                    np.ones(rows), seed=sampling_seed(self.args), log_summary=False, history_keys=keys, **extra
                )
        if isinstance(sampler, DensitySampler) and len(sampler.weights) != rows:
            raise ValueError(
                f"density_sampler has {len(sampler.weights)} weights but the processed train dataset has {rows} rows "
                "(preprocessing may drop over-long rows); build the sampler on `trainer.train_dataset`."
            )
        load_sampler_state(sampler, self._resume_checkpoint)
        self._active_sampler = sampler
        if hasattr(sampler, "summary") and self.is_world_process_zero():
            line = density_summary_line(sampler)
            if self.density_rows_dropped:
                line += f"; {dropped_rows_text(self.density_rows_dropped)}"
            print(line, flush=True)  # at any log level: what the run trains on
        return sampler

    def _density_schedule(self) -> AlphaSchedule | None:
        """The alpha schedule of the config, ending at the index's alpha; `None` for `constant`."""
        if self.args.density_alpha_schedule == "constant":
            return None
        return AlphaSchedule(
            self.args.density_alpha_schedule,
            self.args.density_alpha_start,
            self.density_index.metadata["alpha"],
            self.args.density_schedule_epochs,
        )

    # --- the reward signal of GRPO and RLOO -----------------------------------------------------------------------
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        """TRL's rewards (gathered over processes); with selection rules, each generation group's rewards are also
        recorded in the sampler's history against its row (`DensityRepeatSampler.update`), identically on every
        rank."""
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        sampler = self._active_sampler
        if self.model.training and getattr(sampler, "rules", None) is not None:
            if ROW_COLUMN not in inputs[0]:
                raise ValueError(
                    f"the {ROW_COLUMN!r} column the selection rules record rewards by was removed from the batch: "
                    "set remove_unused_columns: false."
                )
            rows = np.asarray(gather_object([int(x[ROW_COLUMN]) for x in inputs]))
            rewards = self._trl_weighted_rewards(rewards_per_func).cpu().double().numpy()
            groups = rewards.reshape(-1, self.num_generations)
            sampler.update(rows[:: self.num_generations], groups)
            self._log_selection(sampler, rows[:: self.num_generations], groups)
        return rewards_per_func

    # The TRL seam: TRL computes this inside `_generate_and_score_completions` and keeps it local.
    # trl 1.16 `trainer/grpo_trainer.py` and `trainer/rloo_trainer.py`; pinned by tests/test_upstream_contract.py.
    def _trl_weighted_rewards(self, per_func):
        """Each completion's weighted reward as TRL computes it (GRPO ≈2759-2764, ≈2826-2827; RLOO ≈1650-1656): the
        `nansum` of `reward_weights` times the rewards, NaN for a completion no reward function scored."""
        import torch

        unscorable = torch.isnan(per_func).all(dim=1)
        rewards = (per_func * self.reward_weights.to(per_func.device).unsqueeze(0)).nansum(dim=1)
        rewards[unscorable] = torch.nan
        return rewards

    def _log_selection(self, sampler, rows: np.ndarray, groups: np.ndarray) -> None:
        """`sampling/*` metrics of one generation batch: the share of zero-variance groups (as TRL's
        `frac_reward_zero_std` counts them), overall and per density bucket, the mass each rule moved for the next
        chunk, and the prompts of a chunk the zero-variance rule skips (in expectation)."""
        metrics = self._metrics["train"]
        zero = zero_variance_groups(groups)
        metrics["sampling/zero_variance_frac"].append(float(zero.mean()))
        buckets = sampler.row_buckets
        if buckets is not None:
            for bucket in sorted(set(buckets[rows])):
                mask = buckets[rows] == bucket
                metrics[f"sampling/{bucket}/zero_variance_frac"].append(float(zero[mask].mean()))
        sampler.selection_weights()  # the next chunk's weights (computed once: the draw reuses them)
        for key, value in sampler.selection_stats.items():
            metrics[f"sampling/{key}"].append(value)
        moved = sampler.selection_stats.get("mass_moved/zero_variance_skip")
        if moved is not None:
            metrics["sampling/skipped_prompts_per_chunk"].append(moved * sampler.batch_size)

    # --- metrics --------------------------------------------------------------------------------------------------
    @property
    def _sampler_stats(self) -> dict[str, float]:
        """density/* training metrics of the active sampler at its current epoch (a schedule moves them); computed
        once per epoch, not at every logging step."""
        sampler = self._active_sampler or self._loss_weights_sampler
        if not hasattr(sampler, "summary"):
            return {}
        key = (id(sampler), getattr(sampler, "epoch", 0))
        if self._sampler_stats_key != key:
            summary = sampler.summary()
            names = ("ess", "alpha", "alpha_effective", "bound_mass_moved", "bound_capped_fraction")
            stats = {f"density/{n}": summary[n] for n in names if n in summary}
            buckets = getattr(sampler, "row_buckets", None)
            if buckets is not None:
                stats["density/rare_mass"] = float(sampler.weights[buckets == "rare"].sum())
            self._sampler_stats_cache, self._sampler_stats_key = stats, key
        return self._sampler_stats_cache

    def log(self, logs: dict[str, float], *args, **kwargs) -> None:
        if self.model is not None and self.model.training and "loss" in logs:
            if hasattr(self, "_metrics"):  # TRL trainers average `_metrics` into the log
                for key, value in self._sampler_stats.items():
                    self._metrics["train"][key] = [value]
            else:
                logs.update(self._sampler_stats)
        super().log(logs, *args, **kwargs)

    # --- checkpoints ----------------------------------------------------------------------------------------------
    def train(self, resume_from_checkpoint: str | bool | None = None, trial=None, **kwargs):
        self._resume_checkpoint = resume_path(self.args.output_dir, resume_from_checkpoint)
        return super().train(resume_from_checkpoint=resume_from_checkpoint, trial=trial, **kwargs)

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self._active_sampler is not None and self.args.should_save:
            run_dir = self._get_output_dir(trial=trial)
            save_sampler_state(
                self._active_sampler, os.path.join(run_dir, f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
            )

    # --- model card -----------------------------------------------------------------------------------------------
    def _density_card_table(self) -> dict:
        """Rows of the card's eval-by-bucket table (the reward trainer fills it)."""
        return {}

    def create_model_card(self, model_name: str | None = None, dataset_name: str | None = None, *args, **kwargs):
        """TRL's card, saying what TRL's template cannot: a local base model or one built from a config, local data
        named as local (not as a Hub link), the output directory in the quick start when there is no Hub id; then the
        density section."""
        local_data = dataset_name if dataset_name and Path(dataset_name).exists() else None
        super().create_model_card(
            model_name or Path(self.args.output_dir).name, None if local_data else dataset_name, *args, **kwargs
        )
        path = Path(self.args.output_dir, "README.md")
        if not self.is_world_process_zero() or not path.exists():
            return
        path.write_text(
            complete_card_text(
                path.read_text(encoding="utf-8"),
                base_model=_base_model_text(self.model),
                model_ref=getattr(self, "hub_model_id", None) or self.args.output_dir,
                local_data=local_data,
            ),
            encoding="utf-8",
        )
        dataset = self.train_dataset
        columns = getattr(dataset, "column_names", None) or []
        sources = sorted(set(dataset.unique("src"))) if "src" in columns else []
        section = density_card_section(
            self.args,
            self.density_index,
            self._active_sampler,
            sources,
            self._density_card_table(),
            dropped=getattr(self, "density_rows_dropped", None),
        )
        with open(path, "a", encoding="utf-8") as f:
            f.write(section + self._density_card_extra())

    def _density_card_extra(self) -> str:
        return ""


def _base_model_text(model) -> str:
    """How the card names the model trained from: a Hub id as a link, a local directory as a path, else the config's
    architecture."""
    config = getattr(model, "config", None)
    name = str(get_config_model_id(config) or "") if config is not None else ""
    if name and Path(name).exists():
        return f"the local model `{name}`"
    if name:
        return f"[{name}](https://huggingface.co/{name})"
    architectures = getattr(config, "architectures", None) or [getattr(config, "model_type", None) or "model"]
    return f"a `{architectures[0]}` initialized from its config"


def complete_card_text(text: str, *, base_model: str, model_ref: str, local_data: str | None) -> str:
    """TRL's card with what its template writes as "None" filled in: the base model, the model the quick start
    loads, and local training data named as such."""
    import re

    text = text.replace("[None](https://huggingface.co/None)", base_model)
    text = text.replace('model="None"', f'model="{model_ref}"')
    if local_data:
        text = re.sub(
            r"^(This model is a fine-tuned version of .*?)\.$",
            lambda m: f"{m.group(1)} on the local data `{local_data}`.",
            text,
            count=1,
            flags=re.MULTILINE,
        )
    return text


_TRAINER_CACHE: dict[type, type] = {}


def _config_class_of(trainer_cls: type) -> type | None:
    """The config class a trainer's `args` annotation names (e.g. `DPOConfig`), with the density fields added."""
    import typing

    from transformers import TrainingArguments

    annotation = inspect.signature(trainer_cls.__init__).parameters.get("args")
    annotation = None if annotation is None else annotation.annotation
    if isinstance(annotation, str):  # postponed annotations: resolve the names the trainer's module defines
        module = inspect.getmodule(trainer_cls)
        try:
            annotation = eval(annotation, vars(module)) if module else None  # noqa: S307 - the trainer's own source
        except Exception:  # names only imported under TYPE_CHECKING
            return None
    for candidate in typing.get_args(annotation) or (annotation,):
        if isinstance(candidate, type) and issubclass(candidate, TrainingArguments):
            return density_config(candidate)
    return None


def with_density_sampling(trainer_cls: type) -> type:
    """`trainer_cls` (any `transformers.Trainer` subclass, e.g. `trl.DPOTrainer`) with [`DensitySamplingMixin`]:

    ```python
    DensityDPOTrainer = with_density_sampling(DPOTrainer)
    trainer = DensityDPOTrainer(model, args=density_config(DPOConfig)(...), train_dataset=..., density_index=index)
    ```
    """
    from transformers import Trainer

    if not (isinstance(trainer_cls, type) and issubclass(trainer_cls, Trainer)):
        raise TypeError(f"with_density_sampling needs a transformers.Trainer subclass, got {trainer_cls!r}.")
    if issubclass(trainer_cls, DensitySamplingMixin):
        return trainer_cls
    if trainer_cls not in _TRAINER_CACHE:
        tags = [*(getattr(trainer_cls, "_tag_names", None) or []), "density-rlhf"]
        namespace = {
            "__doc__": f"[`{trainer_cls.__name__}`] with density-weighted sampling ([`DensitySamplingMixin`]).",
            "__module__": __name__,
            "_tag_names": tags,
            "_density_config_class": _config_class_of(trainer_cls),
            "_name": f"Density {getattr(trainer_cls, '_name', None) or trainer_cls.__name__}",
        }
        _TRAINER_CACHE[trainer_cls] = type(
            f"Density{trainer_cls.__name__}", (DensitySamplingMixin, trainer_cls), namespace
        )
    return _TRAINER_CACHE[trainer_cls]
