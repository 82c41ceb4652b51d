"""The recipes: one script per pipeline stage and their default configs, shipped as `density_rlhf.recipes`."""
