"""Pieces shared by the density-aware trainers: config fields, index loading, bucket columns, group labels."""

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint

from .index import BUCKETS
from .sampler import MISSING_POLICIES, PAIR_WEIGHTINGS
from .schedule import SCHEDULES, AlphaSchedule


logger = logging.getLogger(__name__)

BUCKET_COLUMN = "density_bucket"
SAMPLER_STATE_FILE = "density_sampler_state.json"
HYPOTHESES = ("A", "B", "C", "D", "O")  # O: the oracle (ground-truth reward) positive control


@dataclass
class DensityConfigMixin:
    r"""
    Density fields shared by [`DensityRewardConfig`] and [`DensityGRPOConfig`].

    Parameters:
        hypothesis (`str` or `None`, *optional*):
            Label of the experiment (`A`, `B`, `C`, `D`, or `O` for the ground-truth oracle), written into the model
            card.
        density_sampling (`bool`, *optional*, defaults to `False`):
            Sample training rows with probability ∝ density^-alpha of their prompt. Needs `density_index_path`
            (or a `density_index`/`density_sampler` passed to the trainer).
        density_index_path (`str` or `None`, *optional*):
            Directory of a saved [`DensityIndex`]. Also used, with sampling off, to log per-bucket metrics.
        density_alpha / density_estimator / density_max_weight_ratio / density_uniform_mix (*optional*):
            Override the index's weighting (see [`DensityIndex.reweight`]); `None` keeps the index's values.
        density_pair_weighting (`str`, *optional*, defaults to `"per_pair"`):
            `per_pair` gives every pair its prompt's weight; `per_prompt` splits it across the prompt's pairs.
        density_missing (`str`, *optional*, defaults to `"error"`):
            Rows whose prompt id is not in the index: `error`, or `uniform` (mean weight, counted and logged).
        prompt_id_column (`str`, *optional*, defaults to `"prompt_id"`):
            Dataset column holding `density_rlhf.prompt_id(prompt)`.
        density_bucket_column (`str` or `None`, *optional*):
            Use this dataset column as the rare/mid/common bucket instead of the index's buckets.
        density_bucket_quantiles (`list[float]` or `None`, *optional*):
            Override the index's density quantiles separating rare / mid / common.
        eval_group_columns (`list[str]` or `None`, *optional*):
            Extra columns to report evaluation metrics by; default `topic` and `is_rare` when present.
        record_seen_ids (`bool`, *optional*, defaults to `False`):
            Write the `id` of every training row each rank saw to `<output_dir>/seen_ids_rank<k>.json`, in order
            (an audit of what the sampler fed each process).
        density_alpha_schedule (`str`, *optional*, defaults to `"constant"`):
            `constant` samples by the index's alpha throughout; `linear` or `cosine` move alpha per epoch from
            `density_alpha_start` to the index's alpha (or `density_alpha`) over `density_schedule_epochs` epochs,
            with the index's clipping and mixing at every epoch (`density_rlhf.schedule`). Resumable; logged as
            `density/alpha`.
        density_alpha_start (`float`, *optional*, defaults to `0.0`):
            alpha of the first epoch of a `linear` or `cosine` schedule (0 = uniform).
        density_schedule_epochs (`int`, *optional*, defaults to `1`):
            Epochs a `linear` or `cosine` schedule spans.
    """

    hypothesis: str | None = field(default=None, metadata={"help": "Experiment label (A, B, C or D) for the card."})
    density_sampling: bool = field(default=False, metadata={"help": "Sample rows by inverse prompt density."})
    density_index_path: str | None = field(default=None, metadata={"help": "Directory of a saved DensityIndex."})
    density_alpha: float | None = field(default=None, metadata={"help": "Override the index's alpha."})
    density_estimator: str | None = field(default=None, metadata={"help": "Override the index's estimator."})
    density_max_weight_ratio: float | None = field(default=None, metadata={"help": "Clip weights to this max/min."})
    density_uniform_mix: float | None = field(default=None, metadata={"help": "Mix weights with uniform."})
    density_pair_weighting: str = field(default="per_pair", metadata={"help": f"One of {PAIR_WEIGHTINGS}."})
    density_missing: str = field(default="error", metadata={"help": f"One of {MISSING_POLICIES}."})
    prompt_id_column: str = field(default="prompt_id", metadata={"help": "Column with the prompt id."})
    density_bucket_column: str | None = field(default=None, metadata={"help": "Precomputed bucket column."})
    density_bucket_quantiles: list[float] | None = field(
        default=None, metadata={"help": "Density quantiles separating rare/mid/common."}
    )
    eval_group_columns: list[str] | None = field(
        default=None, metadata={"help": "Columns to report eval metrics by (default: topic, is_rare if present)."}
    )
    record_seen_ids: bool = field(
        default=False,
        metadata={"help": "Write the `id` of every training row each rank saw to <output_dir>/seen_ids_rank<k>.json."},
    )

    density_alpha_schedule: str = field(default="constant", metadata={"help": f"alpha schedule: one of {SCHEDULES}."})
    density_alpha_start: float = field(default=0.0, metadata={"help": "alpha at the first epoch of a schedule."})
    density_schedule_epochs: int = field(default=1, metadata={"help": "Epochs a linear/cosine alpha schedule spans."})

    # Hypotheses whose weighting applies to this config's trainer (set by each config class).
    _density_hypotheses: ClassVar[tuple[str, ...]] = ()

    def _validate_density_fields(self) -> None:
        if self.hypothesis is not None and self.hypothesis not in HYPOTHESES:
            raise ValueError(f"hypothesis must be one of {HYPOTHESES} or None, got {self.hypothesis!r}.")
        if self.hypothesis is not None and self.density_sampling != (self.hypothesis in self._density_hypotheses):
            want = self.hypothesis in self._density_hypotheses
            raise ValueError(
                f"hypothesis {self.hypothesis!r} means density_sampling={want} for {type(self).__name__} (density "
                f"weighting here is hypotheses {list(self._density_hypotheses)}): set `density_sampling: {str(want).lower()}` "
                "or change `hypothesis`."
            )
        if self.density_pair_weighting not in PAIR_WEIGHTINGS:
            raise ValueError(
                f"density_pair_weighting must be one of {PAIR_WEIGHTINGS}, got {self.density_pair_weighting!r}."
            )
        if self.density_missing not in MISSING_POLICIES:
            raise ValueError(f"density_missing must be one of {MISSING_POLICIES}, got {self.density_missing!r}.")
        if self.density_alpha_schedule not in SCHEDULES:
            raise ValueError(
                f"density_alpha_schedule must be one of {SCHEDULES}, got {self.density_alpha_schedule!r}."
            )
        if self.density_alpha_schedule == "constant" and (
            self.density_alpha_start != 0.0 or self.density_schedule_epochs != 1
        ):
            raise ValueError(
                "density_alpha_start and density_schedule_epochs apply to a schedule: set density_alpha_schedule to "
                "`linear` or `cosine`, or remove them."
            )
        if self.density_alpha_schedule != "constant" and not self.density_sampling:
            raise ValueError(
                f"density_alpha_schedule={self.density_alpha_schedule!r} changes sampling weights; it needs "
                "density_sampling: true."
            )
        if self.density_alpha_start < 0 or self.density_schedule_epochs < 1:
            raise ValueError("density_alpha_start must be >= 0 and density_schedule_epochs >= 1.")
        if self.density_alpha is not None and self.density_alpha < 0:
            raise ValueError(f"density_alpha must be >= 0, got {self.density_alpha}.")
        if self.density_bucket_quantiles is not None and len(self.density_bucket_quantiles) != 2:
            raise ValueError("density_bucket_quantiles needs two values, e.g. `--density_bucket_quantiles 0.2 0.8`.")


