"""The experiment that tests density-aware sampling: the synthetic world, tiny offline models, the pipeline stages and
their runner, evaluation, statistics and the report. The library (`density_rlhf` outside this subpackage) never
imports it."""
