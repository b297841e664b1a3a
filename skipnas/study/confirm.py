"""``skipnas confirm``: the study's best candidates and the named baselines trained again with several
seeds on the study's budget, and scored on the test split, which took no part in any choice.

A search's scores come from the validation split that also chose each trial's kept weights and its
counting, and the search ranks on them: they are selection scores, optimistic for the winner. Here
the top ``top`` distinct candidates and the standard, semi-dense and reverse baselines are each
trained ``seeds`` times (seeds 0..S-1, the search's settings otherwise) and counted on the test
images. Each gets the mean and a 95 % t-interval over seeds of Dice, count MAE and relative count
error; the best candidate is compared with the best baseline image by image and seed by seed (a
paired bootstrap of the per-image difference), and the verdict says whether they can be told apart.
The result is stored in the study (``confirmation``), where ``report`` and ``export`` read it.
Each finished run leaves its test scores beside its model folder, so an interrupted confirmation
resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from skipnas.errors import SkipnasError
from skipnas.fileio import write_json_atomic
from skipnas.genome import Genome
from skipnas.space import SearchSpace, load_space
from skipnas.study.settings import BASELINE_ATTR, BUDGET_ATTR, DEFAULT_RUNS_DIR, DIRECTIONS, SearchSettings

CONFIRMATION_ATTR = "confirmation"
RUN_FILE = "confirm_run.json"  # beside each run's model folder files: its key and test scores
CONFIRM_BASELINES = ("standard", "semi-dense", "reverse")
BOOTSTRAP_RESAMPLES = 2000
METRICS = ("dice", "count_mae", "relative_count_error")


@dataclass(frozen=True)
class Candidate:
    """One study trial to train again: its genome and training hyperparameters."""

    trial: int
    topology: str
    baseline: str | None
    genome: Genome
    hyperparameters: dict[str, Any]


@dataclass
class CandidateRuns:
    """A candidate's runs: per seed its pooled test metrics, and per (seed, image) its rows."""

    candidate: Candidate
    metrics: list[dict[str, float]] = field(default_factory=list)  # one per seed
    rows: list[dict[str, Any]] = field(default_factory=list)  # seed, stem, true_count, pred_count, dice


def interval(values: Sequence[float], confidence: float = 0.95) -> dict[str, float]:
    """Mean and a t-interval of the mean; with one value the interval is that value."""
    from scipy import stats

    array = np.asarray(values, float)
    mean = float(array.mean())
    if len(array) < 2:
        return {"mean": mean, "low": mean, "high": mean}
    half = float(stats.t.ppf(0.5 + confidence / 2, len(array) - 1) * array.std(ddof=1) / math.sqrt(len(array)))
    return {"mean": mean, "low": mean - half, "high": mean + half}


def paired_difference(candidate: Sequence[float], baseline: Sequence[float], seed: int = 0) -> dict[str, float]:
    """Mean of ``candidate - baseline`` over paired items, with a 95 % percentile-bootstrap interval."""
    difference = np.asarray(candidate, float) - np.asarray(baseline, float)
    if difference.size == 0:
        raise ValueError("paired_difference needs at least one pair")
    rng = np.random.default_rng(seed)
    means = difference[rng.integers(0, difference.size, size=(BOOTSTRAP_RESAMPLES, difference.size))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"mean": float(difference.mean()), "low": float(low), "high": float(high)}


def _per_image(rows: list[dict[str, Any]], metric: str) -> list[float]:
    """Each (seed, image) row's score for the comparison: absolute count error, or Dice."""
    if metric == "dice":
        return [float(row["dice"]) for row in rows]
    return [abs(float(row["pred_count"]) - float(row["true_count"])) for row in rows]


