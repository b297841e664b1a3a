"""Export a trial's model folder from a study, with how it compares with the baselines."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

from skipnas.counting.calibrate import FEW_PARTICLES
from skipnas.counting.postprocess import CALIBRATION_KEY
from skipnas.errors import SkipnasError
from skipnas.fileio import write_json_atomic
from skipnas.modelio import (
    METRICS_FILE,
    ONNX_FILE,
    POSTPROCESS_FILE,
    REQUIRED_FILES,
    SUMMARY_FILE,
    check_model_target,
    derive_model_folder,
    is_model_folder,
    load_model_folder,
)
from skipnas.recalibrate import recalibrate_model_folder
from skipnas.study.objective import METRIC_ATTRS
from skipnas.study.settings import BUDGET_ATTR, describe_budget
from skipnas.train.config import CALIBRATE_ON

EXPORT_METRICS = {"dice": True, "count_mae": False}  # metric -> higher is better


def load_study(storage: Any, study_name: str) -> optuna.Study:
    try:
        return optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        names = optuna.get_all_study_names(storage)
        known = ", ".join(names) if names else "none yet: run skipnas search first"
        raise SkipnasError(f"study {study_name!r} not found in this storage; studies there: {known}") from None


def _summary(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    attrs = trial.user_attrs
    return {
        "trial": trial.number,
        "topology": attrs.get("topology"),
        "baseline": attrs.get("baseline"),
        "genome_hash": attrs.get("genome_hash"),
        "predicted_peak_mib": attrs.get("predicted_peak_mib"),
        "params": attrs.get("params"),
        "steps": attrs.get("steps"),
        "train_seconds": attrs.get("train_seconds"),
        **{name: attrs[name] for name in METRIC_ATTRS if name in attrs},
    }


def choose_trial(study: optuna.Study, trial_number: int | None, metric: str) -> optuna.trial.FrozenTrial:
    """The named trial, else the completed trial best on ``metric`` that has a model folder."""
    if metric not in EXPORT_METRICS:
        raise SkipnasError(f"--metric must be one of {', '.join(EXPORT_METRICS)}, got {metric!r}")
    trials = study.get_trials(deepcopy=False)
    if trial_number is not None:
        matches = [t for t in trials if t.number == trial_number]
        if not matches:
            raise SkipnasError(f"trial {trial_number} not found in study {study.study_name!r} ({len(trials)} trials)")
        chosen = matches[0]
        if chosen.state != optuna.trial.TrialState.COMPLETE:
            raise SkipnasError(f"trial {trial_number} is {chosen.state.name.lower()}, not complete; choose a completed trial")
        return chosen
    candidates = [
        t for t in trials if t.state == optuna.trial.TrialState.COMPLETE and metric in t.user_attrs and t.user_attrs.get("model_dir")
    ]
    if not candidates:
        raise SkipnasError(f"study {study.study_name!r} has no completed trial with a model folder yet; run skipnas search")
    higher = EXPORT_METRICS[metric]
    return max(candidates, key=lambda t: t.user_attrs[metric] if higher else -t.user_attrs[metric])


def confirmed_trial(study: optuna.Study) -> tuple[int, str] | None:
    """The trial a stored confirmation chose and why: the candidate it found better, or the best
    baseline when nothing was distinguishable from it (or the baseline won); None without one."""
    confirmation = study.user_attrs.get("confirmation") or {}
    verdict = confirmation.get("verdict") or {}
    if verdict.get("winner") is not None:
        return int(verdict["winner"]), f"held-out confirmation: {verdict['text']}"
    baseline = verdict.get("baseline")
    trial = next((c["trial"] for c in confirmation.get("candidates", []) if baseline and c.get("baseline") == baseline), None)
    if trial is None:
        return None
    return int(trial), f"held-out confirmation: {verdict['text']}; so the {baseline} baseline"


@dataclass
class ExportResult:
    out: Path
    trial: dict[str, Any]
    baselines: list[dict[str, Any]]
    training_budget: str = ""  # e.g. "3000 steps per trial": what every trial of the study trained for
    confirmation: dict[str, Any] | None = None  # skipnas confirm's result, if it was run
    chosen_by: str = ""  # why this trial: the held-out confirmation, a validation (selection) score, or --trial
    calibration: str | None = None  # what became of the trial's counting setting, when not kept as the trial chose it


def calibrate_exported(folder: Path, data: str | None, calibrate_on: str, device: str = "auto") -> str | None:
    """Choose the exported ``folder``'s counting again on ``data``'s val and train images when
    ``calibrate_on`` is ``val+train``, or ``auto`` and the trial's calibration saw fewer than
    ``FEW_PARTICLES`` particles (a search trial's counting is chosen on val alone; ``skipnas train``
    applies the same rule itself). A line saying what happened; None when the setting stays.
    Under ``auto`` a dataset that cannot be read leaves the trial's setting, and the line says so."""
    if calibrate_on == "val":
        return None
    record = json.loads((folder / POSTPROCESS_FILE).read_text(encoding="utf-8")).get(CALIBRATION_KEY) or {}
    particles = record.get("particles")
    few = isinstance(particles, int) and particles < FEW_PARTICLES and "calibrated_on" not in record
    if calibrate_on == "auto" and not few:
        return None
    why = f"the trial's calibration saw {particles} particles, fewer than {FEW_PARTICLES}" if few else "asked for"
    try:
        if not data:
            raise SkipnasError("the study does not name its dataset")
        result = recalibrate_model_folder(folder, data, ("val", "train"), device=device)
    except SkipnasError as exc:
        if calibrate_on == "val+train":
            raise
        return (f"counting kept as the trial chose it on {particles} particles ({exc}); choose it again with "
                f"skipnas calibrate {folder} --data DIR --split val --split train")
    return f"counting chosen again on val and train ({result.images} images, {result.record['particles']} particles; {why})"


