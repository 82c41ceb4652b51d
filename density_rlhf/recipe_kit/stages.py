"""The data and density stages of the recipes: finding (or, at the shipped default, building) the prepared data,
building and reporting the density index, and checking that an index belongs to the data it is used with."""

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from datasets import DatasetDict, load_from_disk

from ..data.prompts import prompt_table
from ..settings import SearchSettings, WeightingSettings, settings_from, with_setting_fields
from .recipe import ConfigError, MissingInputError, RecipeError


logger = logging.getLogger(__name__)

# The shipped default locations: only these are built on first use (a fresh clone runs `make demo` as is).
DEFAULT_DATA_DIR = "outputs/data"
DEFAULT_DENSITY_DIR = "outputs/density"


@dataclass
@with_setting_fields(SearchSettings, WeightingSettings, after="embedder")
class BuildDensityArguments:
    r"""
    Arguments of the density stage (`recipes/build_density.py`): the fields below, then every field of
    [`SearchSettings`] and [`WeightingSettings`] (listed under "Settings").

    Parameters:
        data_dir (`str`, *optional*, defaults to `"outputs/data"`):
            Output of the data stage.
        build_missing (`bool`, *optional*, defaults to `True`):
            Build the synthetic default when `data_dir` is the shipped default (`outputs/data`) and missing; any other
            missing `data_dir`, and every one with `false`, is an error.
        density_dir (`str`, *optional*, defaults to `"outputs/density"`):
            Where the `DensityIndex` is saved.
        split (`str`, *optional*, defaults to `"train"`):
            Split whose unique prompts are indexed.
        embedder (`str` or `None`, *optional*):
            sentence-transformers model name or path; default the offline all-MiniLM-L6-v2.
        cluster_column (`str` or `None`, *optional*):
            Use this column of the split (e.g. a topic or category) as the clusters instead of k-means; a prompt takes
            the value of its first row.
        embed_batch_size (`int`, *optional*, defaults to `64`):
            Embedding batch size.
        seed (`int`, *optional*, defaults to `0`):
            Seed of the IVF and k-means clustering (and of the default data when it is built).
        report (`bool`, *optional*, defaults to `True`):
            Write the weights report (PNGs and markdown, `DensityIndex.report`) to `<density_dir>/report`.
        push_to_hub (`bool`, *optional*, defaults to `False`) and hub_dataset_id (`str` or `None`):
            Upload the index as a dataset repo (token from the `HF_TOKEN` environment variable).
    """

    data_dir: str = field(default="outputs/data", metadata={"help": "Output directory of the data stage."})
    build_missing: bool = field(
        default=True, metadata={"help": "Build the synthetic data when data_dir is the missing default outputs/data."}
    )
    density_dir: str = field(default="outputs/density", metadata={"help": "Where the density index is saved."})
    split: str = field(default="train", metadata={"help": "Split whose prompts are indexed."})
    embedder: str | None = field(default=None, metadata={"help": "sentence-transformers model name or path."})
    cluster_column: str | None = field(
        default=None, metadata={"help": "Column used as the clusters instead of k-means (e.g. a topic)."}
    )
    embed_batch_size: int = field(default=64, metadata={"help": "Embedding batch size."})
    seed: int = field(
        default=0, metadata={"help": "Seed of the IVF and k-means clustering (and of the default data)."}
    )
    report: bool = field(default=True, metadata={"help": "Write the weights report to <density_dir>/report."})
    push_to_hub: bool = field(default=False, metadata={"help": "Upload the index as a Hub dataset repo."})
    hub_dataset_id: str | None = field(default=None, metadata={"help": "Hub dataset repo id for `push_to_hub`."})

    def __post_init__(self):
        self.search, self.weighting = settings_from(self, SearchSettings), settings_from(self, WeightingSettings)
        if self.n_clusters is not None and self.cluster_column is not None:
            raise ValueError("set n_clusters (k-means) or cluster_column (given groups), not both.")
        if self.push_to_hub and not self.hub_dataset_id:
            raise ValueError("push_to_hub=True needs hub_dataset_id, e.g. `--hub_dataset_id user/density-index`.")


# Builds the default data in a directory from a seed: the recipes pass the experiment's synthetic world.
DefaultBuilder = Callable[[str, int], None]


