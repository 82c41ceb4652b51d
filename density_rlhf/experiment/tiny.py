"""Offline tokenizer and tiny models, so every default recipe and test runs without the Hub."""

import logging
from collections.abc import Iterable
from pathlib import Path

from transformers import PreTrainedTokenizerFast


logger = logging.getLogger(__name__)

SPECIAL_TOKENS = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}
ROLE_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>"]
# Same layout as Zephyr/alignment-handbook: role marker, newline, content, end of sequence.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int = 1024) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE tokenizer on `texts` and wrap it for transformers, with a chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token=SPECIAL_TOKENS["unk_token"]))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[*SPECIAL_TOKENS.values(), *ROLE_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    wrapped = PreTrainedTokenizerFast(tokenizer_object=tokenizer, **SPECIAL_TOKENS)
    wrapped.add_special_tokens({"additional_special_tokens": ROLE_TOKENS})
    wrapped.chat_template = CHAT_TEMPLATE
    wrapped.padding_side = "left"  # generation pads on the left; TRL collators set their own side
    return wrapped


def write_tiny_models(
    tokenizer: PreTrainedTokenizerFast,
    output_dir: str | Path,
    *,
    hidden_size: int = 96,
    num_layers: int = 2,
    num_heads: int = 4,
    max_position_embeddings: int = 512,
    seed: int = 0,
) -> dict[str, Path]:
    """Write a tiny Llama causal LM (`policy/`) and sequence classifier (`reward/`) with `tokenizer` to `output_dir`.

    Both are randomly initialized from `seed`. Returns the two directories.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

    output_dir = Path(output_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 4,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    paths = {}
    for name, cls, extra in (
        ("policy", LlamaForCausalLM, {}),
        ("reward", LlamaForSequenceClassification, {"num_labels": 1}),
    ):
        torch.manual_seed(seed)
        model = cls(LlamaConfig(**{**config.to_dict(), **extra}))
        path = output_dir / name
        # `_name_or_path` is what TRL logs and reloads reference models from, so make it the local path.
        model.config._name_or_path = str(path)
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
        paths[name] = path
        logger.info("wrote tiny %s model (%d parameters) to %s", name, model.num_parameters(), path)
    return paths
