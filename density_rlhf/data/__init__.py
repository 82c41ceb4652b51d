"""Preference data: source loaders, the unified schema, the prompt table and the synthetic world."""

from .pairs import PAIR_COLUMNS, PairStats, read_jsonl
from .prompts import prompt_table, write_prepared
from .sources import html_to_text, load_pairs
from .synthetic import TOPICS, make_synthetic_world, rule_satisfied
from .tiny import train_tokenizer, write_tiny_models


__all__ = [
    "PAIR_COLUMNS",
    "TOPICS",
    "PairStats",
    "html_to_text",
    "load_pairs",
    "make_synthetic_world",
    "prompt_table",
    "read_jsonl",
    "rule_satisfied",
    "train_tokenizer",
    "write_prepared",
    "write_tiny_models",
]
