"""Preference data: source loaders (HH-RLHF, UltraFeedback, Stack Exchange, JSONL), the unified schema and the prompt
table. The synthetic world lives in the experiment (`density_rlhf.experiment.world`)."""

from .pairs import PAIR_COLUMNS, PairStats, read_jsonl
from .prompts import prompt_table, write_prepared
from .sources import html_to_text, load_pairs


__all__ = ["PAIR_COLUMNS", "PairStats", "html_to_text", "load_pairs", "prompt_table", "read_jsonl", "write_prepared"]
