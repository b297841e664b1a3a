"""Training: the step, losses, the two-phase trainer. Knows nothing of Optuna."""
