"""The density fields every density-sampling config carries, and `density_config()` to add them to any TRL config."""

import dataclasses
from dataclasses import dataclass, field

from .row_weights import MISSING_POLICIES, PAIR_WEIGHTINGS
from .schedule import SCHEDULES
from .selection import SelectionRules
from .settings import (
    REWEIGHTABLE,
    WeightingSettings,
    check_weighting,
    overrides_from,
    settings_from,
    with_setting_fields,
)


# Where the density weights act: on which rows are drawn, or on each drawn row's loss.
WEIGHTING_MODES = ("sample", "loss")


@dataclass
@with_setting_fields(SelectionRules)
@with_setting_fields(
    WeightingSettings, prefix="density_", overrides=True, names=REWEIGHTABLE, after="density_index_path"
)
class DensityConfigMixin:
    r"""
    Density fields shared by every density-sampling config ([`DensityRewardConfig`], [`DensityGRPOConfig`] and the
    configs `density_config()` builds).

    Parameters:
        density_sampling (`bool`, *optional*, defaults to `False`):
            Sample training rows with probability ∝ density^-alpha of their prompt. Needs `density_index_path`
            (or a `density_index`/`density_sampler` passed to the trainer).
        density_index_path (`str` or `None`, *optional*):
            Directory of a saved [`DensityIndex`]. Also used, with sampling off, to log per-bucket metrics.
        density_weighting (`str`, *optional*, defaults to `"sample"`):
            Where the weights act: `sample` draws rows with probability ∝ weight; `loss` draws rows as the base trainer
            does (uniformly) and multiplies each row's loss by its weight normalized to mean 1 over the training rows
            (the same expected gradient, every row seen every epoch; `DensityRewardTrainer` only).
        density_pair_weighting (`str`, *optional*, defaults to `"per_pair"`):
            `per_pair` gives every pair its prompt's weight; `per_prompt` splits it across the prompt's pairs.
        density_missing (`str`, *optional*, defaults to `"error"`):
            Rows whose prompt id is not in the index: `error`, or `uniform` (mean weight, counted and logged).
        prompt_id_column (`str`, *optional*, defaults to `"prompt_id"`):
            Dataset column holding `density_rlhf.prompt_id(prompt)`.
        density_bucket_column (`str` or `None`, *optional*):
            Use this dataset column as the rare/mid/common bucket instead of the index's buckets (the per-bucket
            metrics of `DensityRewardTrainer` and `DensityGRPOTrainer`; refused by other trainers).
        eval_group_columns (`list[str]` or `None`, *optional*):
            Extra columns to report evaluation metrics by, besides the density bucket (e.g. a topic column)
            (`DensityRewardTrainer` only; refused by other trainers).
        record_seen_ids (`bool`, *optional*, defaults to `False`):
            Write the `id` of every training row each rank saw to `<output_dir>/seen_ids_rank<k>.json`, in order
            (an audit of what the sampler fed each process; `DensityRewardTrainer` only, refused by other trainers).
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

    density_sampling: bool = field(default=False, metadata={"help": "Sample rows by inverse prompt density."})
    density_index_path: str | None = field(default=None, metadata={"help": "Directory of a saved DensityIndex."})
    density_weighting: str = field(
        default="sample",
        metadata={"help": f"One of {WEIGHTING_MODES}: draw rows by weight, or draw uniformly and weight the loss."},
    )
    density_pair_weighting: str = field(default="per_pair", metadata={"help": f"One of {PAIR_WEIGHTINGS}."})
    density_missing: str = field(default="error", metadata={"help": f"One of {MISSING_POLICIES}."})
    prompt_id_column: str = field(default="prompt_id", metadata={"help": "Column with the prompt id."})
    density_bucket_column: str | None = field(default=None, metadata={"help": "Precomputed bucket column."})
    eval_group_columns: list[str] | None = field(
        default=None,
        metadata={
            "help": "Extra columns to report eval metrics by, besides the density bucket (e.g. a topic column)."
        },
    )
    record_seen_ids: bool = field(
        default=False,
        metadata={"help": "Write the `id` of every training row each rank saw to <output_dir>/seen_ids_rank<k>.json."},
    )

    density_alpha_schedule: str = field(default="constant", metadata={"help": f"alpha schedule: one of {SCHEDULES}."})
    density_alpha_start: float = field(default=0.0, metadata={"help": "alpha at the first epoch of a schedule."})
    density_schedule_epochs: int = field(default=1, metadata={"help": "Epochs a linear/cosine alpha schedule spans."})

    def _validate_density_fields(self) -> None:
        if self.density_weighting not in WEIGHTING_MODES:
            raise ValueError(f"density_weighting must be one of {WEIGHTING_MODES}, got {self.density_weighting!r}.")
        if self.density_weighting == "loss" and not self.density_sampling:
            raise ValueError("density_weighting: loss weights the loss by density: it needs density_sampling: true.")
        if self.density_weighting == "loss" and self.density_alpha_schedule != "constant":
            raise ValueError(
                "density_alpha_schedule moves the sampling weights per epoch; with density_weighting: loss use the "
                "constant schedule (or density_weighting: sample)."
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
        try:
            check_weighting(**overrides_from(self))
        except ValueError as err:
            raise ValueError(f"density_{err} Unset it to keep the index's value.") from None
        rules = self.selection_rules()
        if rules.active and self.density_alpha_schedule != "constant":
            raise ValueError(
                "the selection rules and density_alpha_schedule both move the sampling weights: keep the constant "
                "schedule with a selection rule on."
            )
        if rules.active and self.density_weighting == "loss":
            raise ValueError(
                "the selection rules choose which prompts are drawn; they need density_weighting: sample."
            )

    def selection_rules(self) -> SelectionRules:
        """The [`SelectionRules`] these fields set (`ValueError` for a bad one)."""
        return settings_from(self, SelectionRules)


# Fields of the shared density mixin that only `DensityRewardTrainer` implements.
REWARD_ONLY_FIELDS = ("record_seen_ids", "eval_group_columns")


def refuse_reward_only_fields(args: DensityConfigMixin, owner: str) -> None:
    """`ValueError` when `args` sets a field that only `DensityRewardTrainer` implements (`REWARD_ONLY_FIELDS`), so
    that `owner` (a config or trainer name) refuses it instead of ignoring it."""
    used = [name for name in REWARD_ONLY_FIELDS if getattr(args, name) not in (None, False)]
    if used:
        verb = "is" if len(used) == 1 else "are"
        raise ValueError(
            f"{' and '.join(used)} {verb} implemented by DensityRewardTrainer only; remove {'it' if len(used) == 1 else 'them'} "
            f"from the {owner}."
        )


_CONFIG_CACHE: dict[type, type] = {}


def density_config(config_cls: type) -> type:
    """`config_cls` (a `transformers.TrainingArguments` subclass such as `trl.DPOConfig`) with the density fields of
    [`DensityConfigMixin`] and their validation, as a new dataclass `Density<Name>` that `TrlParser` can parse.

    ```python
    from trl import DPOConfig
    DensityDPOConfig = density_config(DPOConfig)
    args = DensityDPOConfig("out", density_sampling=True, density_index_path="outputs/density")
    ```
    """
    from transformers import TrainingArguments

    if not (isinstance(config_cls, type) and issubclass(config_cls, TrainingArguments)):
        raise TypeError(f"density_config needs a TrainingArguments subclass, got {config_cls!r}.")
    if issubclass(config_cls, DensityConfigMixin):
        return config_cls
    if config_cls not in _CONFIG_CACHE:

        def __post_init__(self):
            config_cls.__post_init__(self)
            self._validate_density_fields()

        name = f"Density{config_cls.__name__}"
        namespace = {
            "__post_init__": __post_init__,
            "__doc__": f"[`{config_cls.__name__}`] plus the density fields of [`DensityConfigMixin`].",
            "__module__": __name__,
            "__qualname__": name,
        }
        _CONFIG_CACHE[config_cls] = dataclasses.dataclass(type(name, (DensityConfigMixin, config_cls), namespace))
        globals().setdefault(name, _CONFIG_CACHE[config_cls])  # Trainer pickles `training_args.bin` by name
    return _CONFIG_CACHE[config_cls]


def __getattr__(name: str) -> type:
    """`density_rlhf.config.DensityDPOConfig` and the like, for TRL's configs: unpickling a saved
    `training_args.bin` looks the class up by name in a process that may not have built it yet."""
    import trl

    base = getattr(trl, name.removeprefix("Density"), None) if name.startswith("Density") else None
    if isinstance(base, type):
        return density_config(base)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
