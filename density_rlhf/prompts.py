"""Prompt texts and ids: text normalization, the text of a string or chat-message prompt, its stable id, pair ids, and
the helpers that add ids to a dataset or list its distinct prompts."""

import hashlib
import re
import unicodedata
from typing import Any


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


PROMPT_TURNS = ("last_user", "dialogue")


def _message_text(message: Any) -> tuple[str, str]:
    """`(role, text)` of one chat message; a content given as parts keeps its text parts."""
    if not isinstance(message, dict) or "role" not in message or "content" not in message:
        raise ValueError(f"a message must be a dict with 'role' and 'content', got {message!r:.80}.")
    content = message["content"]
    if isinstance(content, list):  # multimodal parts: [{"type": "text", "text": ...}, {"type": "image"}, ...]
        content = "\n".join(part["text"] for part in content if isinstance(part, dict) and part.get("type") == "text")
    if not isinstance(content, str):
        raise ValueError(f"a message's content must be a string or a list of parts, got {type(content).__name__}.")
    return str(message["role"]), content


def prompt_text(prompt: Any, turns: str = "last_user") -> str:
    """The text of a prompt that is hashed (`prompt_id`) and embedded (`DensityIndex`), normalized.

    A string is used as it is. A list of messages (TRL's conversational format, `[{"role": ..., "content": ...}]`)
    gives, with `turns="last_user"` (the default), the content of its last user message: the request the density
    should describe, short enough for the embedder's window. With `turns="dialogue"` it gives every message as a
    `role: content` block, blank-line separated. `ValueError` for an empty prompt or messages without a user turn,
    `TypeError` for anything else.
    """
    if turns not in PROMPT_TURNS:
        raise ValueError(f"turns must be one of {PROMPT_TURNS}, got {turns!r}.")
    if isinstance(prompt, str):
        text = normalize_text(prompt)
    elif isinstance(prompt, (list, tuple)):
        messages = [_message_text(m) for m in prompt]
        if turns == "dialogue":
            text = normalize_text("\n\n".join(f"{role}: {content}" for role, content in messages))
        else:
            users = [content for role, content in messages if role == "user"]
            if not users:
                raise ValueError(
                    f"the messages have no user turn to take the prompt from (roles: "
                    f"{[role for role, _ in messages]}); pass turns='dialogue'."
                )
            text = normalize_text(users[-1])
    else:
        raise TypeError(
            f"a prompt must be a string or a list of messages ({{'role', 'content'}} dicts), got "
            f"{type(prompt).__name__}."
        )
    if not text:
        raise ValueError("the prompt is empty (after whitespace normalization): it has no text to hash or embed.")
    return text


def prompt_id(prompt: Any, turns: str = "last_user") -> str:
    """Stable id of a prompt, a string or a list of messages: `md5(prompt_text(prompt, turns))[:16]` (hex).

    A string's id is the md5 of its normalized text, so a conversational prompt and its `prompt_text` share an id.
    """
    return _text_id(prompt_text(prompt, turns))


def _text_id(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest()[:16]


def prompt_texts(prompts: Any, turns: str = "last_user", *, where: str = "prompt", first: int = 0) -> list[str]:
    """`prompt_text` of each of `prompts`; an error names the bad one (`<where> <first + position>: ...`)."""
    texts = []
    for position, prompt in enumerate(prompts):
        try:
            texts.append(prompt_text(prompt, turns))
        except (TypeError, ValueError) as err:
            raise type(err)(f"{where} {first + position}: {err}") from None
    return texts


def prompt_ids(prompts: Any, turns: str = "last_user", *, where: str = "prompt", first: int = 0) -> list[str]:
    """`prompt_id` of each of `prompts`; an error names the bad one, as `prompt_texts` does."""
    return [_text_id(text) for text in prompt_texts(prompts, turns, where=where, first=first)]


def add_prompt_ids(dataset: Any, column: str = "prompt", id_column: str = "prompt_id", turns: str = "last_user"):
    """`dataset` (a `datasets.Dataset`) with `id_column` = `prompt_id(row[column], turns)`, as a new dataset; a row
    whose prompt has no id is named in the error."""
    if column not in dataset.column_names:
        raise ValueError(
            f"the dataset has no {column!r} column to take prompt ids from (columns: {dataset.column_names})."
        )

    def ids(batch: dict, rows: list[int]) -> dict:
        return {id_column: prompt_ids(batch[column], turns, where=f"column {column!r}, row", first=rows[0])}

    return dataset.map(ids, batched=True, with_indices=True, desc=f"prompt ids from {column!r}")


def unique_prompts(prompts: Any, turns: str = "last_user") -> tuple[list[str], list[str]]:
    """`(texts, ids)` of the distinct prompts of `prompts` (strings or message lists) in order of first appearance,
    as `DensityIndex.build` takes them."""
    texts = {}
    for text in prompt_texts(prompts, turns):
        texts.setdefault(_text_id(text), text)
    return list(texts.values()), list(texts)


def pair_id(prompt: str, chosen: str, rejected: str) -> str:
    """Stable id of a preference pair; exact duplicate pairs share it."""
    payload = "\x1f".join((prompt, chosen, rejected)).encode("utf-8")
    return hashlib.sha1(payload).hexdigest()[:16]
