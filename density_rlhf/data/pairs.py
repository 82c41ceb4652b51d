"""Turn preference sources into one unified `datasets.Dataset`.

Unified schema, one row per preference pair:

| column      | type | meaning                                                         |
|-------------|------|-----------------------------------------------------------------|
| `id`        | str  | stable pair id, `sha1(prompt, chosen, rejected)[:16]`           |
| `prompt`    | str  | normalized prompt (multi-turn context included)                 |
| `chosen`    | str  | preferred final response                                        |
| `rejected`  | str  | dispreferred final response                                     |
| `src`       | str  | source name (`hh`, `uf`, `se`, `local`, `synthetic`)            |
| `prompt_id` | str  | `density_rlhf.prompt_id(prompt)`                                |

With `conversational=True`, `prompt`/`chosen`/`rejected` are TRL conversational messages instead and a `prompt_text`
column keeps the text the prompt id was computed on.
"""

import gzip
import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import Dataset

from ..prompts import normalize_text, pair_id, prompt_id


logger = logging.getLogger(__name__)

PAIR_COLUMNS = ["id", "prompt", "chosen", "rejected", "src", "prompt_id"]


class SkipRow(Exception):
    """Raised by a converter to drop one input row; the message is the drop reason."""


@dataclass
class RawPair:
    """A converter's output before normalization."""

    prompt: str
    chosen: str
    rejected: str
    messages: list[dict[str, str]] | None = None  # prompt turns, for the conversational format
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class PairStats:
    """Counts of rows read, kept and dropped (by reason) per source. `read == kept + sum(drops)` always holds."""

    read: Counter = field(default_factory=Counter)
    kept: Counter = field(default_factory=Counter)
    drops: dict[str, Counter] = field(default_factory=dict)

    def drop(self, source: str, reason: str, n: int = 1) -> None:
        self.drops.setdefault(source, Counter())[reason] += n

    def total_drops(self, source: str | None = None) -> int:
        sources = [source] if source else list(self.drops)
        return sum(sum(self.drops.get(s, Counter()).values()) for s in sources)

    def check(self) -> None:
        for source, n_read in self.read.items():
            if n_read != self.kept[source] + self.total_drops(source):
                raise RuntimeError(f"row accounting broken for {source!r}: {self.as_dict()}")

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows_read": dict(self.read),
            "rows_kept": dict(self.kept),
            "drops": {s: dict(sorted(c.items())) for s, c in self.drops.items()},
        }


def read_jsonl(
    path: str | Path, *, skip_malformed: bool = False, stats: PairStats | None = None, source: str = "local"
):
    """Yield the JSON objects of a `.jsonl` or `.jsonl.gz` file.

    A malformed line raises a `ValueError` naming the file and line, unless `skip_malformed`, which counts it in
    `stats` as `malformed_json`.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError(f"expected a JSON object, got {type(record).__name__}")
            except ValueError as err:
                if not skip_malformed:
                    raise ValueError(
                        f"{path}:{lineno}: malformed JSONL line ({err}). Fix the line, or pass "
                        "`skip_malformed=True` to count and skip such lines."
                    ) from None
                if stats is not None:
                    stats.read[source] += 1
                    stats.drop(source, "malformed_json")
                continue
            yield record


def read_records(path: str | Path, **kwargs) -> Iterator[dict[str, Any]]:
    """Records of a local `.jsonl`, `.jsonl.gz`, `.json` (lines) or `.parquet` file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist.")
    if path.suffix == ".parquet":
        yield from Dataset.from_parquet(str(path))
    elif path.name.endswith((".jsonl", ".jsonl.gz", ".json", ".json.gz")):
        yield from read_jsonl(path, **kwargs)
    else:
        raise ValueError(f"{path}: unsupported file type; use .jsonl, .jsonl.gz or .parquet.")


def require_str(record: dict[str, Any], key: str) -> str:
    """`record[key]` if it is a string, else raise `SkipRow` with `missing_field` or `non_string`."""
    if key not in record or record[key] is None:
        raise SkipRow("missing_field")
    if not isinstance(record[key], str):
        raise SkipRow("non_string")
    return record[key]


def build_rows(
    records: Iterable[dict[str, Any]],
    convert: Callable[[dict[str, Any]], RawPair],
    source: str,
    stats: PairStats,
    *,
    conversational: bool = False,
    max_pairs: int | None = None,
    seen: set[str] | None = None,
) -> list[dict[str, Any]]:
    """Convert, normalize, validate and deduplicate `records` into unified rows, counting every drop in `stats`."""
    seen = set() if seen is None else seen
    rows = []
    for record in records:
        if max_pairs is not None and len(rows) >= max_pairs:
            break
        stats.read[source] += 1
        try:
            raw = convert(record)
            prompt, chosen, rejected = (normalize_text(t) for t in (raw.prompt, raw.chosen, raw.rejected))
            for name, text in (("prompt", prompt), ("chosen", chosen), ("rejected", rejected)):
                if not text:
                    raise SkipRow(f"empty_{name}")
            if chosen == rejected:
                raise SkipRow("identical_pair")
            pid = pair_id(prompt, chosen, rejected)
            if pid in seen:
                raise SkipRow("duplicate_pair")
        except SkipRow as skip:
            stats.drop(source, str(skip))
            continue
        seen.add(pid)
        stats.kept[source] += 1
        row = {"id": pid, "prompt": prompt, "chosen": chosen, "rejected": rejected, "src": source}
        row["prompt_id"] = prompt_id(prompt)
        row.update(raw.extra)
        if conversational:
            messages = raw.messages or [{"role": "user", "content": raw.prompt}]
            row["prompt_text"] = prompt
            row["prompt"] = [{"role": m["role"], "content": normalize_text(m["content"])} for m in messages]
            row["chosen"] = [{"role": "assistant", "content": chosen}]
            row["rejected"] = [{"role": "assistant", "content": rejected}]
        rows.append(row)
    return rows


def rows_to_dataset(rows: list[dict[str, Any]]) -> Dataset:
    if not rows:
        return Dataset.from_dict({c: [] for c in PAIR_COLUMNS})
    return Dataset.from_list(rows)


def log_stats(stats: PairStats, source: str) -> None:
    """Log one source's counts; a warning when anything was dropped, so no drop goes unnoticed."""
    drops = dict(stats.drops.get(source, {}))
    msg = (
        f"[{source}] read {stats.read[source]} rows, kept {stats.kept[source]}, dropped {sum(drops.values())} {drops}"
    )
    (logger.warning if drops else logger.info)(msg)
