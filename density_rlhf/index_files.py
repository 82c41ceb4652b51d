"""The files of a saved `DensityIndex`: arrays as `.npy` (no pickle), ids and prompts as JSON, the FAISS index,
`metadata.json` with a sha256 of every other file and of its own content (all verified on load), written atomically;
and their Hub upload and card. Weights and densities are not saved: they are recomputed from the kNN distances.
The functions take and return plain arrays and dicts; `DensityIndex.save` / `load` put them together."""

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


_FILES = {
    "embeddings": "embeddings.npy",
    "knn_distances": "knn_distances.npy",
    "knn_indices": "knn_indices.npy",
    "duplicate_of": "duplicate_of.npy",
    "cluster_labels": "cluster_labels.npy",
    "cluster_centroids": "cluster_centroids.npy",
    "prompt_ids": "prompt_ids.json",
    "prompts": "prompts.json",
    "index": "index.faiss",
}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _metadata_digest(metadata: dict) -> str:
    """sha256 of the metadata without its own digest, in a canonical JSON form."""
    content = {key: value for key, value in metadata.items() if key != "metadata_sha256"}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


ARRAYS = ("embeddings", "knn_distances", "knn_indices", "duplicate_of", "cluster_labels", "cluster_centroids")


def write_index_files(
    directory: str | Path,
    *,
    arrays: dict[str, np.ndarray],
    prompt_ids: list[str],
    prompts: list[str] | None,
    faiss_index: Any,
    metadata: dict[str, Any],
    summary: dict[str, Any],
) -> Path:
    """Write an index's files atomically to `directory` (temporary directory, then rename); `arrays` are named as in
    `ARRAYS` (`None` values are left out)."""
    import faiss

    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        arrays = {key: array for key, array in arrays.items() if array is not None}
        for key, array in arrays.items():
            np.save(tmp / _FILES[key], np.ascontiguousarray(array), allow_pickle=False)
        (tmp / _FILES["prompt_ids"]).write_text(json.dumps(prompt_ids))
        if prompts is not None:
            (tmp / _FILES["prompts"]).write_text(json.dumps(prompts, ensure_ascii=False))
        if faiss_index is not None:
            index = faiss_index
            if hasattr(faiss, "index_gpu_to_cpu") and "Gpu" in type(index).__name__:
                index = faiss.index_gpu_to_cpu(index)
            faiss.write_index(index, str(tmp / _FILES["index"]))
        files = sorted(p.name for p in tmp.iterdir())
        metadata = {**metadata, "summary": summary, "files": {f: _sha256(tmp / f) for f in files}}
        metadata["metadata_sha256"] = _metadata_digest(metadata)
        (tmp / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
        if directory.exists():
            old = directory.with_name(f".{directory.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(directory, old)
            os.replace(tmp, directory)
            shutil.rmtree(old)
        else:
            os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return directory


def read_index_files(directory: str | Path, *, load_faiss: bool = True) -> dict[str, Any]:
    """Read and verify (sha256 of every file) what `write_index_files` wrote: `{"prompt_ids", "arrays", "metadata",
    "faiss_index", "prompts"}`."""
    directory = Path(directory)
    meta_path = directory / "metadata.json"
    if not meta_path.exists():
        raise FileNotFoundError(f"{meta_path} not found: {directory} is not a saved DensityIndex.")
    try:
        metadata = json.loads(meta_path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{meta_path} is not valid JSON ({err}); the index is corrupt, rebuild it.") from None
    if not isinstance(metadata, dict) or "files" not in metadata or "metadata_sha256" not in metadata:
        raise ValueError(
            f"{meta_path} has no checksums: it was not written by this version of DensityIndex.save; rebuild it."
        )
    if metadata["metadata_sha256"] != _metadata_digest(metadata):
        raise ValueError(f"{meta_path} does not match its checksum (edited by hand?); rebuild the index.")
    for name, digest in metadata.pop("files").items():
        path = directory / name
        if not path.exists() or _sha256(path) != digest:
            raise ValueError(f"{path} is missing or does not match its checksum; the index is corrupt, rebuild it.")
    metadata.pop("summary", None)
    metadata.pop("metadata_sha256", None)
    arrays = {
        key: np.load(directory / _FILES[key], allow_pickle=False)
        for key in ARRAYS
        if (directory / _FILES[key]).exists()
    }
    if "duplicate_of" not in arrays:
        raise ValueError(f"{directory} was written by density_rlhf < 0.2 (no duplicate groups); rebuild the index.")
    ids = json.loads((directory / _FILES["prompt_ids"]).read_text())
    if len(ids) != metadata["n"] or arrays["embeddings"].shape != (metadata["n"], metadata["dim"]):
        raise ValueError(f"{directory}: array shapes disagree with metadata.json; rebuild the index.")
    faiss_index = None
    if load_faiss and (directory / _FILES["index"]).exists():
        import faiss

        faiss_index = faiss.read_index(str(directory / _FILES["index"]))
    prompts_path = directory / _FILES["prompts"]
    prompts = json.loads(prompts_path.read_text()) if prompts_path.exists() else None
    return {"prompt_ids": ids, "arrays": arrays, "metadata": metadata, "faiss_index": faiss_index, "prompts": prompts}


def push_folder_to_hub(
    write: Callable[[Path], Path], card: str, repo_id: str, *, private: bool | None, commit_message: str | None
) -> str:
    """Upload the folder `write(path)` writes, with `card` as its README, as a Hub dataset repo. The token comes from
    the environment."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = write(Path(tmp) / "index")
        (folder / "README.md").write_text(card)
        commit = api.upload_folder(
            repo_id=repo_id,
            repo_type="dataset",
            folder_path=str(folder),
            commit_message=commit_message or "Upload density index",
        )
    return getattr(commit, "commit_url", str(commit))


def index_card(summary: dict[str, Any], repo_id: str) -> str:
    """The Hub card of a saved index: how to load it and its summary as a table."""
    rows = "\n".join(f"| {key} | {value} |" for key, value in summary.items())
    return (
        f"---\ntags:\n- density-rlhf\n---\n\n# {repo_id}\n\nA `density_rlhf.DensityIndex`: prompt embeddings, a FAISS "
        "kNN index and density-based sampling weights.\n\n```python\nfrom density_rlhf import DensityIndex\n"
        "from huggingface_hub import snapshot_download\n\n"
        f'index = DensityIndex.load(snapshot_download("{repo_id}", repo_type="dataset"))\n```\n\n'
        f"| field | value |\n|---|---|\n{rows}\n"
    )
