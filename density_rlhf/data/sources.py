"""Converters from each preference source's original schema to `RawPair`, and `load_pairs`."""

import re
from collections.abc import Iterable
from typing import Any

from datasets import Dataset, load_dataset

from .pairs import PairStats, RawPair, SkipRow, build_rows, log_stats, read_records, require_str, rows_to_dataset


HUB_NAMES = {
    "hh": "Anthropic/hh-rlhf",
    "uf": "HuggingFaceH4/ultrafeedback_binarized",
    "se": "HuggingFaceH4/stack-exchange-preferences",
}
# The split users mean by "train" differs per Hub dataset.
HUB_SPLITS = {"uf": {"train": "train_prefs", "test": "test_prefs"}}

_ASSISTANT = "\n\nAssistant:"
_TURN = re.compile(r"\n\n(Human|Assistant):")


def split_hh_transcript(transcript: str) -> tuple[str, str]:
    """Split an HH-RLHF transcript into (prompt up to and including the final `Assistant:` marker, final reply)."""
    cut = transcript.rfind(_ASSISTANT)
    if cut < 0:
        raise SkipRow("malformed_transcript")
    cut += len(_ASSISTANT)
    return transcript[:cut], transcript[cut:]


def hh_turns(prompt: str) -> list[dict[str, str]]:
    """Conversational messages of an HH prompt; the trailing empty `Assistant:` marker is dropped."""
    parts = _TURN.split("\n\n" + prompt.lstrip("\n"))
    messages = []
    for role, content in zip(parts[1::2], parts[2::2]):
        messages.append({"role": "user" if role == "Human" else "assistant", "content": content.strip()})
    if messages and messages[-1]["role"] == "assistant" and not messages[-1]["content"]:
        messages.pop()
    return messages


def convert_hh(record: dict[str, Any]) -> RawPair:
    """`{"chosen": transcript, "rejected": transcript}`; the prompt is the dialogue both share."""
    prompt, chosen = split_hh_transcript(require_str(record, "chosen"))
    prompt_r, rejected = split_hh_transcript(require_str(record, "rejected"))
    if prompt != prompt_r:
        raise SkipRow("prompt_mismatch")
    return RawPair(prompt, chosen, rejected, messages=hh_turns(prompt))


def _last_assistant(messages: Any) -> tuple[str, list[dict[str, str]]]:
    if not isinstance(messages, list) or not messages:
        raise SkipRow("missing_field")
    last = messages[-1]
    if not isinstance(last, dict) or last.get("role") != "assistant":
        raise SkipRow("malformed_messages")
    return require_str(last, "content"), messages[:-1]


def convert_uf(record: dict[str, Any]) -> RawPair:
    """UltraFeedback binarized: `prompt` string, `chosen`/`rejected` message lists ending with the assistant reply."""
    prompt = require_str(record, "prompt")
    chosen, context = _last_assistant(record.get("chosen"))
    rejected, _ = _last_assistant(record.get("rejected"))
    messages = [m for m in context if isinstance(m, dict) and isinstance(m.get("content"), str)]
    extra = {k: record[k] for k in ("score_chosen", "score_rejected") if isinstance(record.get(k), (int, float))}
    return RawPair(prompt, chosen, rejected, messages=messages or None, extra=extra)


_BLOCK_TAGS = ["p", "div", "ul", "ol", "blockquote", "h1", "h2", "h3", "h4", "h5", "h6", "table", "tr"]