def verdict(best: CandidateRuns | None, baseline: CandidateRuns | None, metric: str) -> dict[str, Any]:
    """The best candidate against the best baseline on the same (seed, image) pairs."""
    if best is None or baseline is None:
        missing = "searched candidate" if best is None else "baseline"
        return {"winner": None, "baseline": None, "distinguishable": False, "difference": None,
                "text": f"no {missing} to compare"}
    pairs_best = sorted(best.rows, key=lambda row: (row["seed"], row["stem"]))
    pairs_base = sorted(baseline.rows, key=lambda row: (row["seed"], row["stem"]))
    difference = paired_difference(_per_image(pairs_best, metric), _per_image(pairs_base, metric))
    distinguishable = difference["low"] > 0 or difference["high"] < 0
    higher_is_better = metric == "dice"
    candidate_better = (difference["mean"] > 0) == higher_is_better
    label = "Dice" if metric == "dice" else "count MAE"
    scores = (
        f"{label} {np.mean(_per_image(pairs_best, metric)):.2f} vs {np.mean(_per_image(pairs_base, metric)):.2f} "
        f"(95 % CI of the difference {difference['low']:.2f} to {difference['high']:.2f})"
    )
    name, base = f"trial {best.candidate.trial}", str(baseline.candidate.baseline)
    if not distinguishable:
        text = f"no candidate is distinguishable from {base}: {scores}"
    elif candidate_better:
        text = f"{name} beats {base}: {scores}"
    else:
        text = f"{base} beats {name}: {scores}"
    winner = (best.candidate.trial if candidate_better else baseline.candidate.trial) if distinguishable else None
    return {"winner": winner, "baseline": base, "distinguishable": bool(distinguishable), "difference": difference,
            "text": text}


def _space_of(study: optuna.Study) -> SearchSpace:
    source = study.user_attrs.get("space_source") or study.user_attrs.get("space")
    if not source:
        raise SkipnasError(f"study {study.study_name!r} does not record its search space; it was not made by skipnas search")
    try:
        return load_space(str(source))
    except SkipnasError as exc:
        raise SkipnasError(f"study {study.study_name!r}: its search space {source} cannot be read again ({exc})") from None


def choose_candidates(study: optuna.Study, space: SearchSpace, top: int, objective: str) -> list[Candidate]:
    """The ``top`` best distinct completed candidates by the study's objective, then each of the
    standard, semi-dense and reverse baselines the study completed that is not among them."""
    maximize = DIRECTIONS[objective][0] == "maximize"
    complete = [
        t for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if "duplicate_of" not in t.user_attrs and "genome" in t.user_attrs
    ]
    ranked = sorted(complete, key=lambda t: (-t.values[0] if maximize else t.values[0], t.number))
    chosen: list[optuna.trial.FrozenTrial] = []
    keys: set[str] = set()
    for trial in ranked:
        key = str(trial.user_attrs.get("candidate_hash", trial.number))
        if len(chosen) < top and key not in keys:
            chosen.append(trial)
            keys.add(key)
    for name in CONFIRM_BASELINES:
        baseline = next((t for t in sorted(complete, key=lambda t: t.number) if t.user_attrs.get(BASELINE_ATTR) == name), None)
        if baseline is not None and str(baseline.user_attrs.get("candidate_hash", baseline.number)) not in keys:
            chosen.append(baseline)
            keys.add(str(baseline.user_attrs.get("candidate_hash", baseline.number)))
    if not chosen:
        raise SkipnasError(f"study {study.study_name!r} has no completed trial to confirm; run skipnas search first")
    candidates = []
    for trial in chosen:
        genome, hyperparameters = space.suggest(optuna.trial.FixedTrial(trial.params))
        candidates.append(Candidate(trial.number, str(trial.user_attrs.get("topology", genome.name)),
                                    trial.user_attrs.get(BASELINE_ATTR), genome, hyperparameters))
    return candidates


def _settings_of(study: optuna.Study, device: str, runs_dir: Path) -> SearchSettings:
    budget = study.user_attrs.get(BUDGET_ATTR) or {}
    return SearchSettings(
        data=str(study.user_attrs.get("data", "demo")),
        objective=str(study.user_attrs.get("objective", "dice")),
        trial_seconds=float(budget.get("seconds", SearchSettings().trial_seconds)),
        trial_steps=budget.get("steps"),
        synthetic_images=int(study.user_attrs.get("synthetic_images", SearchSettings().synthetic_images)),
        device=device,
        runs_dir=runs_dir,
    )


