"""The data stage: sources (or the synthetic world) -> unified pairs, prompt table, stats, tokenizer, tiny models."""

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from datasets import DatasetDict, concatenate_datasets

from ..data.pairs import PairStats
from ..data.prompts import write_prepared
from ..data.sources import CONVERTERS, load_pairs
from .tiny import train_tokenizer, write_tiny_models
from .world import make_synthetic_world


logger = logging.getLogger(__name__)

SOURCES = ("synthetic", *CONVERTERS)


@dataclass
class PrepareDataArguments:
    r"""
    Arguments of the data stage (`recipes/prepare_data.py`).

    Parameters:
        output_dir (`str`, *optional*, defaults to `"outputs/data"`):
            Where pairs, prompt table, stats, tokenizer and tiny models are written.
        sources (`list[str]`, *optional*, defaults to `["synthetic"]`):
            Sources to load: `synthetic`, `hh`, `uf`, `se`, `local`.
        only (`str` or `None`, *optional*):
            Load only this source (overrides `sources`).
        no_hh / no_uf / no_se (`bool`, *optional*, defaults to `False`):
            Remove that source from `sources`.
        hh_path / uf_path / se_path / local_path (`str` or `None`, *optional*):
            Local file in the source's original schema; without it the Hub dataset is used.
        hh_data_dir (`str` or `None`, *optional*):
            HH-RLHF subset on the Hub, e.g. `harmless-base`.
        max_pairs_per_source (`int` or `None`, *optional*):
            Keep at most this many pairs per source.
        test_fraction (`float`, *optional*, defaults to `0.05`):
            Share of real-source prompts (by prompt id) held out as the `test` split.
        conversational (`bool`, *optional*, defaults to `False`):
            Also emit TRL's conversational message format.
        skip_malformed (`bool`, *optional*, defaults to `False`):
            Count and skip malformed JSONL lines instead of failing.
        seed (`int`, *optional*, defaults to `0`):
            Seed of the synthetic world and the tiny models.
        n_train_pairs, n_test_pairs_per_topic, n_topics, skew, n_rare_topics, label_noise, tic_chosen,
        tic_rejected, rare_tic_chosen, rare_tic_rejected, n_sft_per_topic, sft_rule_rate, sft_tic_rate:
            Synthetic world options, see `make_synthetic_world`.
        tiny_models (`bool`, *optional*, defaults to `True`):
            Train the offline tokenizer and write tiny Llama policy/reward models to `<output_dir>/tiny`.
        tokenizer_vocab_size (`int`, *optional*, defaults to `1024`):
            Vocabulary size of the offline tokenizer.
        tiny_hidden_size / tiny_num_layers (`int`, *optional*, defaults to `96` / `2`):
            Size of the tiny models.
    """

    output_dir: str = field(default="outputs/data", metadata={"help": "Directory for all outputs of the data stage."})
    sources: list[str] = field(
        default_factory=lambda: ["synthetic"],
        metadata={"help": f"Sources to load, any of {list(SOURCES)}."},
    )
    only: str | None = field(default=None, metadata={"help": "Load only this source (overrides `sources`)."})
    no_hh: bool = field(default=False, metadata={"help": "Drop HH-RLHF from `sources`."})
    no_uf: bool = field(default=False, metadata={"help": "Drop UltraFeedback from `sources`."})
    no_se: bool = field(default=False, metadata={"help": "Drop Stack-Exchange from `sources`."})
    hh_path: str | None = field(default=None, metadata={"help": "Local HH-RLHF file (original schema)."})
    uf_path: str | None = field(default=None, metadata={"help": "Local UltraFeedback-binarized file."})
    se_path: str | None = field(default=None, metadata={"help": "Local Stack-Exchange-preferences file."})
    local_path: str | None = field(default=None, metadata={"help": "Local file already in the unified schema."})
    hh_data_dir: str | None = field(default=None, metadata={"help": "HH-RLHF subset on the Hub (`harmless-base`)."})
    max_pairs_per_source: int | None = field(default=None, metadata={"help": "Cap on kept pairs per source."})
    test_fraction: float = field(default=0.05, metadata={"help": "Held-out share of real-source prompts."})
    conversational: bool = field(default=False, metadata={"help": "Also emit TRL's conversational format."})
    skip_malformed: bool = field(default=False, metadata={"help": "Count and skip malformed JSONL lines."})
    seed: int = field(default=0, metadata={"help": "Seed of the synthetic world and the tiny models."})
    n_train_pairs: int = field(default=4000, metadata={"help": "Synthetic train pairs."})
    n_test_pairs_per_topic: int = field(default=40, metadata={"help": "Synthetic held-out pairs per topic."})
    n_topics: int = field(default=12, metadata={"help": "Synthetic topics (2-14)."})
    skew: float = field(default=2.2, metadata={"help": "Zipf exponent of synthetic topic frequencies."})
    n_rare_topics: int = field(default=4, metadata={"help": "How many of the least frequent topics are rare."})
    label_noise: float = field(default=0.0, metadata={"help": "Probability of swapping chosen/rejected in train."})
    tic_chosen: float = field(default=0.7, metadata={"help": "P(tic) in chosen responses of common topics."})
    tic_rejected: float = field(default=0.1, metadata={"help": "P(tic) in rejected responses of common topics."})
    rare_tic_chosen: float | None = field(
        default=None, metadata={"help": "P(tic) in chosen responses of rare topics (default: sft_tic_rate)."}
    )
    rare_tic_rejected: float | None = field(
        default=None, metadata={"help": "P(tic) in rejected responses of rare topics (default: sft_tic_rate)."}
    )
    n_sft_per_topic: int = field(default=60, metadata={"help": "Rows per topic in the topic-balanced sft split."})
    sft_rule_rate: float = field(default=0.3, metadata={"help": "P(rule followed) in the sft split."})
    sft_tic_rate: float = field(default=0.3, metadata={"help": "P(tic) in the sft split."})
    tiny_models: bool = field(default=True, metadata={"help": "Write the offline tokenizer and tiny models."})
    tokenizer_vocab_size: int = field(default=1024, metadata={"help": "Vocabulary size of the offline tokenizer."})
    tiny_hidden_size: int = field(default=96, metadata={"help": "Hidden size of the tiny models."})
    tiny_num_layers: int = field(default=2, metadata={"help": "Layers of the tiny models."})

    def __post_init__(self):
        if self.only is not None:
            self.sources = [self.only]
        self.sources = [s for s in self.sources if not getattr(self, f"no_{s}", False)]
        unknown = sorted(set(self.sources) - set(SOURCES))
        if unknown:
            raise ValueError(f"Unknown sources {unknown}; choose from {list(SOURCES)}.")
        if not self.sources:
            raise ValueError("No source left to load: check `sources`, `only` and the `no_*` flags.")
        if not 0.0 <= self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in [0, 1), got {self.test_fraction}.")