def html_to_text(html: str) -> str:
    """Readable text from Stack Exchange HTML: paragraphs and list items on their own lines, code blocks fenced."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    for pre in soup.find_all("pre"):
        pre.replace_with("\n```\n" + pre.get_text().strip("\n") + "\n```\n\n")
    for br in soup.find_all("br"):
        br.replace_with("\n")
    for tag in soup.find_all("li"):
        tag.insert(0, "- ")
        tag.append("\n")
    for tag in soup.find_all(_BLOCK_TAGS):
        tag.append("\n\n")
    return soup.get_text()


def convert_se(record: dict[str, Any]) -> RawPair:
    """Stack-Exchange preferences: one pair per question, highest vs lowest `pm_score`; ties are skipped."""
    question = require_str(record, "question")
    answers = record.get("answers")
    if not isinstance(answers, list):
        raise SkipRow("missing_field")
    scored = [a for a in answers if isinstance(a, dict) and isinstance(a.get("text"), str)]
    scored = [a for a in scored if isinstance(a.get("pm_score"), (int, float))]
    if len(scored) < 2:
        raise SkipRow("too_few_answers")
    best = max(scored, key=lambda a: a["pm_score"])
    worst = min(scored, key=lambda a: a["pm_score"])
    if best["pm_score"] == worst["pm_score"]:
        raise SkipRow("tied_scores")
    extra = {"score_chosen": float(best["pm_score"]), "score_rejected": float(worst["pm_score"])}
    return RawPair(html_to_text(question), html_to_text(best["text"]), html_to_text(worst["text"]), extra=extra)


def convert_local(record: dict[str, Any]) -> RawPair:
    """A file already in the unified schema; extra scalar columns (e.g. `topic`) are kept."""
    prompt, chosen, rejected = (require_str(record, k) for k in ("prompt", "chosen", "rejected"))
    skip = {"id", "prompt", "chosen", "rejected", "src", "prompt_id"}
    extra = {k: v for k, v in record.items() if k not in skip and isinstance(v, (str, int, float, bool))}
    return RawPair(prompt, chosen, rejected, extra=extra)


CONVERTERS = {"hh": convert_hh, "uf": convert_uf, "se": convert_se, "local": convert_local}


def _hub_records(source: str, split: str, hub_name: str | None, streaming: bool | None, data_dir: str | None):
    name = hub_name or HUB_NAMES[source]
    split = HUB_SPLITS.get(source, {}).get(split, split)
    streaming = source == "se" if streaming is None else streaming  # Stack Exchange is tens of millions of rows
    return load_dataset(name, data_dir=data_dir, split=split, streaming=streaming)


def load_pairs(
    source: str,
    path: str | None = None,
    *,
    split: str = "train",
    max_pairs_per_source: int | None = None,
    conversational: bool = False,
    skip_malformed: bool = False,
    streaming: bool | None = None,
    hub_name: str | None = None,
    data_dir: str | None = None,
    stats: PairStats | None = None,
    seen: set[str] | None = None,
) -> Dataset:
    """Load one preference source into the unified schema (see `density_rlhf.data.pairs`).

    Args:
        source: one of `"hh"`, `"uf"`, `"se"`, `"local"`.
        path: a local file in that source's original schema (`.jsonl`, `.jsonl.gz`, `.parquet`). Without it the Hub
            dataset is loaded with `datasets.load_dataset` (Stack Exchange streams by default).
        split: `"train"` or `"test"`; mapped to the source's own split names.
        max_pairs_per_source: stop after this many kept pairs.
        conversational: emit TRL's conversational format as well as a `prompt_text` column.
        skip_malformed: count and skip malformed JSONL lines instead of raising.
        stats: a `PairStats` to accumulate counts into; every dropped row is counted there and logged.
        seen: pair ids already kept (for de-duplication across sources).
    """
    if source not in CONVERTERS:
        raise ValueError(f"Unknown source {source!r}; choose one of {sorted(CONVERTERS)}.")
    stats = PairStats() if stats is None else stats
    if path is not None:
        records: Iterable[dict[str, Any]] = read_records(
            path, skip_malformed=skip_malformed, stats=stats, source=source
        )
    elif source == "local":
        raise ValueError("source='local' needs a `path` to a .jsonl, .jsonl.gz or .parquet file.")
    else:
        records = _hub_records(source, split, hub_name, streaming, data_dir)
    rows = build_rows(
        records,
        CONVERTERS[source],
        source,
        stats,
        conversational=conversational,
        max_pairs=max_pairs_per_source,
        seen=seen,
    )
    stats.check()
    log_stats(stats, source)
    return rows_to_dataset(rows)
