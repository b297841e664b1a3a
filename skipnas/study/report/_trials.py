"""Reading a study's trials for the report: values, skip matrices, baselines, stopped trials; the figures' shared layout."""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import optuna

SKIP_PARAM = re.compile(r"^skip_e(\d+)_d(\d+)$")


BASELINE_SYMBOLS = {"standard": "diamond", "semi-dense": "square", "reverse": "triangle-up", "dense": "star", "none": "cross"}


OBJECTIVE_LABELS = {"dice": "Dice", "count_mae": "count MAE", "dice+memory": "Dice"}


FIGURE_TITLES = {
    "history": "Optimisation history",
    "pareto": "Dice against predicted memory",
    "importance": "Skip-gene importance",
    "link_frequency": "Link frequency among the top trials",
    "skip_matrices": "Skip matrices of the best trial and the baselines",
}


_COMPLETE = optuna.trial.TrialState.COMPLETE


_PRUNED = optuna.trial.TrialState.PRUNED


_FAIL = optuna.trial.TrialState.FAIL


def _maximize(study: optuna.Study) -> bool:
    return study.directions[0] == optuna.study.StudyDirection.MAXIMIZE


def _objective_label(study: optuna.Study) -> str:
    """What the first objective value means (``Dice``, ``count MAE``)."""
    objective = study.user_attrs.get("objective")
    if objective in OBJECTIVE_LABELS:
        return OBJECTIVE_LABELS[objective]
    return "objective value"


def _completed(study: optuna.Study, unique: bool = False) -> list[optuna.trial.FrozenTrial]:
    """Completed trials by number; ``unique`` drops those that reused an earlier trial's result."""
    trials = sorted(study.get_trials(deepcopy=False, states=(_COMPLETE,)), key=lambda t: t.number)
    return [t for t in trials if not unique or "duplicate_of" not in t.user_attrs]


def _ranked(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """Unique completed trials with a finite first value, best first (ties: the earlier trial)."""
    sign = -1.0 if _maximize(study) else 1.0
    trials = [t for t in _completed(study, unique=True) if math.isfinite(t.values[0])]
    return sorted(trials, key=lambda t: (sign * t.values[0], t.number))


def _best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    """Best by the first objective; for Dice + memory studies, the highest Dice."""
    ranked = _ranked(study)
    return ranked[0] if ranked else None


def _is_infeasible(trial: optuna.trial.FrozenTrial) -> bool:
    return trial.user_attrs.get("infeasible") is True or any(value > 0 for value in trial.constraints.values())


def _skip_matrix(trial: optuna.trial.FrozenTrial) -> np.ndarray | None:
    """The trial's skip matrix from its ``genome`` attribute, else from a complete set of link parameters."""
    genome = trial.user_attrs.get("genome")
    if isinstance(genome, dict) and isinstance(genome.get("skips"), list):
        return np.asarray(genome["skips"], dtype=int)
    links = {(int(m[1]), int(m[2])): int(value) for key, value in trial.params.items() if (m := SKIP_PARAM.match(key))}
    if not links:
        return None
    depth = max(max(i, j) for i, j in links) + 1
    if len(links) != depth * depth:
        return None  # links outside the space are fixed elsewhere: without the genome they are unknown
    matrix = np.zeros((depth, depth), dtype=int)
    for (i, j), value in links.items():
        matrix[i, j] = value
    return matrix


def _topology(trial: optuna.trial.FrozenTrial) -> str:
    return str(trial.user_attrs.get("topology") or (trial.user_attrs.get("genome") or {}).get("name") or "?")


def _skip_params(trials: list[optuna.trial.FrozenTrial]) -> list[str]:
    """Link parameter names that occur in ``trials``, in (encoder, decoder) order."""
    names = {key for t in trials for key in t.params if SKIP_PARAM.match(key)}
    return sorted(names, key=lambda key: tuple(int(part) for part in SKIP_PARAM.match(key).groups()))  # type: ignore[union-attr]


def _link_label(param: str) -> str:
    match = SKIP_PARAM.match(param)
    return f"e{match[1]} -> d{match[2]}" if match else param


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _dice_and_memory(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> tuple[float | None, float | None]:
    if len(study.directions) == 2:  # the Dice + memory objective stores both as values
        return float(trial.values[0]), float(trial.values[1])
    return _number(trial.user_attrs.get("dice")), _number(trial.user_attrs.get("predicted_peak_mib"))


def _budget_mib(study: optuna.Study) -> float | None:
    for trial in study.get_trials(deepcopy=False):
        budget = _number(trial.user_attrs.get("budget_mib"))
        if budget is not None:
            return budget
    return None


def _stopped_trials(study: optuna.Study) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(pruned, failed) trials with the reason each stopped."""
    pruned, failed = [], []
    for trial in sorted(study.get_trials(deepcopy=False, states=(_PRUNED, _FAIL)), key=lambda t: t.number):
        attrs = trial.user_attrs
        row = {
            "number": trial.number,
            "name": attrs.get("baseline") or _topology(trial),
            "memory_mib": _number(attrs.get("predicted_peak_mib")),
        }
        if trial.state == _PRUNED:
            infeasible = _is_infeasible(trial)
            reason = attrs.get("prune_reason") or ("over the memory budget" if infeasible else "pruned")
            pruned.append({**row, "infeasible": infeasible, "reason": str(reason)})
        else:
            failed.append({**row, "reason": str(attrs.get("fail_reason") or "failed (no reason recorded)")})
    return pruned, failed


def _format_value(label: str, value: float | None) -> str:
    return f"{label} {value:.4g}" if value is not None else ""


def _go() -> Any:
    import plotly.graph_objects as go

    return go


def _layout(fig: Any, title: str, **kwargs: Any) -> Any:
    settings: dict[str, Any] = {"template": "plotly_white", "margin": {"t": 60, "l": 60, "r": 30, "b": 50}}
    settings.update(kwargs)
    fig.update_layout(title=title, **settings)
    return fig


def _note_only(fig: Any, note: str) -> Any:
    fig.add_annotation(text=note, showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5, font={"size": 14})
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return fig


def _level_labels(depth: int) -> tuple[list[str], list[str]]:
    return [f"d{j}" for j in range(depth)], [f"e{i}" for i in range(depth)]
