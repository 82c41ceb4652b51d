"""The recipes' embedded default: the experiment's synthetic world, written at the shipped default `outputs/data` when
it is missing, so a fresh clone runs. The experiment is imported here only, and only when the default is built."""


def build_default_data(data_dir: str, seed: int) -> None:
    """Write the synthetic world (pairs, prompt table, tokenizer, tiny models) of `seed` to `data_dir`."""
    from density_rlhf.experiment.prepare import PrepareDataArguments, prepare_data

    prepare_data(PrepareDataArguments(output_dir=data_dir, seed=seed))