def confirm(
    study: optuna.Study,
    top: int = 3,
    seeds: int = 3,
    device: str = "auto",
    runs_dir: Path = DEFAULT_RUNS_DIR,
    on_run: Callable[[Candidate, int, dict[str, float]], None] | None = None,
) -> dict[str, Any]:
    """Train the chosen candidates ``seeds`` times each, score them on the test split, compare the
    best with the best baseline, store the result in the study and return it."""
    from skipnas.candidate import adapt_config_to_dataset, open_dataset, prepare_data, train_candidate
    from skipnas.data.loading import load_labeled
    from skipnas.evaluate import evaluate_images
    from skipnas.study.driver import base_train_config
    from skipnas.study.objective import training_config

    if top < 1 or seeds < 1:
        raise SkipnasError(f"--top and --seeds must be at least 1, got {top} and {seeds}")
    settings = _settings_of(study, device, runs_dir)
    space = _space_of(study)
    index = open_dataset(settings.data)
    test_images = load_labeled(index.samples("test"))
    if not test_images:
        raise SkipnasError(
            f"{index.root}: no labelled test images, and confirmation scores on data that chose nothing; "
            "add a test split with masks (cross-validation over train and val is not built yet)"
        )
    candidates = choose_candidates(study, space, top, settings.objective)
    base, _ = adapt_config_to_dataset(index, base_train_config(settings, space), space.depth, tile=space.tile, batch=space.batch)
    runs = [CandidateRuns(candidate) for candidate in candidates]
    folder = runs_dir / study.study_name / "confirm"
    for seed in range(seeds):
        seeded = dataclasses.replace(base, seed=seed)
        data = None  # prepared when a run of this seed must train: the semi-synthetic images follow the seed
        for entry in runs:
            out = folder / f"trial{entry.candidate.trial}-seed{seed}"
            key = {"genome": entry.candidate.genome.hash, "hyperparameters": entry.candidate.hyperparameters, "seed": seed,
                   "budget": study.user_attrs.get(BUDGET_ATTR), "data": str(index.root)}
            done = _finished_run(out, key)
            if done is None:
                data = data or prepare_data(index, seeded)
                config = training_config(seeded, entry.candidate.hyperparameters)
                train_candidate(entry.candidate.genome, data, config, out=out, progress=False)
                scores = evaluate_images(out, test_images, device=device)
                done = {
                    "key": key,
                    "metrics": {name: float(scores[name]) for name in METRICS},
                    "rows": [{"seed": seed, **{k: row[k] for k in ("stem", "true_count", "pred_count", "dice")}} for row in scores["rows"]],
                }
                write_json_atomic(out / RUN_FILE, done)  # an interrupted confirmation resumes after this run
            entry.metrics.append(done["metrics"])
            entry.rows += done["rows"]
            if on_run is not None:
                on_run(entry.candidate, seed, done["metrics"])
    metric = "count_mae" if settings.objective == "count_mae" else "dice"
    searched = [r for r in runs if r.candidate.baseline is None]
    baselines = [r for r in runs if r.candidate.baseline is not None]
    result = {
        "seeds": seeds,
        "split": "test",
        "budget": study.user_attrs.get(BUDGET_ATTR),
        "candidates": [
            {
                "trial": r.candidate.trial,
                "topology": r.candidate.topology,
                "baseline": r.candidate.baseline,
                "seeds": seeds,
                **{name: interval([m[name] for m in r.metrics]) for name in METRICS},
            }
            for r in runs
        ],
        "verdict": verdict(_best(searched, metric), _best(baselines, metric), metric),
    }
    study.set_user_attr(CONFIRMATION_ATTR, result)
    return result


def _finished_run(out: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    """The test scores an earlier confirmation stored for the same candidate, seed, budget and data."""
    try:
        done = json.loads((out / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    same = isinstance(done, dict) and done.get("key") == json.loads(json.dumps(key, default=str))
    return done if same else None


def _best(runs: list[CandidateRuns], metric: str) -> CandidateRuns | None:
    """The runs with the best mean of ``metric`` (Dice highest, count MAE lowest)."""
    if not runs:
        return None
    sign = -1.0 if metric == "dice" else 1.0
    return min(runs, key=lambda r: sign * float(np.mean([m[metric] for m in r.metrics])))
