"""`DensityRewardTrainer`: TRL's `RewardTrainer` with density-weighted sampling and per-bucket evaluation."""

import copy
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Sampler
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR
from trl import RewardConfig, RewardTrainer

from .config import DensityConfigMixin
from .eval_groups import (
    BUCKET_COLUMN,
    LOSS_WEIGHT_COLUMN,
    GroupLabelCollator,
    add_bucket_column,
    group_columns,
    group_metric_prefix,
    group_vocab,
    pop_group_labels,
    read_seen_ids,
    write_seen_ids,
)
from .index import BUCKETS
from .mixin import DensitySamplingMixin, resume_path


logger = logging.getLogger(__name__)


@dataclass
class DensityRewardConfig(DensityConfigMixin, RewardConfig):
    r"""
    Configuration for [`DensityRewardTrainer`]: every [`~trl.RewardConfig`] field plus the density fields of
    [`DensityConfigMixin`] (`density_sampling`, `density_index_path`, the `density_<name>` weighting overrides, ...),
    documented there once.
    """

    def __post_init__(self):
        super().__post_init__()
        self._validate_density_fields()


class DensityRewardTrainer(DensitySamplingMixin, RewardTrainer):
    """[`~trl.RewardTrainer`] that samples pairs by prompt density and reports metrics per density bucket.

    With `density_sampling=False` and no `density_sampler`, training is exactly `RewardTrainer`'s (same sampler, same
    losses); the index, if given, only adds `density/rare_frac` and per-bucket evaluation metrics.

    Args:
        model: as for [`~trl.RewardTrainer`].
        args ([`DensityRewardConfig`], *optional*): configuration.
        density_index ([`DensityIndex`], *optional*): overrides `args.density_index_path`.
        density_sampler (`torch.utils.data.Sampler`, *optional*): any sampler over the training rows; takes
            precedence over the index (this is how other projects plug in their own weighting).
        **kwargs: every other [`~trl.RewardTrainer`] argument.
    """

    _tag_names = ["trl", "reward-trainer", "density-rlhf"]
    _name = "Density Reward"
    _density_config_class = DensityRewardConfig
    _supports_group_fields = True
    _supports_bucket_column = True
    _supports_loss_weighting = True

    def __init__(
        self,
        model,
        args: DensityRewardConfig | None = None,
        train_dataset=None,
        eval_dataset=None,
        *,
        density_index=None,
        density_sampler: Sampler | None = None,
        **kwargs,
    ):
        args = self._density_args(model, args)
        args = self._end_token_for_encoders(model, args, kwargs)
        self._eval_counts: Counter = Counter()
        self._seen_ids: list[str] = []
        self._last_bucket_eval: dict[str, dict[str, float]] = {}
        super().__init__(
            model,
            args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            density_index=density_index,
            density_sampler=density_sampler,
            **kwargs,
        )
        self._group_vocab = group_vocab(self._group_columns, *self._group_sources)
        loss_weighting = args.density_sampling and args.density_weighting == "loss"  # (a density_sampler is refused)
        if loss_weighting:  # the sampler's weights over the processed rows, mean 1, as a training column
            self._loss_weights_sampler = self._density_row_sampler()
            weights = self._loss_weights_sampler.weights * len(self._loss_weights_sampler.weights)
            self.train_dataset = self.train_dataset.add_column(LOSS_WEIGHT_COLUMN, weights.tolist())
        if self._group_columns or args.record_seen_ids or loss_weighting:
            self.data_collator = GroupLabelCollator(self.data_collator, self._group_vocab, args.record_seen_ids)

    def _prepare_density_datasets(self, args, train_dataset, eval_dataset) -> tuple:
        """The bucket column on every split, and the group columns evaluation reports by."""
        index = self.density_index
        train_dataset = add_bucket_column(train_dataset, index, args, "train")
        if isinstance(eval_dataset, dict):
            eval_dataset = {k: add_bucket_column(v, index, args, f"eval[{k}]") for k, v in eval_dataset.items()}
        else:
            eval_dataset = add_bucket_column(eval_dataset, index, args, "eval")
        eval_sets = list(eval_dataset.values()) if isinstance(eval_dataset, dict) else [eval_dataset]
        self._group_columns = group_columns(args, eval_sets[0] if eval_sets[0] is not None else train_dataset)
        if (
            train_dataset is not None
            and BUCKET_COLUMN in train_dataset.column_names
            and BUCKET_COLUMN not in self._group_columns
        ):
            self._group_columns.insert(0, BUCKET_COLUMN)
        self._group_sources = [train_dataset, *eval_sets]
        return train_dataset, eval_dataset

    @staticmethod
    def _end_token_for_encoders(model, args: DensityRewardConfig, kwargs: dict) -> DensityRewardConfig:
        """Encoder tokenizers (BERT, MiniLM) have no EOS token for `RewardTrainer` to append: use their SEP token,
        which ends a sequence there, unless `eos_token` is set. Returns the (copied) config."""
        if args.eos_token is not None:
            return args
        tokenizer = kwargs.get("processing_class")
        if tokenizer is None and isinstance(model, str):
            from transformers import AutoTokenizer

            tokenizer = kwargs["processing_class"] = AutoTokenizer.from_pretrained(
                model, trust_remote_code=args.trust_remote_code
            )
        if tokenizer is None or getattr(tokenizer, "eos_token", None) is not None:
            return args
        sep = getattr(tokenizer, "sep_token", None)
        if sep is None:
            raise ValueError(
                f"{type(tokenizer).__name__} has neither an EOS nor a SEP token to end each text with; set `eos_token` "
                "to a token of its vocabulary."
            )
        logger.info("the tokenizer has no EOS token: ending each text with its SEP token %r (set `eos_token`)", sep)
        args = copy.copy(args)
        args.eos_token = sep
        return args

    def train(self, resume_from_checkpoint: str | bool | None = None, trial=None, **kwargs):
        checkpoint = resume_path(self.args.output_dir, resume_from_checkpoint)
        # a resumed run continues the ids its checkpoint recorded, so the file holds the whole run
        self._seen_ids = read_seen_ids(checkpoint, self.args.process_index) if self.args.record_seen_ids else []
        result = super().train(resume_from_checkpoint=resume_from_checkpoint, trial=trial, **kwargs)
        if self.args.record_seen_ids:
            write_seen_ids(self._seen_ids, self.args.output_dir, self.args.process_index)
        return result

    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self.args.record_seen_ids:
            checkpoint = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            write_seen_ids(
                self._seen_ids, str(Path(self._get_output_dir(trial=trial), checkpoint)), self.args.process_index
            )

    # --- metrics --------------------------------------------------------------------------------------------------
    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()
        extra = ["id"] if self.args.record_seen_ids else []
        extra += [LOSS_WEIGHT_COLUMN] if self._loss_weights_sampler is not None else []
        self._signature_columns = list(dict.fromkeys([*self._signature_columns, *self._group_columns, *extra]))

    def _remove_unused_columns(self, dataset, description: str | None = None):
        dataset = super()._remove_unused_columns(dataset, description=description)
        if (description or "").lower() == "training":  # training logs only the bucket; topic groups are for eval
            eval_only = [c for c in self._group_columns if c != BUCKET_COLUMN and c in dataset.column_names]
            dataset = dataset.remove_columns(eval_only) if eval_only else dataset
        return dataset

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        groups = pop_group_labels(inputs)
        row_ids = inputs.pop("row_ids", None)
        if row_ids is not None and self.model.training:
            self._seen_ids.extend(row_ids)
        weights = inputs.pop(LOSS_WEIGHT_COLUMN, None)
        margin = inputs.get("margin")
        loss, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        if weights is not None and self.model.training:  # density_weighting: loss: TRL's loss, each pair weighted
            chosen, rejected = torch.chunk(outputs.logits.squeeze(-1), chunks=2)
            loss = (self._pair_losses(chosen, rejected, margin) * weights.to(chosen.device, chosen.dtype)).mean()
        if groups or not self.model.training:
            self._log_groups(outputs.logits.detach(), groups, margin)
        return (loss, outputs) if return_outputs else loss

    def _pair_losses(self, chosen: torch.Tensor, rejected: torch.Tensor, margin: torch.Tensor | None) -> torch.Tensor:
        """Each pair's share of TRL's `RewardTrainer.compute_loss` (its `margin` and `center_rewards_coefficient`
        terms included): TRL's batch loss is the mean of these."""
        diff = chosen - rejected if margin is None else chosen - rejected - margin.float()
        losses = -F.logsigmoid(diff)
        if self.args.center_rewards_coefficient is not None:
            losses = losses + self.args.center_rewards_coefficient * (chosen + rejected) ** 2
        return losses

    def _log_groups(self, logits: torch.Tensor, groups: dict[str, torch.Tensor], margin=None) -> None:
        mode = "train" if self.model.training else "eval"
        if mode == "train":  # only the share of rare-bucket pairs; the per-group metrics are evaluation's
            if BUCKET_COLUMN in groups:
                rare = (
                    self._group_vocab[BUCKET_COLUMN].index("rare")
                    if "rare" in self._group_vocab[BUCKET_COLUMN]
                    else -2
                )
                is_rare = self.accelerator.gather_for_metrics(
                    (groups[BUCKET_COLUMN] == rare).float().to(logits.device)
                )
                self._metrics[mode]["density/rare_frac"].extend(is_rare.tolist())
            return
        chosen, rejected = torch.chunk(logits.squeeze(-1).float(), chunks=2)
        correct = self.accelerator.gather_for_metrics((chosen > rejected).float())
        losses = self.accelerator.gather_for_metrics(self._pair_losses(chosen, rejected, margin))
        # per pair, unlike TRL's `eval_accuracy` (a mean of batch means, in which a short last batch weighs as much)
        self._metrics[mode]["all_accuracy"].extend(correct.tolist())
        self._metrics[mode]["all_loss"].extend(losses.tolist())
        groups = {col: self.accelerator.gather_for_metrics(codes.to(logits.device)) for col, codes in groups.items()}
        for col, codes in groups.items():
            for code, value in enumerate(self._group_vocab[col]):
                mask = codes == code
                if not mask.any():
                    continue
                prefix = group_metric_prefix(col, value)
                self._metrics[mode][f"{prefix}_accuracy"].extend(correct[mask].tolist())
                self._metrics[mode][f"{prefix}_loss"].extend(losses[mask].tolist())
                if col == BUCKET_COLUMN:
                    self._eval_counts[value] += int(mask.sum())

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        self._eval_counts = Counter()
        metrics = super().evaluate(
            eval_dataset=eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix
        )
        table = {}
        if f"{metric_key_prefix}_all_accuracy" in metrics:
            table["all"] = {
                "accuracy": metrics[f"{metric_key_prefix}_all_accuracy"],
                "loss": metrics[f"{metric_key_prefix}_all_loss"],
                "count": sum(self._eval_counts.values()) or "",
            }
        for bucket in BUCKETS:
            if f"{metric_key_prefix}_{bucket}_accuracy" in metrics:
                table[bucket] = {
                    "accuracy": metrics[f"{metric_key_prefix}_{bucket}_accuracy"],
                    "loss": metrics[f"{metric_key_prefix}_{bucket}_loss"],
                    "count": self._eval_counts[bucket],
                }
        if table:
            self._last_bucket_eval = table
        return metrics

    # --- model card -----------------------------------------------------------------------------------------------
    def _density_card_table(self) -> dict:
        return self._last_bucket_eval