def ensure_data(
    data_dir: str | Path, seed: int = 0, build_missing: bool = True, build_default: DefaultBuilder | None = None
) -> DatasetDict:
    """Load the prepared dataset from `data_dir`. When `data_dir` is the shipped default location and missing,
    `build_default(data_dir, seed)` writes it first; any other missing `data_dir` (or no `build_default`) is a
    `MissingInputError` and nothing is written."""
    dataset_dir = Path(data_dir) / "dataset"
    buildable = build_missing and build_default is not None and Path(data_dir) == Path(DEFAULT_DATA_DIR)
    if not dataset_dir.exists() and not buildable:
        raise MissingInputError(
            f"{dataset_dir} not found: prepare it first with `python recipes/prepare_data.py --config "
            f"recipes/prepare_data.yaml --output_dir {data_dir}` (only the default {DEFAULT_DATA_DIR} is built on "
            "first use)."
        )
    if not dataset_dir.exists():
        logger.warning("no prepared data in %s: building the default there first", data_dir)
        build_default(str(data_dir), seed)
    return load_from_disk(str(dataset_dir))


def _process_state():
    """accelerate's process state; without CUDA the processes `accelerate launch` starts talk over gloo (as the
    training recipes' `use_cpu: true` makes them)."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def embed_across_processes(prompts: list[str], args: BuildDensityArguments, work_dir: str | Path):
    """Each process embeds its batches of `density_rlhf.embedding.batch_plan` and logs how many; the main process
    gathers them in prompt order (through `.npy` files in `work_dir`) and returns them, the others return `None`.
    One process returns its own embeddings."""
    import shutil

    import numpy as np

    from ..embedding import embed_shard

    state = _process_state()
    rank, world = state.process_index, state.num_processes
    rows, vectors = embed_shard(
        prompts,
        args.embedder,
        rank=rank,
        world_size=world,
        batch_size=args.embed_batch_size,
        device=str(state.device),
        show_progress=state.is_main_process,
    )
    logger.info("embedded %d prompts on rank %d of %d", len(rows), rank, world)
    if world == 1:
        return vectors
    shards = Path(work_dir) / ".embedding_shards"
    shards.mkdir(parents=True, exist_ok=True)
    np.save(shards / f"rows_{rank}_of_{world}.npy", rows, allow_pickle=False)
    np.save(shards / f"embeddings_{rank}_of_{world}.npy", vectors, allow_pickle=False)
    state.wait_for_everyone()
    if not state.is_main_process:
        return None
    parts = [
        (np.load(shards / f"rows_{r}_of_{world}.npy"), np.load(shards / f"embeddings_{r}_of_{world}.npy"))
        for r in range(world)
    ]
    dim = max(v.shape[1] for _, v in parts)
    out = np.empty((len(prompts), dim), dtype=np.float32)
    seen = np.zeros(len(prompts), dtype=np.int64)
    for part_rows, part_vectors in parts:
        out[part_rows] = part_vectors
        seen[part_rows] += 1
    shutil.rmtree(shards)
    if not (seen == 1).all():
        raise RuntimeError(f"the embedding shards cover {int((seen == 1).sum())} of {len(prompts)} prompts once.")
    return out


def build_density(
    args: BuildDensityArguments, build_default: DefaultBuilder | None = None, across_processes: bool = True
):
    """Index the unique prompts of `args.split`, save the index to `args.density_dir` and return it (`build_default`
    as for `ensure_data`). Under `accelerate launch` (and `across_processes`) every process embeds a share of the
    prompts; the main process builds, reports and saves the index while the others wait, then load it."""

    from ..embedding import DEFAULT_EMBEDDER
    from ..index import DensityIndex, check_build_arguments

    state = _process_state() if across_processes else None
    main = state is None or state.is_main_process
    if state is None:
        data = ensure_data(args.data_dir, args.seed, args.build_missing, build_default)
    else:
        with state.main_process_first():  # the main process builds missing default data, the others then load it
            data = ensure_data(args.data_dir, args.seed, args.build_missing, build_default)
    table = prompt_table(data[args.split])
    prompts = [row["prompt"] for row in table]
    cluster_labels = prompt_column(data[args.split], args.cluster_column, table) if args.cluster_column else None
    try:  # every setting that can be checked from the prompt count, before the embedder is loaded
        check_build_arguments(len(prompts), args.search, args.weighting, cluster_labels)
    except ValueError as err:
        raise ConfigError(
            f"{err} ({len(prompts)} distinct prompts in {args.data_dir}, split {args.split!r})"
        ) from None
    embeddings = embed_across_processes(prompts, args, args.density_dir) if state is not None else None
    index = None
    if main:
        index = DensityIndex.build(
            prompts,
            [row["id"] for row in table],
            embedder=args.embedder or (DEFAULT_EMBEDDER if embeddings is not None else None),
            embeddings=embeddings,
            search=args.search,
            weighting=args.weighting,
            cluster_labels=cluster_labels,
            batch_size=args.embed_batch_size,
            seed=args.seed,
        )
        index.save(args.density_dir)
        (Path(args.density_dir) / "build_args.json").write_text(json.dumps(asdict(args), indent=2) + "\n")
        logger.info("density index saved to %s: %s", args.density_dir, json.dumps(index.summary()))
        if args.report:
            logger.info("weights report: %s", index.report(Path(args.density_dir) / "report"))
        if args.push_to_hub:
            logger.info("pushed to %s", index.push_to_hub(args.hub_dataset_id))
    if state is not None:
        state.wait_for_everyone()
    return index if index is not None else DensityIndex.load(args.density_dir)


def prompt_column(split, column: str, table: list[dict]) -> list:
    """The value of `column` for each prompt of `table` (its first row's); prompts whose rows disagree are counted
    and logged."""
    if column not in split.column_names:
        raise RecipeError(f"cluster_column {column!r} is not a column of the split; it has {split.column_names}.")
    first, conflicting = {}, set()
    for pid, value in zip(split["prompt_id"], split[column]):
        if first.setdefault(pid, value) != value:
            conflicting.add(pid)
    if conflicting:
        logger.warning(
            "%d of %d prompts have rows with different %r values; each takes its first row's",
            len(conflicting),
            len(table),
            column,
        )
    return [first[row["id"]] for row in table]


def check_index_source(density_dir: str | Path, data_dir: str | Path) -> None:
    """`RecipeError` when the index in `density_dir` was built (its `build_args.json`) from another `data_dir`."""
    build_args = Path(density_dir) / "build_args.json"
    if not build_args.exists():  # built through the API: the trainer's prompt-id check still applies
        return
    try:
        built_from = json.loads(build_args.read_text())["data_dir"]
    except (ValueError, KeyError) as err:
        raise RecipeError(f"{build_args} is not a build record of recipes/build_density.py ({err}).") from None
    if Path(built_from).resolve() != Path(data_dir).resolve():
        raise RecipeError(
            f"density index {density_dir} was built from {built_from}, not from this run's data_dir {data_dir}: "
            f"rebuild it with `python recipes/build_density.py --config recipes/build_density.yaml --data_dir "
            f"{data_dir} --density_dir {density_dir}`, or point density_index_path at the index of {data_dir}."
        )


@dataclass
class DensityReportArguments:
    r"""
    Arguments of `recipes/density_report.py`: the weights report of a saved index.

    Parameters:
        density_dir (`str`, *optional*, defaults to `"outputs/density"`):
            A saved `DensityIndex`.
        output_dir (`str` or `None`, *optional*):
            Where the report goes; default `<density_dir>/report`.
        n_examples (`int`, *optional*, defaults to `20`):
            How many of the rarest and of the commonest prompts to list.
    """

    density_dir: str = field(default="outputs/density", metadata={"help": "Directory of a saved DensityIndex."})
    output_dir: str | None = field(default=None, metadata={"help": "Report directory (default <density_dir>/report)."})
    n_examples: int = field(default=20, metadata={"help": "Rarest and commonest prompts listed."})

    def __post_init__(self):
        if self.n_examples < 1:
            raise ValueError(f"n_examples must be >= 1, got {self.n_examples}.")


def density_report(args: DensityReportArguments) -> Path:
    """Load the index in `args.density_dir` and write its weights report."""
    from ..index import DensityIndex

    index = DensityIndex.load(args.density_dir, load_faiss=False)
    return index.report(args.output_dir or Path(args.density_dir) / "report", args.n_examples)


def ensure_index_for(training_args, script_args) -> None:
    """Build the density index at `training_args.density_index_path` when it is missing (first run on a clone);
    `script_args` are the recipe's `DensityScriptArguments` (`data_dir`, `dataset_name`, `build_missing`)."""
    path = getattr(training_args, "density_index_path", None)
    if not path:
        return
    if (Path(path) / "metadata.json").exists():
        if not script_args.dataset_name:
            check_index_source(path, script_args.data_dir)
        return
    is_default = Path(path) == Path(DEFAULT_DENSITY_DIR) and Path(script_args.data_dir) == Path(DEFAULT_DATA_DIR)
    if script_args.dataset_name or not script_args.build_missing or not is_default:
        raise MissingInputError(
            f"density index {path} not found: build it with `python recipes/build_density.py --config "
            f"recipes/build_density.yaml --data_dir {script_args.data_dir} --density_dir {path}` (only the default "
            f"{DEFAULT_DENSITY_DIR} is built on first use)."
        )
    from accelerate import PartialState

    with PartialState().main_process_first():  # the other ranks wait, then find the index
        if not (Path(path) / "metadata.json").exists():
            logger.warning("density index %s is missing: building it from %s", path, script_args.data_dir)
            build_density(
                BuildDensityArguments(data_dir=script_args.data_dir, density_dir=path), across_processes=False
            )