def export(
    storage: Any, study_name: str, out: str | Path, trial: int | None = None, metric: str | None = None, overwrite: bool = False,
    calibrate_on: str = "auto", device: str = "auto",
) -> ExportResult:
    """Copy the chosen trial's model folder to ``out`` (atomically) and add ``summary.json``; then,
    by ``calibrate_on``, choose its counting again on the study's val and train images
    (:func:`calibrate_exported`).

    The trial is ``trial`` when given; else, when ``metric`` is None and the study holds a
    confirmation, the one it chose (:func:`confirmed_trial`); else the best on ``metric`` (default
    dice), a validation score. Only the model folder's files are copied and replaced;
    ``overwrite`` also writes them into a folder of other files (see
    :func:`skipnas.modelio.check_model_target`).
    """
    if calibrate_on not in CALIBRATE_ON:
        raise SkipnasError(f"--calibrate-on must be one of {', '.join(CALIBRATE_ON)}, got {calibrate_on!r}")
    study = load_study(storage, study_name)
    confirmed = confirmed_trial(study) if trial is None and metric is None else None
    if trial is not None:
        chosen_by = f"trial {trial}, as asked"
    elif confirmed is not None:
        trial, chosen_by = confirmed
    else:
        metric = metric or "dice"
        chosen_by = f"the best validation {metric} (a selection score: the same images chose its weights and counting)"
    chosen = choose_trial(study, trial, metric or "dice")
    source = Path(chosen.user_attrs.get("model_dir", ""))
    if not chosen.user_attrs.get("model_dir") or not is_model_folder(source):
        raise SkipnasError(
            f"trial {chosen.number}'s model folder {source} is missing (kept only the best --keep-models?); "
            "export another trial with --trial N"
        )
    load_model_folder(source)  # refuse to export a broken folder
    target = check_model_target(out, overwrite)
    baselines = [
        _summary(t)
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if "baseline" in t.user_attrs
    ]
    summary = {
        "study": study.study_name,
        "chosen_by": chosen_by,
        "trial": _summary(chosen),
        "genome": chosen.user_attrs.get("genome"),
        "baselines": baselines,
        "training_budget": describe_budget(study.user_attrs.get(BUDGET_ATTR)),
        "confirmation": study.user_attrs.get("confirmation"),  # held-out scores from skipnas confirm, if run
    }
    # the model's files only: anything else in the trial's folder is not the model
    derive_model_folder(source, target, (*REQUIRED_FILES, METRICS_FILE, ONNX_FILE),
                        lambda staging: write_json_atomic(staging / SUMMARY_FILE, summary), overwrite)
    calibration = calibrate_exported(target, study.user_attrs.get("data"), calibrate_on, device)
    return ExportResult(target, summary["trial"], baselines, summary["training_budget"], summary["confirmation"], chosen_by, calibration)
