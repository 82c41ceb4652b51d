"""The recipes' embedded default: the experiment's synthetic world, written at the shipped default `outputs/data` when
it is missing, so a fresh clone runs, and the commands that write the default pipeline's outputs. The experiment is
imported here only, and only when the default is built."""

from pathlib import Path


def build_default_data(data_dir: str, seed: int) -> None:
    """Write the synthetic world (pairs, prompt table, tokenizer, tiny models) of `seed` to `data_dir`."""
    from density_rlhf.experiment.prepare import PrepareDataArguments, prepare_data

    prepare_data(PrepareDataArguments(output_dir=data_dir, seed=seed))


def creating_command(path: str) -> str:
    """The command that creates the default pipeline's output `path` (`.../sft`, `.../rm*`, `.../tiny/*`), else a
    pointer."""
    parts = Path(path).parts
    if len(parts) >= 2 and parts[-2] == "tiny":
        return "python recipes/prepare_data.py --config recipes/prepare_data.yaml"
    if parts and parts[-1] == "sft":
        return "accelerate launch recipes/train_sft.py --config recipes/sft.yaml"
    if parts and parts[-1].startswith("rm"):
        return "accelerate launch recipes/train_rm.py --config recipes/hyp_<h>.yaml"
    return "the stage that writes it (docs/recipes.md)"
