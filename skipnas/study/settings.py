"""Search settings and their allowed values; imports nothing heavy, so the CLI can build its parser fast."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from skipnas.errors import SkipnasError

DEFAULT_RUNS_DIR = Path("runs")
OBJECTIVES = ("dice", "count_mae", "dice+memory")
DIRECTIONS = {"dice": ["maximize"], "count_mae": ["minimize"], "dice+memory": ["maximize", "minimize"]}
SAMPLERS = ("tpe", "random", "nsga2", "bruteforce")
PRUNERS = ("median", "hyperband", "none")
BASELINES = ("standard", "semi-dense", "reverse", "dense", "none")
BASELINE_ATTR = "baseline"


@dataclass(frozen=True)
class SearchSettings:
    """Everything ``skipnas search`` takes; defaults run on the demo data on a laptop CPU."""

    trials: int = 50
    data: str = "demo"
    space: str = "default"
    storage: str | None = None  # None: SQLite under runs_dir
    study: str | None = None  # None: derived from data, space and objective
    budget_mib: float | None = None  # overrides the space file's
    trial_seconds: float = 20.0  # training budget per trial, pretraining included
    pretrain_fraction: float = 0.3
    synthetic_images: int = 32
    sampler: str = "tpe"
    pruner: str = "median"
    objective: str = "dice"
    seed: int = 0
    device: str = "auto"
    runs_dir: Path = DEFAULT_RUNS_DIR
    keep_models: int | None = None  # keep the model folders of the best K trials; None keeps all

    def __post_init__(self) -> None:
        checks = (("sampler", SAMPLERS), ("pruner", PRUNERS), ("objective", OBJECTIVES))
        for name, allowed in checks:
            if getattr(self, name) not in allowed:
                raise SkipnasError(f"--{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if self.trials < 1:
            raise SkipnasError(f"--trials must be at least 1, got {self.trials}")
        if self.trial_seconds <= 0:
            raise SkipnasError(f"--trial-seconds must be positive, got {self.trial_seconds}")
        if self.budget_mib is not None and self.budget_mib <= 0:
            raise SkipnasError(f"--budget-mib must be a positive number of MiB, got {self.budget_mib:g}")
        if self.keep_models is not None and self.keep_models < 1:
            raise SkipnasError(f"--keep-models must be at least 1 (the best model is always kept), got {self.keep_models}")
        if not 0 <= self.pretrain_fraction < 1:
            raise SkipnasError(f"pretrain_fraction must be in [0, 1), got {self.pretrain_fraction}")