def load_density_index(args: DensityConfigMixin, index=None):
    """The trainer's index: `index` or `args.density_index_path`, reweighted by the `density_*` overrides."""
    from .index import DensityIndex

    if index is None and args.density_index_path:
        index = DensityIndex.load(args.density_index_path)
    if index is not None:
        index.reweight(
            alpha=args.density_alpha, estimator=args.density_estimator, max_weight_ratio=args.density_max_weight_ratio,
            uniform_mix=args.density_uniform_mix,
            bucket_quantiles=tuple(args.density_bucket_quantiles) if args.density_bucket_quantiles else None,
        )  # fmt: skip
    return index


def require_density_source(args: DensityConfigMixin, index, sampler) -> None:
    if args.density_sampling and index is None and sampler is None:
        raise ValueError(
            "density_sampling=True needs a density index: set `density_index_path` (build one with "
            "`python recipes/build_density.py`), or pass `density_index=` or `density_sampler=` to the trainer."
        )


def _prompt_texts(dataset) -> list[str] | None:
    for column in ("prompt_text", "prompt"):
        if column in dataset.column_names:
            values = dataset[column]
            return [v if isinstance(v, str) else " ".join(m["content"] for m in v) for v in values]
    return None


def sampling_seed(args) -> int:
    """The one seed of every density sampler: `data_seed` when set, else `seed` (transformers' rule for data order)."""
    return args.data_seed if args.data_seed is not None else args.seed


