"""Each skip gene's importance for the objective (Optuna's default evaluator, PED-ANOVA since Optuna 5, on the completed trials)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import optuna

from skipnas.study.report._trials import (
    FIGURE_TITLES,
    _completed,
    _go,
    _layout,
    _link_label,
    _maximize,
    _note_only,
    _objective_label,
    _skip_params,
)


def _quiet_scratch_study(study: optuna.Study, trials: list[optuna.trial.FrozenTrial]) -> optuna.Study:
    """An in-memory copy holding only ``trials`` (Optuna would log its creation at INFO level)."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        scratch = optuna.create_study(directions=study.directions)
    finally:
        optuna.logging.set_verbosity(verbosity)
    scratch.add_trials(trials)
    return scratch


def _importance_info(study: optuna.Study, evaluator: optuna.importance.BaseImportanceEvaluator | None = None) -> dict[str, Any]:
    """Importance of each skip gene for the first objective, by ``evaluator`` (None: Optuna's default).

    Duplicates are left out: a reused result would count the same candidate twice.
    """
    trials = [t for t in _completed(study, unique=True) if all(math.isfinite(v) for v in t.values)]
    params = _skip_params(trials)
    info: dict[str, Any] = {"objective": _objective_label(study), "params": [], "importances": [], "trials": len(trials), "note": None}
    if not params:
        info["note"] = "no completed trial has skip-gene parameters"
        return info
    varying = [p for p in params if len({t.params[p] for t in trials if p in t.params}) >= 2]
    if len(trials) < 2 or not varying:
        info["note"] = (
            f"importance needs at least 2 completed trials whose skip genes differ; "
            f"this study has {len(trials)} unique completed trial(s)"
        )
        return info
    target: Callable[[optuna.trial.FrozenTrial], float] | None = None
    if len(study.directions) > 1:
        # a target function is read as minimised: negate a maximised Dice
        sign = -1.0 if _maximize(study) else 1.0
        target = lambda t: sign * t.values[0]  # noqa: E731
    scratch = _quiet_scratch_study(study, trials)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            importances = optuna.importance.get_param_importances(scratch, evaluator=evaluator, params=params, target=target)
        except (ValueError, RuntimeError) as exc:
            info["note"] = f"importance could not be computed: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__}"
            return info
    if any("will be equal" in str(w.message) for w in caught):
        info["note"] = f"too few completed trials ({len(trials)}) to tell the genes apart: Optuna reports equal importances"
    ordered = sorted(importances.items(), key=lambda item: (-item[1], params.index(item[0])))
    info["params"] = [name for name, _ in ordered]
    info["importances"] = [float(value) for _, value in ordered]
    return info


def plot_importance(info: dict[str, Any]) -> Any:
    """Horizontal bars, the most important gene on top."""
    go = _go()
    fig = go.Figure()
    title = f"{FIGURE_TITLES['importance']} (for {info['objective']})"
    if not info["params"]:
        return _layout(_note_only(fig, info["note"] or "no importance to show"), title)
    fig.add_trace(
        go.Bar(
            x=info["importances"][::-1], y=[_link_label(p) for p in info["params"]][::-1], orientation="h",
            text=[f"{v:.2f}" for v in info["importances"]][::-1], textposition="auto",
            customdata=info["params"][::-1], hovertemplate="%{customdata}: %{x:.3f}<extra></extra>", marker={"color": "steelblue"},
        )
    )
    if info["note"]:
        fig.add_annotation(text=info["note"], showarrow=False, xref="paper", yref="paper", x=0.5, y=1.06, font={"color": "grey"})
    height = max(300, 24 * len(info["params"]) + 120)
    return _layout(fig, title, xaxis_title="importance (normalised: sums to 1)", yaxis_title="link (encoder -> decoder)", height=height)
