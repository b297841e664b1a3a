"""The supernet-free search: Optuna study, trial objective, storages, reports."""
