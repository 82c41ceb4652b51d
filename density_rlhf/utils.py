"""Small helpers shared by every stage: text normalization, prompt ids, loading helper models whole."""

import contextlib
import hashlib
import re
import unicodedata
from collections.abc import Iterator


_HSPACE_RUN = re.compile(r"(?<=\S)[^\S\n]+")
_BLANK_LINES = re.compile(r"\n{3,}")


def normalize_text(text: str) -> str:
    """Unicode NFC, whitespace runs collapsed, stripped.

    Runs of spaces and tabs inside a line become one space and runs of blank lines become one blank line. Leading
    indentation and single newlines survive, so dialogue turns and code blocks stay readable.
    """
    text = unicodedata.normalize("NFC", text).replace("\r\n", "\n").replace("\r", "\n")
    lines = [_HSPACE_RUN.sub(" ", line).rstrip() for line in text.split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def prompt_id(text: str) -> str:
    """Stable id of a prompt: `md5(text.encode("utf-8")).hexdigest()[:16]` of the normalized prompt."""
    return hashlib.md5(normalize_text(text).encode("utf-8")).hexdigest()[:16]


def pair_id(prompt: str, chosen: str, rejected: str) -> str:
    """Stable id of a preference pair; exact duplicate pairs share it."""
    payload = "\x1f".join((prompt, chosen, rejected)).encode("utf-8")
    return hashlib.sha1(payload).hexdigest()[:16]


@contextlib.contextmanager
def whole_weights() -> Iterator[None]:
    """Load helper models (the prompt embedder) with whole weights even while a ZeRO-3 config is active.

    `TrainingArguments` registers its DeepSpeed config globally, and under ZeRO-3 `from_pretrained` then partitions
    every model it loads. A helper that no DeepSpeed engine wraps would keep empty weights on every rank
    ("'weight' must be 2-D"). transformers has no public switch for this, so the registration is lifted here.
    """
    from transformers.integrations import deepspeed

    ref = deepspeed._hf_deepspeed_config_weak_ref
    config = ref() if ref is not None else None
    if config is None:
        yield
        return
    deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        deepspeed.set_hf_deepspeed_config(config)
