"""Per-group columns and labels: the rare/mid/common bucket of every row, and group labels carried through collation."""

import json
import os
from pathlib import Path
from typing import Any

import torch

from .config import DensityConfigMixin
from .index import BUCKETS


BUCKET_COLUMN = "density_bucket"


def _prompt_texts(dataset) -> list | None:
    """The prompts to embed for rows the index does not know: `prompt_text` (the prepared data's flat text) when the
    dataset has it, else `prompt` (strings or messages, read by `density_rlhf.prompt_text`)."""
    for column in ("prompt_text", "prompt"):
        if column in dataset.column_names:
            return dataset[column]
    return None


def add_bucket_column(dataset, index, args: DensityConfigMixin, split: str):
    """Add `density_bucket` (rare/mid/common) to `dataset`; prompts not in the index are queried against it."""
    if dataset is None or BUCKET_COLUMN in dataset.column_names:
        return dataset
    if args.density_bucket_column:
        if args.density_bucket_column not in dataset.column_names:
            raise ValueError(f"{split} dataset has no {args.density_bucket_column!r} column (density_bucket_column).")
        return dataset.add_column(BUCKET_COLUMN, [str(b) for b in dataset[args.density_bucket_column]])
    if index is None:
        return dataset
    if args.prompt_id_column not in dataset.column_names:
        raise ValueError(
            f"{split} dataset has no {args.prompt_id_column!r} column, which density sampling and per-bucket metrics "
            "need. Add it with `dataset.map(lambda x: {'prompt_id': density_rlhf.prompt_id(x['prompt'])})`."
        )
    buckets = index.buckets_for(list(dataset[args.prompt_id_column]), _prompt_texts(dataset))
    return dataset.add_column(BUCKET_COLUMN, buckets)


def group_columns(args: DensityConfigMixin, dataset) -> list[str]:
    """Columns evaluation metrics are reported by: the density bucket, then `eval_group_columns` (none by default)."""
    if dataset is None:
        return []
    wanted = args.eval_group_columns or []
    columns = [BUCKET_COLUMN] + [c for c in wanted if c != BUCKET_COLUMN]
    if args.eval_group_columns:
        missing = [c for c in args.eval_group_columns if c not in dataset.column_names]
        if missing:
            raise ValueError(f"eval_group_columns {missing} are not dataset columns ({dataset.column_names}).")
    return [c for c in columns if c in dataset.column_names]


def group_metric_prefix(column: str, value: str) -> str:
    """`rare` for the bucket column (so metrics read `eval_rare_accuracy`), else `topic/weather`."""
    return value if column == BUCKET_COLUMN else f"{column}/{value}"


# The per-row loss weight of `density_weighting: loss` (a training column, mean 1 over the training rows).
LOSS_WEIGHT_COLUMN = "density_loss_weight"


class GroupLabelCollator:
    """Wraps a collator: strips the group columns from the examples and adds them back as integer tensors.

    With `record_ids`, the batch also carries the examples' `id`s as a list under `row_ids` (training audit). A
    `LOSS_WEIGHT_COLUMN` in the examples comes back as a float tensor under that name.
    """

    def __init__(self, collator, vocab: dict[str, list[str]], record_ids: bool = False):
        self.collator = collator
        self.vocab = vocab
        self._codes = {col: {v: i for i, v in enumerate(values)} for col, values in vocab.items()}
        self.record_ids = record_ids

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        drop = {*self.vocab, "id", LOSS_WEIGHT_COLUMN}
        batch = self.collator([{k: v for k, v in example.items() if k not in drop} for example in examples])
        if LOSS_WEIGHT_COLUMN in examples[0]:
            batch[LOSS_WEIGHT_COLUMN] = torch.tensor([e[LOSS_WEIGHT_COLUMN] for e in examples], dtype=torch.float32)
        for col, codes in self._codes.items():
            if col not in examples[0]:  # e.g. the eval-only groups in training batches
                continue
            labels = [codes.get(str(example[col]), -1) for example in examples]
            batch[f"group::{col}"] = torch.tensor(labels, dtype=torch.long)
        if self.record_ids:
            batch["row_ids"] = [example.get("id") for example in examples]
        return batch


def pop_group_labels(inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
    return {key.split("::", 1)[1]: inputs.pop(key) for key in [k for k in inputs if k.startswith("group::")]}


def group_vocab(columns: list[str], *datasets) -> dict[str, list[str]]:
    vocab = {}
    for col in columns:
        values = set()
        for dataset in datasets:
            if dataset is not None and col in dataset.column_names:
                values.update(str(v) for v in dataset.unique(col))
        vocab[col] = (
            [b for b in BUCKETS if b in values] + sorted(values - set(BUCKETS))
            if col == BUCKET_COLUMN
            else sorted(values)
        )
    return vocab


def write_seen_ids(ids: list[str], output_dir: str, process_index: int) -> None:
    os.makedirs(output_dir, exist_ok=True)
    Path(output_dir, f"seen_ids_rank{process_index}.json").write_text(json.dumps(ids))


def read_seen_ids(checkpoint_dir: str | None, process_index: int) -> list[str]:
    """The ids a checkpoint recorded for this rank (`write_seen_ids`); `[]` without a checkpoint or a file."""
    if checkpoint_dir is None:
        return []
    path = Path(checkpoint_dir, f"seen_ids_rank{process_index}.json")
    return json.loads(path.read_text()) if path.exists() else []
