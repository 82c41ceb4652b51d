"""The prompt table and statistics written next to the pairs."""

import json
from collections import Counter
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict

from .pairs import PairStats


def prompt_table(pairs: Dataset) -> list[dict[str, Any]]:
    """One row per unique prompt id, in order of first appearance: `{"id", "prompt", "n_pairs", "sources"}`."""
    text_column = "prompt_text" if "prompt_text" in pairs.column_names else "prompt"
    table: dict[str, dict[str, Any]] = {}
    for pid, prompt, src in zip(pairs["prompt_id"], pairs[text_column], pairs["src"]):
        entry = table.setdefault(pid, {"id": pid, "prompt": prompt, "n_pairs": 0, "sources": []})
        entry["n_pairs"] += 1
        if src not in entry["sources"]:
            entry["sources"].append(src)
    return list(table.values())


def _write_jsonl(path: Path, rows) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def write_prepared(data: DatasetDict, output_dir: str | Path, stats: PairStats | None = None) -> dict[str, Any]:
    """Write pairs, prompt table and statistics for every split of `data` to `output_dir`; return the stats dict.

    Layout: `dataset/` (`DatasetDict.save_to_disk`), `pairs_all.jsonl` and `prompts_all.jsonl` (train split, other
    splits as `pairs_<split>.jsonl`), `prompt_id_map.tsv`, `stats.json` and `stats.txt`.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    data.save_to_disk(str(output_dir / "dataset"))
    summary: dict[str, Any] = {"splits": {}}
    for split, pairs in data.items():
        suffix = "all" if split == "train" else split
        _write_jsonl(output_dir / f"pairs_{suffix}.jsonl", pairs)
        table = prompt_table(pairs)
        _write_jsonl(output_dir / f"prompts_{suffix}.jsonl", table)
        histogram = Counter(entry["n_pairs"] for entry in table)
        summary["splits"][split] = {
            "pairs": len(pairs),
            "unique_prompts": len(table),
            "pairs_by_source": dict(Counter(pairs["src"])),
            "pairs_per_prompt_histogram": {str(k): v for k, v in sorted(histogram.items())},
        }
        if "topic" in pairs.column_names:
            summary["splits"][split]["pairs_by_topic"] = dict(Counter(pairs["topic"]).most_common())
        if split == "train":
            with open(output_dir / "prompt_id_map.tsv", "w", encoding="utf-8") as f:
                f.write("prompt_id\tprompt\n")
                for entry in table:
                    f.write(f"{entry['id']}\t{json.dumps(entry['prompt'], ensure_ascii=False)}\n")
    if stats is not None:
        stats.check()
        summary.update(stats.as_dict())
    (output_dir / "stats.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    (output_dir / "stats.txt").write_text(format_stats(summary))
    return summary


def format_stats(summary: dict[str, Any]) -> str:
    """Human-readable version of `stats.json`."""
    lines = []
    for source, n_read in summary.get("rows_read", {}).items():
        drops = summary["drops"].get(source, {})
        lines.append(
            f"source {source:<10} read {n_read:>9}  kept {summary['rows_kept'][source]:>9}  dropped {sum(drops.values()):>7}"
        )
        lines += [f"    drop {reason:<22} {n:>9}" for reason, n in drops.items()]
    for split, info in summary["splits"].items():
        lines.append(f"split {split:<6} pairs {info['pairs']:>9}  unique prompts {info['unique_prompts']:>9}")
        for src, n in info["pairs_by_source"].items():
            lines.append(f"    source {src:<20} {n:>9}")
        for topic, n in info.get("pairs_by_topic", {}).items():
            lines.append(f"    topic {topic:<21} {n:>9}")
        histogram = ", ".join(f"{k}:{v}" for k, v in info["pairs_per_prompt_histogram"].items())
        lines.append(f"    pairs per prompt (n_pairs:prompts) {histogram}")
    return "\n".join(lines) + "\n"
