"""Search settings and their allowed values; imports nothing heavy, so the CLI can build its parser fast."""

from __future__ import annotations

import re
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
BUDGET_ATTR = "budget"  # study attr: {"kind": "steps", "steps": N} or {"kind": "seconds", "seconds": S}
BASELINES_QUEUED_ATTR = "baselines_queued"  # study attr, set once the creating worker queued them
SURPLUS_ATTR = "surplus"  # trial attr: started by a worker after the study already held --trials
DATA_CHOICES_ATTR = "data_choices"  # study attr: the settings chosen from the data when the study began, in words
COUNTING_RULE_ATTR = "calibration_selection"  # study attr: the rule that chose each trial's counting setting
COUNTING_RULE_OF_OLDER_STUDIES = "stable"  # the rule of studies begun before they recorded it
_STUDY_NAME = re.compile(r"[A-Za-z0-9_.-]{1,200}")


def describe_budget(budget: dict[str, object] | None) -> str:
    """A study's trial budget in words: ``"3000 steps per trial"`` or ``"20 s per trial"``, with
    ``", validating every 15 steps"`` where the study set how often."""
    every = f", validating every {budget['validation_steps']} steps" if budget and budget.get("validation_steps") else ""
    if budget and budget.get("kind") == "steps":
        return f"{budget['steps']} steps per trial{every}"
    if budget and "seconds" in budget:
        return f"{float(budget['seconds']):g} s per trial{every}"  # type: ignore[arg-type]
    return "a time budget per trial"  # studies from before the budget was recorded


def check_study_name(name: str) -> str:
    """``name`` if it is safe as the study's folder under ``--runs-dir``: letters, digits, ``-_.``, not ``.``/``..``."""
    if _STUDY_NAME.fullmatch(name) and name not in (".", ".."):
        return name
    suggestion = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._")[:200] or "my-study"
    raise SkipnasError(
        f"--study {name!r}: a study name becomes a folder under --runs-dir, so it takes up to 200 letters, "
        f"digits, '-', '_' and '.' (not '.' or '..'); e.g. --study {suggestion}"
    )


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
    trial_steps: int | None = None  # instead of seconds: every trial trains this many steps (the space's budget_steps)
    validation_steps: int | None = None  # a trial validates every this many steps (the pruner's rungs); None: training's default
    pretrain_fraction: float = 0.3
    synthetic_images: int = 32
    sampler: str = "tpe"
    pruner: str = "median"
    objective: str = "dice"
    seed: int = 0
    device: str = "auto"
    runs_dir: Path = DEFAULT_RUNS_DIR
    keep_models: int | None = None  # keep the model folders of the best K trials; None keeps all
    jobs: int = 1  # worker processes on this machine, all on the same study
    jobs_per_gpu: int | None = None  # with CUDA: this many workers per GPU (jobs = GPUs x this)
    threads: int | None = None  # torch CPU threads per worker; None: torch's default (all cores)
    heartbeat_seconds: int | None = 60  # RDB storages: a trial silent for 2x this is failed and retried once

    def __post_init__(self) -> None:
        checks = (("sampler", SAMPLERS), ("pruner", PRUNERS), ("objective", OBJECTIVES))
        for name, allowed in checks:
            if getattr(self, name) not in allowed:
                raise SkipnasError(f"--{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if self.study is not None:
            check_study_name(self.study)
        if self.trials < 1:
            raise SkipnasError(f"--trials must be at least 1, got {self.trials}")
        if self.trial_seconds <= 0:
            raise SkipnasError(f"--trial-seconds must be positive, got {self.trial_seconds}")
        if self.trial_steps is not None and self.trial_steps < 1:
            raise SkipnasError(f"--trial-steps must be at least 1, got {self.trial_steps}")
        if self.validation_steps is not None and self.validation_steps < 1:
            raise SkipnasError(f"--validation-steps must be at least 1, got {self.validation_steps}")
        if self.budget_mib is not None and self.budget_mib <= 0:
            raise SkipnasError(f"--budget-mib must be a positive number of MiB, got {self.budget_mib:g}")
        if self.keep_models is not None and self.keep_models < 1:
            raise SkipnasError(f"--keep-models must be at least 1 (the best model is always kept), got {self.keep_models}")
        if self.jobs < 1 or (self.jobs_per_gpu is not None and self.jobs_per_gpu < 1):
            raise SkipnasError(f"--jobs and --jobs-per-gpu must be at least 1, got {self.jobs} and {self.jobs_per_gpu}")
        if self.heartbeat_seconds is not None and self.heartbeat_seconds < 1:
            raise SkipnasError(f"heartbeat_seconds must be at least 1, got {self.heartbeat_seconds}")
        if not 0 <= self.pretrain_fraction < 1:
            raise SkipnasError(f"pretrain_fraction must be in [0, 1), got {self.pretrain_fraction}")