def add_bucket_column(dataset, index, args: DensityConfigMixin, split: str):
    """Add `density_bucket` (rare/mid/common) to `dataset`; prompts not in the index are queried against it."""
    if dataset is None or BUCKET_COLUMN in dataset.column_names:
        return dataset
    if args.density_bucket_column:
        if args.density_bucket_column not in dataset.column_names:
            raise ValueError(f"{split} dataset has no {args.density_bucket_column!r} column (density_bucket_column).")
        return dataset.add_column(BUCKET_COLUMN, [str(b) for b in dataset[args.density_bucket_column]])
    if index is None:
        return dataset
    if args.prompt_id_column not in dataset.column_names:
        raise ValueError(
            f"{split} dataset has no {args.prompt_id_column!r} column, which density sampling and per-bucket metrics "
            "need. Add it with `dataset.map(lambda x: {'prompt_id': density_rlhf.prompt_id(x['prompt'])})`."
        )
    buckets = index.buckets_for(list(dataset[args.prompt_id_column]), _prompt_texts(dataset))
    return dataset.add_column(BUCKET_COLUMN, buckets)


def group_columns(args: DensityConfigMixin, dataset) -> list[str]:
    """Columns evaluation metrics are reported by: the bucket, then `eval_group_columns` (or topic/is_rare)."""
    if dataset is None:
        return []
    wanted = args.eval_group_columns if args.eval_group_columns is not None else ["topic", "is_rare"]
    columns = [BUCKET_COLUMN] + [c for c in wanted if c != BUCKET_COLUMN]
    if args.eval_group_columns:
        missing = [c for c in args.eval_group_columns if c not in dataset.column_names]
        if missing:
            raise ValueError(f"eval_group_columns {missing} are not dataset columns ({dataset.column_names}).")
    return [c for c in columns if c in dataset.column_names]


def group_metric_prefix(column: str, value: str) -> str:
    """`rare` for the bucket column (so metrics read `eval_rare_accuracy`), else `topic/weather`."""
    return value if column == BUCKET_COLUMN else f"{column}/{value}"


class GroupLabelCollator:
    """Wraps a collator: strips the group columns from the examples and adds them back as integer tensors.

    With `record_ids`, the batch also carries the examples' `id`s as a list under `row_ids` (training audit).
    """

    def __init__(self, collator, vocab: dict[str, list[str]], record_ids: bool = False):
        self.collator = collator
        self.vocab = vocab
        self._codes = {col: {v: i for i, v in enumerate(values)} for col, values in vocab.items()}
        self.record_ids = record_ids

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        drop = {*self.vocab, "id"}
        batch = self.collator([{k: v for k, v in example.items() if k not in drop} for example in examples])
        for col, codes in self._codes.items():
            if col not in examples[0]:  # e.g. the eval-only groups in training batches
                continue
            labels = [codes.get(str(example[col]), -1) for example in examples]
            batch[f"group::{col}"] = torch.tensor(labels, dtype=torch.long)
        if self.record_ids:
            batch["row_ids"] = [example.get("id") for example in examples]
        return batch


