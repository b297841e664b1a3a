"""The search: a study in Optuna storage, baselines first, then sampled candidates up to N trials.

The driver only joins the pieces: storage (:mod:`skipnas.study.storage`), the trial
(:mod:`skipnas.study.objective`), the live display (:mod:`skipnas.study.display`).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from skipnas.data.tiling import TileConfig
from skipnas.errors import SkipnasError
from skipnas.genome import Genome
from skipnas.space import SearchSpace, budget_bytes, load_space
from skipnas.study.objective import Objective, TrialProgress, prune_model_folders
from skipnas.study.settings import BASELINE_ATTR, BASELINES, DIRECTIONS, SearchSettings
from skipnas.study.storage import default_storage_url, make_storage
from skipnas.train.trainer import PhaseConfig, TrainConfig

def study_name_for(settings: SearchSettings, data_root: Path, space: SearchSpace) -> str:
    name = f"{data_root.name if settings.data != 'demo' else 'demo'}-{space.name}"
    if settings.objective != "dice":
        name += f"-{settings.objective.replace('+', '-')}"
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if name == "bruteforce":
        return optuna.samplers.BruteForceSampler(seed=seed)
    # a few random trials after the baselines, then TPE models the skip genes jointly
    return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=10)


def make_pruner(name: str, objective: str) -> optuna.pruners.BasePruner:
    if name == "none" or len(DIRECTIONS[objective]) > 1:
        return optuna.pruners.NopPruner()
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=2, reduction_factor=3)
    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2)


def enqueue_baselines(study: optuna.Study, space: SearchSpace, genome_hyperparameters: dict[str, Any] | None = None) -> list[str]:
    """Queue the named topologies the space can express as the study's first trials (once per study)."""
    queued = []
    for name in BASELINES:
        genome = Genome.named(name, depth=space.depth)
        if not space.contains(genome):
            continue
        params: dict[str, Any] = dict(space.params_for(genome))
        params.update(genome_hyperparameters or {})
        study.enqueue_trial(params, user_attrs={BASELINE_ATTR: name}, skip_if_exists=True)
        queued.append(name)
    return queued


def _baseline_fixed_params(space: SearchSpace) -> dict[str, Any]:
    """Baselines use the first choice (or the lower bound) of each searchable hyperparameter,
    so every baseline trains with the same settings."""
    from skipnas.space import Choice, FloatRange, IntRange

    fixed: dict[str, Any] = {}
    for name, hp in space.hyperparameters.items():
        if isinstance(hp, Choice):
            fixed[name] = hp.choices[0]
        elif isinstance(hp, (FloatRange, IntRange)):
            fixed[name] = math.sqrt(hp.low * hp.high) if hp.log and isinstance(hp, FloatRange) else hp.low
    return fixed


def open_study(settings: SearchSettings, space: SearchSpace, study_name: str, storage: Any) -> tuple[optuna.Study, bool]:
    """Create the study (and queue its baselines), or load it; returns (study, created)."""
    sampler = make_sampler(settings.sampler, settings.seed)
    pruner = make_pruner(settings.pruner, settings.objective)
    directions = DIRECTIONS[settings.objective]
    try:
        study = optuna.create_study(storage=storage, study_name=study_name, directions=directions, sampler=sampler, pruner=pruner)
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=study_name, storage=storage, sampler=sampler, pruner=pruner)
        if [d.name.lower() for d in study.directions] != directions:
            raise SkipnasError(
                f"study {study_name!r} optimises {[d.name.lower() for d in study.directions]}, not {settings.objective}; "
                "give another --study name"
            ) from None
        # a resumed run must not replay the first run's random draws: offset the seed by the trials so far
        study.sampler = make_sampler(settings.sampler, settings.seed + len(study.get_trials(deepcopy=False)))
        return study, False
    study.set_user_attr("space", space.name)
    study.set_user_attr("objective", settings.objective)
    study.set_user_attr("data", settings.data)
    enqueue_baselines(study, space, _baseline_fixed_params(space))
    return study, True


def counted_trials(study: optuna.Study) -> int:
    """Trials toward ``--trials``: every trial that ran or runs, except failed ones that were retried."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.system_attrs.get("failed_trial") for t in trials if t.system_attrs.get("failed_trial") is not None}
    return sum(
        1
        for t in trials
        if t.state != optuna.trial.TrialState.WAITING and not (t.state == optuna.trial.TrialState.FAIL and t.number in retried)
    )


def base_train_config(settings: SearchSettings, space: SearchSpace) -> TrainConfig:
    pretrain = settings.trial_seconds * settings.pretrain_fraction
    return TrainConfig(
        pretrain=PhaseConfig(seconds=pretrain if pretrain > 0 else 0),
        finetune=PhaseConfig(seconds=settings.trial_seconds - pretrain),
        synthetic_images=settings.synthetic_images,
        batch_size=space.batch,
        tile=TileConfig(size=space.tile),
        device=settings.device,
        seed=settings.seed,
    )


@dataclass
class SearchResult:
    study: optuna.Study
    study_name: str
    storage_url: str
    created: bool
    trials_dir: Path
    interrupted: bool = False
    notes: list[str] = field(default_factory=list)


def search(
    settings: SearchSettings | None = None,
    on_progress: Callable[[TrialProgress], None] | None = None,
    on_trial_end: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None,
    **overrides: Any,
) -> SearchResult:
    """Run (or resume) a search until the study holds ``settings.trials`` trials.

    ``skipnas.search(trials=6, data="demo")`` is the Python form of ``skipnas search --trials 6``.
    Ctrl-C ends the running trial (recorded as failed, with the reason) and returns with
    ``interrupted=True``; the study stays intact and the same call resumes it.
    """
    settings = dataclasses.replace(settings or SearchSettings(), **overrides)
    # failed trials keep their reason in the study; Optuna's own warning would add a traceback
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    space = load_space(settings.space)
    if settings.sampler == "bruteforce":
        from skipnas.space import FloatRange

        continuous = [name for name, hp in space.hyperparameters.items() if isinstance(hp, FloatRange)]
        if continuous:
            raise SkipnasError(
                f"--sampler bruteforce enumerates every candidate, but {space.source}: {', '.join(continuous)} "
                "are continuous; fix them or give them choices (search_spaces/skips-only.toml fixes all)"
            )
    budget = budget_bytes(space, settings.budget_mib)
    from skipnas.train.run import prepare_data

    base = base_train_config(settings, space)
    data = prepare_data(settings.data, base)
    study_name = settings.study or study_name_for(settings, data.root, space)
    storage = make_storage(settings.storage, settings.runs_dir)
    storage_url = settings.storage or default_storage_url(settings.runs_dir)
    study, created = open_study(settings, space, study_name, storage)
    trials_dir = settings.runs_dir / study_name / "trials"
    objective = Objective(
        space, data, base, settings.objective, budget, trials_dir=trials_dir, on_progress=on_progress,
    )
    result = SearchResult(study, study_name, storage_url, created, trials_dir)

    def after_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if settings.keep_models is not None:
            prune_model_folders(study, settings.keep_models, settings.objective)
        if on_trial_end is not None:
            on_trial_end(study, trial)

    try:
        while counted_trials(study) < settings.trials:
            study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=[after_trial])
    except KeyboardInterrupt:
        result.interrupted = True
    return result
