"""The search: a study in Optuna storage, baselines first, then sampled candidates up to N trials.

The driver only joins the pieces: storage (:mod:`skipnas.study.storage`), the trial
(:mod:`skipnas.study.objective`), the live display (:mod:`skipnas.study.display`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from skipnas.data.particles import DEFAULT_TILE
from skipnas.data.tiling import TileConfig
from skipnas.errors import SkipnasError
from skipnas.genome import Genome
from skipnas.space import SearchSpace, budget_bytes, load_space
from skipnas.study.objective import Objective, TrialProgress, prune_model_folders
from skipnas.study.settings import (
    BASELINE_ATTR,
    BASELINES,
    BASELINES_QUEUED_ATTR,
    BUDGET_ATTR,
    COUNTING_RULE_ATTR,
    COUNTING_RULE_OF_OLDER_STUDIES,
    DATA_CHOICES_ATTR,
    DIRECTIONS,
    SearchSettings,
    check_study_name,
    describe_budget,
)
from skipnas.study.storage import default_storage_url, fail_stale_trials, make_storage
from skipnas.study.trials import counted_trials, retry_failed_trial
from skipnas.train.config import PhaseConfig, TrainConfig, split_steps

VALIDATION_STEPS = TrainConfig().validation_steps or 100


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


def make_pruner(
    name: str, objective: str, finetune_steps: int | None = None, validation_steps: int = VALIDATION_STEPS
) -> optuna.pruners.BasePruner:
    """The pruner, its resource the fine-tuning steps: Hyperband's rungs run from about a ninth of
    ``finetune_steps`` (a step budget) up to it, or up to the first finished trial's steps (seconds);
    the median rule starts after two validations."""
    if name == "none" or len(DIRECTIONS[objective]) > 1:
        return optuna.pruners.NopPruner()
    if name == "hyperband":
        if finetune_steps is not None:
            smallest = min(max(validation_steps, finetune_steps // 9), finetune_steps)
            return optuna.pruners.HyperbandPruner(min_resource=smallest, max_resource=finetune_steps, reduction_factor=3)
        return optuna.pruners.HyperbandPruner(min_resource=validation_steps, max_resource="auto", reduction_factor=3)
    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2 * validation_steps)


def enqueue_baselines(
    study: optuna.Study,
    space: SearchSpace,
    genome_hyperparameters: dict[str, Any] | None = None,
    max_trials: int | None = None,
) -> list[str]:
    """Queue the named topologies the space can express and the study has not tried yet, as many as
    ``max_trials`` leaves room for (a later run with more trials queues the rest); returns those queued."""
    trials = study.get_trials(deepcopy=False)
    tried = {t.user_attrs.get(BASELINE_ATTR) for t in trials}
    room = math.inf if max_trials is None else max_trials - counted_trials(study) - sum(
        t.state == optuna.trial.TrialState.WAITING for t in trials
    )
    queued: list[str] = []
    for name in BASELINES:
        genome = Genome.named(name, depth=space.depth)
        if len(queued) >= room or name in tried or not space.contains(genome):
            continue
        params: dict[str, Any] = dict(space.params_for(genome))
        params.update(genome_hyperparameters or {})
        study.enqueue_trial(params, user_attrs={BASELINE_ATTR: name})
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
    config = base_train_config(settings, space)
    pruner = make_pruner(
        settings.pruner, settings.objective, config.finetune.steps, config.validation_steps or VALIDATION_STEPS
    )
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
        stored = study.user_attrs.get(BUDGET_ATTR) or {"kind": "seconds"}
        budget = trial_budget(settings, space)
        if stored["kind"] != budget["kind"]:
            raise SkipnasError(
                f"study {study_name!r} gives its trials {describe_budget(stored)}, and this run "
                f"{describe_budget(budget)}: their trials would not compare; resume it with the same kind of "
                "budget (--trial-steps or --trial-seconds) or give another --study name"
            )
        # a resumed run (or another worker) must not replay the same random draws: offset the seed
        # by the trials so far and the process
        offset = len(study.get_trials(deepcopy=False)) + 1000 * (os.getpid() % 1000)
        study.sampler = make_sampler(settings.sampler, settings.seed + offset)
        _wait_for_baselines(study)
        # more --trials than an earlier run: the baselines it had no room for come first
        # (workers resuming at the same moment may both queue one: the later is then a duplicate)
        queued = enqueue_baselines(study, space, _baseline_fixed_params(space), settings.trials)
        if queued:
            study.set_user_attr(BASELINES_QUEUED_ATTR, [*study.user_attrs.get(BASELINES_QUEUED_ATTR, []), *queued])
        return study, False
    study.set_user_attr("space", space.name)
    study.set_user_attr("space_source", space.source)  # so confirm can suggest the same candidates again
    study.set_user_attr("objective", settings.objective)
    study.set_user_attr("data", settings.data)
    study.set_user_attr(BUDGET_ATTR, trial_budget(settings, space))
    study.set_user_attr("synthetic_images", settings.synthetic_images)  # confirm pretrains the same way
    queued = enqueue_baselines(study, space, _baseline_fixed_params(space), settings.trials)
    study.set_user_attr(BASELINES_QUEUED_ATTR, queued)  # other workers wait for this before their first trial
    return study, True


def _wait_for_baselines(study: optuna.Study, timeout: float = 60.0) -> None:
    """A worker that loaded a study another worker is still creating waits until its baselines are queued."""
    deadline = time.monotonic() + timeout
    while BASELINES_QUEUED_ATTR not in study.user_attrs and time.monotonic() < deadline:
        time.sleep(0.5)


def trial_budget(settings: SearchSettings, space: SearchSpace) -> dict[str, Any]:
    """Each trial's training budget, pretraining included: ``{"kind": "steps", "steps": N}`` (--trial-steps,
    else the space's budget_steps: every candidate does the same work) or ``{"kind": "seconds", "seconds": S}``
    (a cheaper candidate trains more steps), with ``"validation_steps"`` where --validation-steps set it."""
    steps = settings.trial_steps or space.budget_steps
    budget: dict[str, Any] = {"kind": "steps", "steps": int(steps)} if steps is not None else {
        "kind": "seconds", "seconds": float(settings.trial_seconds)}
    if settings.validation_steps is not None:
        budget["validation_steps"] = settings.validation_steps
    return budget


def base_train_config(settings: SearchSettings, space: SearchSpace) -> TrainConfig:
    budget = trial_budget(settings, space)
    if budget["kind"] == "steps":
        pretrain_steps, finetune_steps = split_steps(budget["steps"], settings.pretrain_fraction)
        phases = PhaseConfig(steps=pretrain_steps), PhaseConfig(steps=finetune_steps)
    else:
        pretrain = settings.trial_seconds * settings.pretrain_fraction
        phases = PhaseConfig(seconds=pretrain if pretrain > 0 else 0), PhaseConfig(seconds=settings.trial_seconds - pretrain)
    return TrainConfig(
        pretrain=phases[0],
        finetune=phases[1],
        keep_best_by="count" if settings.objective == "count_mae" else "dice",  # pruned and kept by what it optimises
        synthetic_images=settings.synthetic_images,
        validation_steps=settings.validation_steps or TrainConfig().validation_steps,
        tile=TileConfig(size=space.tile or DEFAULT_TILE),
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


def _validated_space(settings: SearchSettings) -> SearchSpace:
    space = load_space(settings.space)
    if settings.sampler == "bruteforce":
        from skipnas.space import FloatRange

        continuous = [name for name, hp in space.hyperparameters.items() if isinstance(hp, FloatRange)]
        if continuous:
            raise SkipnasError(
                f"--sampler bruteforce enumerates every candidate, but {space.source}: {', '.join(continuous)} "
                "are continuous; fix them or give them choices (search_spaces/skips-only.toml fixes all)"
            )
    return space


def search(
    settings: SearchSettings | None = None,
    on_progress: Callable[[TrialProgress], None] | None = None,
    on_study: Callable[[optuna.Study], None] | None = None,
    **overrides: Any,
) -> SearchResult:
    """Run (or resume) a search until the study holds ``settings.trials`` trials.

    ``skipnas.search(trials=6, data="demo")`` is the Python form of ``skipnas search --trials 6``.
    ``on_progress`` hears about the running trial, ``on_study`` is called with the study after every
    trial (every few seconds with several workers). With ``jobs`` > 1 (or ``jobs_per_gpu``) this
    process starts that many worker processes on the same study and waits for them.
    Ctrl-C ends the running trial (recorded as failed, with the reason; a baseline is queued again)
    and returns with ``interrupted=True``; the study stays intact and the same call resumes it.
    """
    settings = dataclasses.replace(settings or SearchSettings(), **overrides)
    # failed trials keep their reason in the study; Optuna's own warning would add a traceback
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    if settings.jobs > 1 or settings.jobs_per_gpu is not None:
        return _search_with_workers(settings, on_study)
    if settings.threads is not None:
        import torch

        torch.set_num_threads(settings.threads)
    space = _validated_space(settings)
    budget = budget_bytes(space, settings.budget_mib)
    from skipnas.candidate import adapt_config_to_dataset, open_dataset, prepare_data

    index = open_dataset(settings.data)
    study_name = check_study_name(settings.study or study_name_for(settings, index.root, space))
    # a bad storage URL is reported before the data's statistics and synthetic images are prepared
    storage = make_storage(settings.storage, settings.runs_dir, heartbeat_seconds=settings.heartbeat_seconds)
    storage_url = settings.storage or default_storage_url(settings.runs_dir)
    base, choices = adapt_config_to_dataset(
        index, base_train_config(settings, space), space.depth, tile=space.tile, batch=space.batch
    )
    data = prepare_data(index, base)
    study, created = open_study(settings, space, study_name, storage)
    notes = list(choices)
    if created:
        study.set_user_attr(DATA_CHOICES_ATTR, notes)
    elif (began := study.user_attrs.get(DATA_CHOICES_ATTR)) is not None and began != notes:
        # the data or skipnas changed since: its new trials train otherwise than the old ones
        changed = [note for note in notes if note not in began] + [f"no longer: {note}" for note in began if note not in notes]
        notes.append(
            "warning: the settings chosen from the data differ from when this study began, so its trials before and "
            f"after this run do not compare ({'; '.join(changed)}); give another --study name to start afresh"
        )
    rule = base.calibration_selection
    if created:
        study.set_user_attr(COUNTING_RULE_ATTR, rule)
    elif (began_rule := study.user_attrs.get(COUNTING_RULE_ATTR, COUNTING_RULE_OF_OLDER_STUDIES)) != rule:
        notes.append(
            f"warning: this study's earlier trials chose their counting by the {began_rule!r} rule, its new ones by {rule!r}, "
            "so their count scores do not compare; give another --study name to start afresh"
        )
    trials_dir = settings.runs_dir / study_name / "trials"
    objective = Objective(
        space, data, base, settings.objective, budget, trials_dir=trials_dir, on_progress=on_progress,
        max_trials=settings.trials, data_choices=tuple(choices),
    )
    result = SearchResult(study, study_name, storage_url, created, trials_dir, notes=notes)

    def after_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        retry_failed_trial(study, trial)
        if settings.keep_models is not None:
            prune_model_folders(study, settings.keep_models, settings.objective, trials_dir)
        if on_study is not None:
            on_study(study)

    try:
        while True:
            # first fail (and queue again) the trials of killed workers: a dead trial left RUNNING
            # would otherwise count toward --trials for good
            fail_stale_trials(study)
            if counted_trials(study) >= settings.trials:
                if _wait_for_running_trials(study, storage):
                    if on_study is not None:
                        on_study(study)
                    continue  # one may turn out dead (and be queued again) or fail
                break
            study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=[after_trial])
    except KeyboardInterrupt:
        result.interrupted = True
        if objective.interrupted_trial is not None:  # Optuna has recorded it failed: a baseline runs again
            interrupted = [t for t in study.get_trials(deepcopy=False) if t.number == objective.interrupted_trial]
            for trial in interrupted:
                retry_failed_trial(study, trial)
    return result


def _wait_for_running_trials(study: optuna.Study, storage: Any) -> bool:
    """Wait a moment (at most one heartbeat) if trials still run (in other workers, or in a run killed moments ago, which
    the stale check finds only after its grace period); False where none runs or there are no heartbeats."""
    interval = getattr(storage, "get_heartbeat_interval", lambda: None)()
    if not interval or not study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        return False
    time.sleep(min(interval, 2.0))  # a live worker's trial may end any moment
    return True


def worker_assignments(settings: SearchSettings) -> list[dict[str, str]]:
    """One environment per worker: a GPU each (or ``jobs_per_gpu`` per GPU) where there are GPUs."""
    import torch

    gpus = torch.cuda.device_count() if settings.device in ("auto", "cuda") else 0
    if settings.jobs_per_gpu is not None:
        if gpus == 0:
            raise SkipnasError("--jobs-per-gpu packs trials on CUDA devices, and none is visible here; use --jobs")
        return [{"CUDA_VISIBLE_DEVICES": str(i // settings.jobs_per_gpu)} for i in range(gpus * settings.jobs_per_gpu)]
    if gpus:
        return [{"CUDA_VISIBLE_DEVICES": str(i % gpus)} for i in range(settings.jobs)]
    return [{} for _ in range(settings.jobs)]


def worker_command(settings: SearchSettings, study_name: str, threads: int | None) -> list[str]:
    """The ``skipnas search`` command line of one worker: the same study, one process."""
    args = [
        sys.executable, "-m", "skipnas", "search", "--quiet",
        "--trials", str(settings.trials), "--data", settings.data, "--space", settings.space,
        "--study", study_name, "--trial-seconds", str(settings.trial_seconds), "--sampler", settings.sampler,
        "--pruner", settings.pruner, "--objective", settings.objective, "--seed", str(settings.seed),
        "--device", settings.device, "--runs-dir", str(settings.runs_dir), "--synthetic", str(settings.synthetic_images),
    ]
    optional = {
        "--storage": settings.storage, "--budget-mib": settings.budget_mib, "--keep-models": settings.keep_models,
        "--threads": threads, "--heartbeat-seconds": settings.heartbeat_seconds, "--trial-steps": settings.trial_steps,
        "--validation-steps": settings.validation_steps,
    }
    for flag, value in optional.items():
        if value is not None:
            args += [flag, str(value)]
    return args


def _search_with_workers(settings: SearchSettings, on_study: Callable[[optuna.Study], None] | None) -> SearchResult:
    """Create the study here (so its baselines are queued once), then run the workers and watch."""
    from skipnas.data.scan import resolve_dataset

    space = _validated_space(settings)
    environments = worker_assignments(settings)
    study_name = check_study_name(settings.study or study_name_for(settings, resolve_dataset(settings.data), space))
    storage = make_storage(settings.storage, settings.runs_dir)
    study, created = open_study(settings, space, study_name, storage)
    gpus = any(environments)
    # CPU workers share the cores; GPU workers need one thread each for the data and the launches
    threads = settings.threads or (1 if gpus else max(1, (os.cpu_count() or 1) // len(environments)))
    command = worker_command(settings, study_name, threads)
    result = SearchResult(study, study_name, settings.storage or default_storage_url(settings.runs_dir), created,
                          settings.runs_dir / study_name / "trials")
    processes = [subprocess.Popen(command, env={**os.environ, **env}) for env in environments]
    try:
        while any(p.poll() is None for p in processes):
            time.sleep(2.0)
            if on_study is not None:
                on_study(study)
    except KeyboardInterrupt:
        result.interrupted = True  # the workers got the same Ctrl-C and end their trials cleanly
        for process in processes:
            process.wait()
    failed = [p.returncode for p in processes if p.returncode not in (0, 130)]
    if failed and not result.interrupted:
        result.notes.append(f"{len(failed)} worker(s) exited with an error (codes {failed}); see their messages above")
    if on_study is not None:
        on_study(study)
    return result