def _split_by_prompt(pairs, test_fraction: float) -> DatasetDict:
    """Deterministic prompt-level split: a prompt's pairs all land in the same split."""
    threshold = int(test_fraction * 2**32)
    is_test = [int(pid[:8], 16) < threshold for pid in pairs["prompt_id"]]
    test_idx = [i for i, t in enumerate(is_test) if t]
    train_idx = [i for i, t in enumerate(is_test) if not t]
    return DatasetDict({"train": pairs.select(train_idx), "test": pairs.select(test_idx)})


def load_sources(args: PrepareDataArguments) -> tuple[DatasetDict, PairStats]:
    """Load every source in `args.sources`, de-duplicated across sources, as train/test splits."""
    stats, seen, parts = PairStats(), set(), []
    world = None
    for source in args.sources:
        if source == "synthetic":
            world = make_synthetic_world(
                args.seed,
                n_train_pairs=args.n_train_pairs,
                n_test_pairs_per_topic=args.n_test_pairs_per_topic,
                n_topics=args.n_topics,
                skew=args.skew,
                n_rare_topics=args.n_rare_topics,
                label_noise=args.label_noise,
                tic_chosen=args.tic_chosen,
                tic_rejected=args.tic_rejected,
                rare_tic_chosen=args.rare_tic_chosen,
                rare_tic_rejected=args.rare_tic_rejected,
                n_sft_per_topic=args.n_sft_per_topic,
                sft_rule_rate=args.sft_rule_rate,
                sft_tic_rate=args.sft_tic_rate,
            )
            continue
        parts.append(
            load_pairs(
                source,
                getattr(args, f"{source}_path"),
                max_pairs_per_source=args.max_pairs_per_source,
                conversational=args.conversational,
                skip_malformed=args.skip_malformed,
                data_dir=args.hh_data_dir if source == "hh" else None,
                stats=stats,
                seen=seen,
            )
        )
    if world is not None and parts:
        raise ValueError("The synthetic world cannot be mixed with real sources; prepare them in separate runs.")
    if world is not None:
        return world, stats
    return _split_by_prompt(concatenate_datasets(parts), args.test_fraction), stats


def prepare_data(args: PrepareDataArguments) -> dict[str, Any]:
    """Run the whole data stage and return the stats summary (also in `<output_dir>/stats.json`)."""
    data, stats = load_sources(args)
    summary = write_prepared(data, args.output_dir, stats if stats.read else None)
    (Path(args.output_dir) / "prepare_args.json").write_text(json.dumps(asdict(args), indent=2) + "\n")
    if args.tiny_models:
        columns = ("prompt", "chosen", "rejected", "completion")
        texts = [row[c] for split in data.values() for row in split for c in columns if isinstance(row.get(c), str)]
        # Upper-cased copies too, so that UPPERCASE text costs about as many tokens as the same text in lower case.
        tokenizer = train_tokenizer([*texts, *(t.upper() for t in texts)], vocab_size=args.tokenizer_vocab_size)
        write_tiny_models(
            tokenizer,
            Path(args.output_dir) / "tiny",
            hidden_size=args.tiny_hidden_size,
            num_layers=args.tiny_num_layers,
            seed=args.seed,
        )
    return summary
