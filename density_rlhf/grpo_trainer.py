"""`DensityGRPOTrainer`: TRL's `GRPOTrainer` with density-weighted prompts, alternative advantages and an SFT term."""

import copy
import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from accelerate.utils import gather_object
from torch.utils.data import Sampler
from trl import GRPOConfig, GRPOTrainer
from trl.trainer.utils import nanstd

from .advantages import ADVANTAGE_MODES, compute_advantages, softmax_weights, weight_statistics
from .config import DensityConfigMixin, refuse_reward_only_fields
from .eval_groups import BUCKET_COLUMN, add_bucket_column
from .index import BUCKETS
from .mixin import DensitySamplingMixin
from .reward_model import RewardModelScorer, completion_text


logger = logging.getLogger(__name__)

_SFT_KEYS = ("sft_input_ids", "sft_attention_mask", "sft_labels")


@dataclass
class DensityGRPOConfig(DensityConfigMixin, GRPOConfig):
    r"""
    Configuration for [`DensityGRPOTrainer`]: every [`~trl.GRPOConfig`] field, the density fields of
    [`DensityConfigMixin`], and:

    Parameters:
        advantage_mode (`str`, *optional*, defaults to `"grpo"`):
            `grpo` (TRL's group whitening, honouring `scale_rewards`), `softmax` (A = n softmax(R/tau) - 1, advantage-weighted
            regression's weights) or `gaussian_quantile` (within-group ranks mapped to normal quantiles). See
            `density_rlhf.advantages`.
        softmax_temperature (`float`, *optional*, defaults to `1.0`):
            tau of the `softmax` mode (also used for the logged weight statistics).
        sft_coef (`float`, *optional*, defaults to `0.0`):
            lambda of L = L_RL + lambda * NLL(chosen | prompt): teacher forcing on the dataset's preferred response.
        sft_column (`str`, *optional*, defaults to `"chosen"`):
            Column with the response used by the SFT term.
        reward_model_path (`str` or `None`, *optional*):
            Trained reward model (a sequence classifier with one label), added to the reward functions. It scores
            `prompt + completion + eos`, exactly the text `RewardTrainer` trained it on.
        density_replacement (`bool`, *optional*, defaults to `True`):
            Draw each generation batch's prompts with replacement (by weight), or as a weighted permutation without
            replacement (with uniform weights exactly TRL's first-epoch order).
    """

    advantage_mode: str = field(default="grpo", metadata={"help": f"One of {ADVANTAGE_MODES}."})
    softmax_temperature: float = field(default=1.0, metadata={"help": "Temperature tau of the softmax mode."})
    sft_coef: float = field(default=0.0, metadata={"help": "Weight lambda of the NLL(chosen | prompt) term."})
    sft_column: str = field(default="chosen", metadata={"help": "Column with the response for the SFT term."})
    reward_model_path: str | None = field(default=None, metadata={"help": "Trained reward model to score with."})
    density_replacement: bool = field(
        default=True, metadata={"help": "Draw prompts with replacement (else a weighted permutation without)."}
    )

    def __post_init__(self):
        super().__post_init__()
        self._validate_density_fields()
        if self.advantage_mode not in ADVANTAGE_MODES:
            raise ValueError(f"advantage_mode must be one of {ADVANTAGE_MODES}, got {self.advantage_mode!r}.")
        if not self.softmax_temperature > 0:
            raise ValueError(f"softmax_temperature must be > 0, got {self.softmax_temperature}.")
        if self.sft_coef < 0:
            raise ValueError(f"sft_coef must be >= 0, got {self.sft_coef}.")
        if self.advantage_mode != "grpo" and self.multi_objective_aggregation != "sum_then_normalize":
            raise ValueError(
                f"advantage_mode={self.advantage_mode!r} computes its advantages from the weighted sum of the rewards "
                f"(`sum_then_normalize`); multi_objective_aggregation={self.multi_objective_aggregation!r} would be "
                "ignored. Set multi_objective_aggregation: sum_then_normalize, or advantage_mode: grpo."
            )
        refuse_reward_only_fields(self, "GRPO config")


