"""``skipnas confirm``: the study's best candidates and the named baselines trained again with several
seeds on the study's budget, and scored on data that took no part in any choice.

A search's scores come from the validation split that also chose each trial's kept weights and its
counting, and the search ranks on them: they are selection scores, optimistic for the winner. Here
the top ``top`` distinct candidates and the standard, semi-dense and reverse baselines are each
trained ``seeds`` times (seeds 0..S-1, the search's settings otherwise) and counted on the test
images; a dataset without test masks is cross-validated instead (:mod:`skipnas.data.folds`: each
fold trains, chooses and calibrates on its own parts and is scored on the part it held out). Each
candidate gets the mean and a 95 % t-interval over seeds of Dice, count MAE, relative count error
and object precision and recall; the best candidate is compared with the best baseline image by
image and seed by seed (a paired bootstrap of the per-image difference), and the verdict says
whether they can be told apart. The result is stored in the study (``confirmation``), where
``report`` and ``export`` read it. Each finished run leaves its scores beside its model folder, so
an interrupted confirmation resumes where it stopped.
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
METRICS = ("dice", "count_mae", "relative_count_error", "object_precision", "object_recall")
# each score's label in tables, in METRICS' order
SCORE_LABELS = {"dice": "Dice", "count_mae": "count MAE", "relative_count_error": "relative count error",
                "object_precision": "object precision", "object_recall": "object recall"}
# a run's pixel and particle totals, so the folds of one seed pool into one score
TOTALS = ("pixel_tp", "pixel_fp", "pixel_fn", "object_tp", "object_fp", "object_fn")


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
        # with only baselines confirmed, the best of them is still the choice the evidence supports
        base = baseline.candidate.baseline if baseline is not None else None
        return {"winner": None, "baseline": base, "distinguishable": False, "difference": None,
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
        validation_steps=budget.get("validation_steps"),
        synthetic_images=int(study.user_attrs.get("synthetic_images", SearchSettings().synthetic_images)),
        device=device,
        runs_dir=runs_dir,
    )


def held_out_sets(index: Any, folds: int) -> tuple[str, list[tuple[Any, list[Any]]]]:
    """What the runs are scored on: the test split where it has masks (one set, the dataset as it is),
    else ``folds``-fold cross-validation over the labelled train and val images (one re-split
    dataset per fold, scored on the fold's held-out part); and its name for the result."""
    from skipnas.data.folds import cross_validation_folds
    from skipnas.data.loading import load_labeled

    test_images = load_labeled(index.samples("test"))
    if test_images:
        return "test", [(index, test_images)]
    sets = [(fold, load_labeled(fold.samples("test"))) for fold in cross_validation_folds(index, folds)]
    return f"{folds}-fold cross-validation over train and val", sets


def pooled_metrics(runs: Sequence[dict[str, Any]]) -> dict[str, float]:
    """One seed's metrics over the runs of its folds: the counts over every held-out image, Dice and
    the object scores over every pixel and particle (a single run's own metrics, as stored)."""
    from skipnas.runtime.metrics import PixelMetrics, count_metrics, object_metrics

    if len(runs) == 1:
        return dict(runs[0]["metrics"])
    rows = [row for run in runs for row in run["rows"]]
    counts = count_metrics([row["pred_count"] for row in rows], [row["true_count"] for row in rows])
    tp, fp, fn = (sum(int(run["totals"][f"pixel_{k}"]) for run in runs) for k in ("tp", "fp", "fn"))
    objects = object_metrics([(int(run["totals"]["object_tp"]), int(run["totals"]["object_fp"]), int(run["totals"]["object_fn"])) for run in runs])
    return {
        "dice": PixelMetrics.from_counts(tp, fp, fn).dice,
        "count_mae": float(counts["count_mae"]),
        "relative_count_error": float(counts["relative_count_error"]),
        "object_precision": objects["object_precision"],
        "object_recall": objects["object_recall"],
    }


def confirm(
    study: optuna.Study,
    top: int = 3,
    seeds: int = 3,
    device: str = "auto",
    runs_dir: Path = DEFAULT_RUNS_DIR,
    on_run: Callable[[Candidate, int, dict[str, float]], None] | None = None,
    folds: int = 3,
) -> dict[str, Any]:
    """Train the chosen candidates ``seeds`` times each, score them on the test split (without test
    masks: ``folds``-fold cross-validation over train and val, each fold trained on its own), compare
    the best with the best baseline, store the result in the study and return it."""
    from skipnas.candidate import adapt_config_to_dataset, open_dataset, prepare_data, train_candidate
    from skipnas.evaluate import evaluate_images
    from skipnas.study.driver import base_train_config
    from skipnas.study.objective import training_config

    if top < 1 or seeds < 1:
        raise SkipnasError(f"--top and --seeds must be at least 1, got {top} and {seeds}")
    settings = _settings_of(study, device, runs_dir)
    space = _space_of(study)
    index = open_dataset(settings.data)
    split, held_out = held_out_sets(index, folds)
    candidates = choose_candidates(study, space, top, settings.objective)
    runs = [CandidateRuns(candidate) for candidate in candidates]
    folder = runs_dir / study.study_name / "confirm"
    # each held-out set's training config, adapted to its own training images once, whatever the seed;
    # counting calibrated as skipnas train and export calibrate it (trials calibrate on val alone)
    bases = [
        dataclasses.replace(
            adapt_config_to_dataset(fold_index, base_train_config(settings, space), space.depth, tile=space.tile, batch=space.batch)[0],
            calibrate_on="auto",
        )
        for fold_index, _ in held_out
    ]
    for seed in range(seeds):
        seed_runs: dict[int, list[dict[str, Any]]] = {entry.candidate.trial: [] for entry in runs}
        for fold, ((fold_index, images), base) in enumerate(zip(held_out, bases, strict=True)):
            seeded = dataclasses.replace(base, seed=seed)
            data = None  # prepared when a run of this seed and fold must train: the semi-synthetic images follow the seed
            for entry in runs:
                name = f"trial{entry.candidate.trial}-seed{seed}" + (f"-fold{fold}" if len(held_out) > 1 else "")
                key = {"genome": entry.candidate.genome.hash, "hyperparameters": entry.candidate.hyperparameters, "seed": seed,
                       "budget": study.user_attrs.get(BUDGET_ATTR), "data": str(index.root), "calibrate_on": base.calibrate_on}
                if base.augment.invert:  # runs stored before inversion existed trained without it
                    key["invert"] = True
                if len(held_out) > 1:
                    key["fold"] = f"{fold} of {len(held_out)}"
                out = folder / name
                done = _finished_run(out, key)
                if done is None:
                    data = data or prepare_data(fold_index, seeded)
                    config = training_config(seeded, entry.candidate.hyperparameters)
                    train_candidate(entry.candidate.genome, data, config, out=out, progress=False)
                    scores = evaluate_images(out, images, device=device)
                    done = {
                        "key": key,
                        "metrics": {name: float(scores[name]) for name in METRICS},
                        "totals": {k: int(scores[k]) for k in TOTALS},
                        "rows": [
                            {"seed": seed, **{k: row[k] for k in ("stem", "true_count", "pred_count", "dice")}} for row in scores["rows"]
                        ],
                    }
                    write_json_atomic(out / RUN_FILE, done)  # an interrupted confirmation resumes after this run
                seed_runs[entry.candidate.trial].append(done)
                entry.rows += done["rows"]
        for entry in runs:
            metrics = pooled_metrics(seed_runs[entry.candidate.trial])
            entry.metrics.append(metrics)
            if on_run is not None:
                on_run(entry.candidate, seed, metrics)
    metric = "count_mae" if settings.objective == "count_mae" else "dice"
    searched = [r for r in runs if r.candidate.baseline is None]
    baselines = [r for r in runs if r.candidate.baseline is not None]
    result = {
        "seeds": seeds,
        "split": split,
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
    """The scores an earlier confirmation stored for the same candidate, seed, fold, budget and data."""
    try:
        done = json.loads((out / RUN_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    same = isinstance(done, dict) and done.get("key") == json.loads(json.dumps(key, default=str))
    # a run stored without every score or total this version pools is trained again
    complete = same and set(METRICS) <= set(done.get("metrics", {})) and set(TOTALS) <= set(done.get("totals", {}))
    return done if complete else None


def _best(runs: list[CandidateRuns], metric: str) -> CandidateRuns | None:
    """The runs with the best mean of ``metric`` (Dice highest, count MAE lowest)."""
    if not runs:
        return None
    sign = -1.0 if metric == "dice" else 1.0
    return min(runs, key=lambda r: sign * float(np.mean([m[metric] for m in r.metrics])))


def shown_scores(result: dict[str, Any]) -> list[tuple[str, str]]:
    """(key, label) of the scores every candidate of a stored confirmation has (older ones lack the object scores)."""
    return [(key, SCORE_LABELS[key]) for key in METRICS if all(key in entry for entry in result["candidates"])]