def pop_group_labels(inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
    return {key.split("::", 1)[1]: inputs.pop(key) for key in [k for k in inputs if k.startswith("group::")]}


def group_vocab(columns: list[str], *datasets) -> dict[str, list[str]]:
    vocab = {}
    for col in columns:
        values = set()
        for dataset in datasets:
            if dataset is not None and col in dataset.column_names:
                values.update(str(v) for v in dataset.unique(col))
        vocab[col] = (
            [b for b in BUCKETS if b in values] + sorted(values - set(BUCKETS))
            if col == BUCKET_COLUMN
            else sorted(values)
        )
    return vocab


def write_seen_ids(ids: list[str], output_dir: str, process_index: int) -> None:
    os.makedirs(output_dir, exist_ok=True)
    Path(output_dir, f"seen_ids_rank{process_index}.json").write_text(json.dumps(ids))


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


def density_card_section(args: DensityConfigMixin, index, sampler, sources: list[str], eval_table: dict) -> str:
    """Markdown appended to the TRL model card: hypothesis, density config and the eval-by-bucket table."""
    lines = ["", "", "## Density-aware sampling (density_rlhf)", ""]
    lines.append(f"- Hypothesis: **{args.hypothesis or 'unspecified'}**")
    lines.append(f"- Density sampling: {'on' if args.density_sampling else 'off'} ({args.density_pair_weighting})")
    if index is not None:
        s = index.summary()
        lines.append(
            f"- Index: embedder `{s['embedder']}`, k = {s['k']}, alpha = {s['alpha']}, estimator `{s['estimator']}`, "
            f"{s['n']} prompts, weight ratio {s['ratio']:.3g}, ESS {s['ess']:.1f}"
        )
    if sampler is not None and hasattr(sampler, "summary"):
        lines.append(f"- Sampler ESS over rows: {sampler.summary()['ess']:.1f} of {sampler.summary()['rows']}")
    lines.append(f"- Data sources: {', '.join(sources) if sources else 'unknown'}")
    if eval_table:
        lines += ["", "| bucket | accuracy | loss | pairs |", "|---|---|---|---|"]
        for bucket, row in eval_table.items():
            lines.append(f"| {bucket} | {row['accuracy']:.4f} | {row['loss']:.4f} | {row.get('count', '')} |")
    return "\n".join(lines) + "\n"


class DensityTrainerMixin:
    """Set-up and model-card pieces shared by `DensityRewardTrainer` and `DensityGRPOTrainer`."""

    def _init_density(self, model, args, config_cls: type, suffix: str, density_index, density_sampler):
        """Default config, index loading and validation; returns the config to hand to TRL."""
        if args is None:
            name = model if isinstance(model, str) else model.config._name_or_path
            args = config_cls(f"{str(name).split('/')[-1]}-{suffix}")
        if not isinstance(args, config_cls):
            raise TypeError(f"args must be a {config_cls.__name__}, got {type(args).__name__}.")
        self.density_index = load_density_index(args, density_index)
        require_density_source(args, self.density_index, density_sampler)
        self._user_sampler = density_sampler
        self._active_sampler = None
        self._resume_checkpoint: str | None = None
        return args

    def _use_sampler(self, sampler):
        """Restore the sampler's state from the checkpoint being resumed (if any) and remember it for saving."""
        load_sampler_state(sampler, self._resume_checkpoint)
        self._active_sampler = sampler
        return sampler

    @property
    def _sampler_stats(self) -> dict[str, float]:
        """density/* training metrics of the active sampler at its current epoch (a schedule moves them); computed
        once per epoch, not at every logging step."""
        sampler = getattr(self, "_active_sampler", None)
        if not hasattr(sampler, "summary"):
            return {}
        key = (id(sampler), getattr(sampler, "epoch", 0))
        if getattr(self, "_sampler_stats_key", None) != key:
            summary = sampler.summary()
            names = ("ess", "alpha", "clip_mass_moved", "clip_clipped_fraction")
            self._sampler_stats_cache = {f"density/{n}": summary[n] for n in names if n in summary}
            self._sampler_stats_key = key
        return self._sampler_stats_cache

    def _density_schedule(self) -> AlphaSchedule | None:
        """The alpha schedule of the config, ending at the index's alpha; `None` for `constant`."""
        if self.args.density_alpha_schedule == "constant":
            return None
        return AlphaSchedule(
            self.args.density_alpha_schedule, self.args.density_alpha_start, self.density_index.metadata["alpha"],
            self.args.density_schedule_epochs,
        )  # fmt: skip

    def train(self, resume_from_checkpoint: str | bool | None = None, trial=None, **kwargs):
        checkpoint = resume_from_checkpoint
        if checkpoint is True:
            checkpoint = get_last_checkpoint(self.args.output_dir)
        self._resume_checkpoint = checkpoint if isinstance(checkpoint, str) else None
        return super().train(resume_from_checkpoint=resume_from_checkpoint, trial=trial, **kwargs)

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self._active_sampler is not None and self.args.should_save:
            run_dir = self._get_output_dir(trial=trial)
            save_sampler_state(
                self._active_sampler, os.path.join(run_dir, f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
            )

    def _append_card_section(self, eval_table: dict, extra: str = "") -> None:
        path = Path(self.args.output_dir, "README.md")
        if not self.is_world_process_zero() or not path.exists():
            return
        sources = sorted(set(self.train_dataset.unique("src"))) if "src" in self.train_dataset.column_names else []
        section = density_card_section(self.args, self.density_index, self._active_sampler, sources, eval_table)
        with open(path, "a", encoding="utf-8") as f:
            f.write(section + extra)
