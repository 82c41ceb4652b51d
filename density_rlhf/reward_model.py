"""`RewardModelScorer`: a trained sequence-classification reward model as a GRPO reward function."""

from typing import Any

import torch


def completion_text(completion: Any) -> str:
    return completion if isinstance(completion, str) else completion[-1]["content"]


def load_reward_model(path: str, *, trust_remote_code: bool = False):
    """The sequence classifier saved in `path`: a full model, or a LoRA adapter (`adapter_config.json`, as the RM
    recipe saves with `--use_peft true`) loaded on its base model and merged into it."""
    from pathlib import Path

    from transformers import AutoModelForSequenceClassification

    if Path(path, "adapter_config.json").exists():
        from peft import AutoPeftModelForSequenceClassification

        model = AutoPeftModelForSequenceClassification.from_pretrained(path, trust_remote_code=trust_remote_code)
        return model.merge_and_unload()
    return AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=trust_remote_code)


class RewardModelScorer:
    """Reward function scoring with a trained sequence-classification reward model.

    Texts are built and tokenized exactly as `RewardTrainer` does for training (`prompt + completion + eos`, or the
    chat template for conversational data), so the reward model sees the distribution it was trained on.
    """

    def __init__(
        self, path: str, *, trust_remote_code: bool = False, batch_size: int = 64, max_length: int | None = None
    ):
        from transformers import AutoConfig, AutoTokenizer

        try:
            config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
        except (OSError, ValueError) as err:
            raise ValueError(
                f"reward_model_path {path!r} is not a model directory or Hub id ({err}). Train one with "
                "`recipes/train_rm.py` or fix the path."
            ) from None
        architectures = config.architectures or []
        if not any(a.endswith("ForSequenceClassification") for a in architectures) or config.num_labels != 1:
            raise ValueError(
                f"reward_model_path {path!r} is not a reward model: architectures {architectures}, num_labels "
                f"{config.num_labels}; expected a *ForSequenceClassification with num_labels=1."
            )
        self.tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = load_reward_model(path, trust_remote_code=trust_remote_code).eval()
        if self.model.config.pad_token_id is None:  # the base model of an adapter may not name one
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.batch_size = batch_size
        self.max_length = max_length
        self.device = torch.device("cpu")
        self.__name__ = "reward_model"
        self.path = path

    def to(self, device) -> "RewardModelScorer":
        self.model.to(device)
        self.device = torch.device(device)
        return self

    def prepare(self, accelerator, deepspeed: bool) -> "RewardModelScorer":
        """Place the model as TRL places reward models (trl 1.16 `GRPOTrainer.__init__` ≈1208-1216, which places only
        `PreTrainedModel` reward functions; pinned by tests/test_upstream_contract.py): a DeepSpeed inference engine
        under DeepSpeed (under ZeRO-3 the weights were partitioned at load and are gathered per forward), else
        `prepare_model` in eval mode."""
        if deepspeed:
            from trl.models import prepare_deepspeed

            self.model = prepare_deepspeed(self.model, accelerator)
        else:
            self.model = accelerator.prepare_model(self.model, evaluation_mode=True, device_placement=True)
        self.device = accelerator.device
        return self

    def _ids(self, prompt: Any, completion: Any) -> list[int]:
        """Token ids as `RewardTrainer` builds them; beyond `max_length` only the last tokens (the response and its
        end) are kept."""
        from trl.data_utils import _tokenize

        if isinstance(prompt, str):
            end = self.tokenizer.eos_token or self.tokenizer.sep_token or ""  # encoders end with SEP (RM trainer)
            ids = _tokenize(self.tokenizer, prompt + completion_text(completion) + end)["input_ids"]
        else:
            messages = [*prompt, {"role": "assistant", "content": completion_text(completion)}]
            ids = _tokenize(self.tokenizer, messages)["input_ids"]
        return ids[-self.max_length :] if self.max_length else ids

    @torch.inference_mode()
    def __call__(self, prompts: list, completions: list, **kwargs) -> list[float]:
        from torch.nn.utils.rnn import pad_sequence

        device = self.device
        scores = []
        for start in range(0, len(prompts), self.batch_size):
            ids = [
                torch.tensor(self._ids(p, c))
                for p, c in zip(prompts[start : start + self.batch_size], completions[start : start + self.batch_size])
            ]
            input_ids = pad_sequence(ids, batch_first=True, padding_value=self.tokenizer.pad_token_id).to(device)
            mask = pad_sequence([torch.ones_like(i) for i in ids], batch_first=True, padding_value=0).to(device)
            scores += self.model(input_ids=input_ids, attention_mask=mask).logits[:, 0].float().tolist()
        return scores