class DensityGRPOTrainer(DensitySamplingMixin, GRPOTrainer):
    """[`~trl.GRPOTrainer`] with density-weighted prompt sampling, the advantage modes of
    `density_rlhf.advantages`, an optional SFT term, and per-density-bucket reward logging.

    Args:
        model: as for [`~trl.GRPOTrainer`].
        reward_funcs: as for [`~trl.GRPOTrainer`]; `args.reward_model_path` is appended.
        args ([`DensityGRPOConfig`], *optional*): configuration.
        density_index ([`DensityIndex`], *optional*): overrides `args.density_index_path`.
        density_sampler (`torch.utils.data.Sampler`, *optional*): your own prompt sampler (must keep TRL's
            `RepeatSampler` contract).
        **kwargs: every other [`~trl.GRPOTrainer`] argument.
    """

    _tag_names = ["trl", "grpo", "density-rlhf"]
    _name = "Density GRPO"
    _density_config_class = DensityGRPOConfig
    _supports_bucket_column = True

    def __init__(
        self,
        model,
        reward_funcs=None,
        args: DensityGRPOConfig | None = None,
        train_dataset=None,
        eval_dataset=None,
        *,
        density_index=None,
        density_sampler: Sampler | None = None,
        **kwargs,
    ):
        args = self._density_args(model, args)
        if args.sft_coef > 0 and (train_dataset is None or args.sft_column not in train_dataset.column_names):
            raise ValueError(
                f"sft_coef={args.sft_coef} needs a {args.sft_column!r} column in the train dataset (the response to "
                "teacher-force); use preference data or set sft_coef=0."
            )
        reward_funcs, weights = self._build_reward_funcs(reward_funcs, args, train_dataset)
        args = copy.copy(args)  # TRL reads the weights of all reward functions from args; leave the caller's intact
        args.reward_weights = weights
        self._reward_buckets: list[str] = []
        super().__init__(
            model,
            reward_funcs,
            args,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            density_index=density_index,
            density_sampler=density_sampler,
            **kwargs,
        )
        for func in self.reward_funcs:
            if isinstance(func, RewardModelScorer):
                func.prepare(self.accelerator, self.is_deepspeed_enabled)

    def _prepare_density_datasets(self, args, train_dataset, eval_dataset) -> tuple:
        """The bucket column on both splits, for the per-bucket reward metrics."""
        return (
            add_bucket_column(train_dataset, self.density_index, args, "train"),
            add_bucket_column(eval_dataset, self.density_index, args, "eval"),
        )

    @staticmethod
    def _build_reward_funcs(reward_funcs, args: DensityGRPOConfig, train_dataset) -> tuple[list, list[float]]:
        if reward_funcs is None:
            funcs = []
        else:
            funcs = list(reward_funcs) if isinstance(reward_funcs, (list, tuple)) else [reward_funcs]
        weights = list(args.reward_weights) if args.reward_weights is not None else [1.0] * len(funcs)
        if len(weights) != len(funcs):
            raise ValueError(f"reward_weights has {len(weights)} entries for {len(funcs)} user reward functions.")
        if args.reward_model_path:
            funcs.append(RewardModelScorer(args.reward_model_path, trust_remote_code=args.trust_remote_code))
            weights.append(1.0)
        if not funcs:
            raise ValueError("no reward: pass reward_funcs or set reward_model_path.")
        if not any(w != 0 for w in weights):
            raise ValueError("every reward function has weight 0: nothing would be optimized.")
        return funcs, weights

    # --- rewards and advantages -----------------------------------------------------------------------------------
    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards_per_func = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)
        # Remembered for `_generate_and_score_completions`, gathered like the rewards so rows line up.
        self._last_rewards_per_func = rewards_per_func
        self._reward_buckets = gather_object([str(x.get(BUCKET_COLUMN, "")) for x in inputs])
        return rewards_per_func

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        mode = "train" if self.model.training else "eval"
        num_generations = self.num_generations if mode == "train" else self.num_generations_eval
        per_func = self._last_rewards_per_func
        rewards = self._trl_weighted_rewards(per_func)
        self._log_reward_statistics(mode, rewards, per_func, num_generations)
        if self.args.advantage_mode != "grpo":
            advantages = compute_advantages(
                rewards.cpu(),
                num_generations,
                self.args.advantage_mode,
                temperature=self.args.softmax_temperature,
            )
            local = self._trl_process_rows(advantages, len(inputs))
            output["advantages"] = local.to(output["advantages"].device, output["advantages"].dtype)
            self._log_used_advantages(advantages)
        if mode == "train" and self.args.sft_coef > 0:
            output.update(self._sft_batch(inputs, output["prompt_ids"].device))
        return output

    # --- the TRL seam: what TRL computes inside `_generate_and_score_completions` and keeps local -------------------
    # trl 1.16 `trainer/grpo_trainer.py`; the fragments are pinned by tests/test_upstream_contract.py. The weighted
    # reward sum, `_trl_weighted_rewards`, is the mixin's (RLOO computes it the same way).
    def _trl_process_rows(self, gathered: torch.Tensor, rows: int) -> torch.Tensor:
        """This process's rows of a tensor gathered over processes, as TRL slices its advantages (≈2813-2818)."""
        start = self.accelerator.process_index * rows
        return gathered[start : start + rows]

    def _log_used_advantages(self, advantages: torch.Tensor) -> None:
        """Put the advantages used, not TRL's, in the completions table: TRL appended its all-process advantages of
        this batch last to `self._logs["advantages"]`."""
        logged = self._logs["advantages"]
        for _ in range(min(len(advantages), len(logged))):
            logged.pop()
        logged.extend(advantages.tolist())

    def _log_reward_statistics(self, mode: str, rewards: torch.Tensor, per_func: torch.Tensor, num_generations: int):
        metrics = self._metrics[mode]
        grouped = rewards.view(-1, num_generations)
        if num_generations > 1:  # the share of zero-std groups is TRL's own `frac_reward_zero_std`
            metrics["reward/group_std"].append(torch.nanmean(nanstd(grouped, dim=1)).item())
        for key, value in weight_statistics(
            softmax_weights(rewards.cpu(), num_generations, self.args.softmax_temperature)
        ).items():
            metrics[f"advantages/{key}"].append(value)
        buckets = self._reward_buckets
        if not buckets or not any(buckets):
            return
        if mode == "train":
            metrics["density/rare_frac"].append(sum(b == "rare" for b in buckets) / len(buckets))
        for bucket in BUCKETS:
            mask = torch.tensor([b == bucket for b in buckets], device=rewards.device)
            if not mask.any():
                continue
            metrics[f"density/{bucket}/reward"].append(torch.nanmean(rewards[mask]).item())
            for i, name in enumerate(self.reward_func_names):  # each function, weighted or only logged (weight 0)
                metrics[f"density/{bucket}/rewards/{name}"].append(torch.nanmean(per_func[mask, i]).item())

    def _sft_batch(self, inputs: list[dict[str, Any]], device) -> dict[str, torch.Tensor]:
        """Prompt + preferred response, with labels on the response only, for the NLL term."""
        from torch.nn.utils.rnn import pad_sequence
        from trl.data_utils import _tokenize

        tokenizer = self.processing_class
        ids, labels = [], []
        for example in inputs:
            prompt, response = example["prompt"], example[self.args.sft_column]
            if isinstance(prompt, str):
                prompt_ids = _tokenize(tokenizer, prompt)["input_ids"]
                full = prompt_ids + _tokenize(tokenizer, completion_text(response))["input_ids"]
            else:
                prompt_ids = _tokenize(tokenizer, prompt, add_generation_prompt=True)["input_ids"]
                full = _tokenize(tokenizer, [*prompt, {"role": "assistant", "content": completion_text(response)}])[
                    "input_ids"
                ]
            limit = len(prompt_ids) + (self.args.max_completion_length or 256)
            full = [*full[:limit], tokenizer.eos_token_id] if isinstance(prompt, str) else full[:limit]
            ids.append(torch.tensor(full))
            labels.append(torch.tensor([-100] * len(prompt_ids) + full[len(prompt_ids) :]))
        return {
            "sft_input_ids": pad_sequence(ids, batch_first=True, padding_value=tokenizer.pad_token_id).to(device),
            "sft_attention_mask": pad_sequence([torch.ones_like(i) for i in ids], batch_first=True).to(device),
            "sft_labels": pad_sequence(labels, batch_first=True, padding_value=-100).to(device),
        }

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        sft = {key: inputs.pop(key) for key in _SFT_KEYS if key in inputs}
        loss = super().compute_loss(
            model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch
        )
        if sft and self.args.sft_coef > 0:
            nll = model(
                input_ids=sft["sft_input_ids"],
                attention_mask=sft["sft_attention_mask"],
                labels=sft["sft_labels"],
                use_cache=False,
            ).loss
            # GRPO's loss is already divided by the accumulation steps; scale the NLL term the same way.
            loss = loss + self.args.sft_coef * nll / self.current_gradient_accumulation_steps
            self._metrics["train"]["sft/nll"].append(self.accelerator.gather(nll.detach()).mean().item())
        return loss

    # --- model card -----------------------------------------------------------------------------------------------
    def _density_card_extra(self) -> str:
        extra = f"- Advantage mode: `{self.args.advantage_mode}`; SFT coefficient {self.args.sft_coef}\n"
        if self.args.reward_model_path:
            extra += f"- Reward model: `{self.args.reward_model_path}`\n"
        return extra
