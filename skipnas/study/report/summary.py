"""The report's header data: the study, its trial counts, the best trial and the baselines against it."""

from __future__ import annotations

from typing import Any

import optuna

from skipnas.genome import NAMED_TOPOLOGIES
from skipnas.study.report._trials import (
    _COMPLETE,
    _best_trial,
    _budget_mib,
    _number,
    _objective_label,
    _stopped_trials,
    _topology,
)
from skipnas.study.settings import BUDGET_ATTR, describe_budget


def _trial_row(trial: optuna.trial.FrozenTrial, best_value: float | None) -> dict[str, Any]:
    attrs = trial.user_attrs
    value = float(trial.values[0]) if trial.state == _COMPLETE else None
    return {
        "number": trial.number,
        "name": attrs.get("baseline") or _topology(trial),
        "state": trial.state.name.lower(),
        "value": value,
        "delta": value - best_value if value is not None and best_value is not None else None,
        "dice": _number(attrs.get("dice")),
        "precision": _number(attrs.get("precision")),
        "recall": _number(attrs.get("recall")),
        "count_mae": _number(attrs.get("count_mae")),
        "memory_mib": _number(attrs.get("predicted_peak_mib")),
        "params": _number(attrs.get("params")),
        "base_width": (attrs.get("genome") or {}).get("base_width"),
        "note": str(attrs.get("prune_reason") or attrs.get("fail_reason") or ""),
    }


def _summary_info(study: optuna.Study) -> dict[str, Any]:
    """The header: study, objective, trial counts by state, best trial, baselines against it."""
    trials = study.get_trials(deepcopy=False)
    states: dict[str, int] = {}
    for trial in trials:
        states[trial.state.name.lower()] = states.get(trial.state.name.lower(), 0) + 1
    best = _best_trial(study)
    best_value = float(best.values[0]) if best is not None else None
    order = {name: index for index, name in enumerate(NAMED_TOPOLOGIES)}
    baselines = sorted((t for t in trials if "baseline" in t.user_attrs), key=lambda t: (order.get(t.user_attrs["baseline"], len(order)), t.number))
    pruned, failed = _stopped_trials(study)
    best_row = None
    if best is not None:
        best_row = {**_trial_row(best, best_value), "genome": best.user_attrs.get("genome"), "model_dir": best.user_attrs.get("model_dir")}
    return {
        "study": study.study_name,
        "objective": study.user_attrs.get("objective"),
        "label": _objective_label(study),
        "directions": [d.name.lower() for d in study.directions],
        "space": study.user_attrs.get("space"),
        "data": study.user_attrs.get("data"),
        "trials": len(trials),
        "states": dict(sorted(states.items())),
        "duplicates": sum(1 for t in trials if t.state == _COMPLETE and "duplicate_of" in t.user_attrs),
        "best": best_row,
        "baselines": [_trial_row(t, best_value) for t in baselines],
        "pruned": pruned,
        "failed": failed,
        "budget_mib": _budget_mib(study),
        "training_budget": describe_budget(study.user_attrs.get(BUDGET_ATTR)),
        "confirmation": study.user_attrs.get("confirmation"),  # skipnas confirm's held-out result
    }
