"""Training: its settings (``config``), the step, losses, tiles, the two-phase trainer and its validations,
and the settings chosen from a dataset (``adapt``). Knows nothing of Optuna."""
