"""The skip matrices of the best trial and of each baseline, with their scores."""

from __future__ import annotations

import html
import math
from typing import Any

import optuna

from skipnas.genome import NAMED_TOPOLOGIES
from skipnas.study.report._trials import (
    _COMPLETE,
    _FAIL,
    _PRUNED,
    FIGURE_TITLES,
    _best_trial,
    _format_value,
    _go,
    _is_infeasible,
    _layout,
    _level_labels,
    _note_only,
    _objective_label,
    _skip_matrix,
    _topology,
)


def _skip_matrices_info(study: optuna.Study) -> list[dict[str, Any]]:
    """Panels: the best trial, then each baseline trial (named-topology order) with its value or state."""
    label = _objective_label(study)
    panels: list[dict[str, Any]] = []
    best = _best_trial(study)
    if best is not None and (matrix := _skip_matrix(best)) is not None:
        name = best.user_attrs.get("baseline") or _topology(best)
        panels.append(
            {
                "role": "best",
                "name": name,
                "number": best.number,
                "state": "complete",
                "value": float(best.values[0]),
                "matrix": matrix.tolist(),
                "title": f"best: trial {best.number} ({name}), {_format_value(label, best.values[0])}",
            }
        )
    order = {name: index for index, name in enumerate(NAMED_TOPOLOGIES)}
    shown = {best.number} if best is not None else set()
    seen_names: set[str] = set()
    baselines = [t for t in study.get_trials(deepcopy=False, states=(_COMPLETE, _PRUNED, _FAIL)) if "baseline" in t.user_attrs]
    # a failed baseline is run again: its panel shows the first attempt that did not fail, if any
    for trial in sorted(baselines, key=lambda t: (order.get(t.user_attrs["baseline"], len(order)), t.state == _FAIL, t.number)):
        name = str(trial.user_attrs["baseline"])
        if name in seen_names:
            continue  # one panel per baseline
        seen_names.add(name)
        if trial.number in shown or (matrix := _skip_matrix(trial)) is None:
            continue
        value = float(trial.values[0]) if trial.state == _COMPLETE else None
        if value is not None:
            outcome = _format_value(label, value)
        elif trial.state == _PRUNED:
            outcome = "over the memory budget" if _is_infeasible(trial) else "pruned"
        else:
            outcome = "failed"
        panels.append(
            {
                "role": "baseline",
                "name": name,
                "number": trial.number,
                "state": trial.state.name.lower(),
                "value": value,
                "matrix": matrix.tolist(),
                "title": f"{name} (trial {trial.number}), {outcome}",
            }
        )
    return panels


def plot_skip_matrices(info: list[dict[str, Any]]) -> Any:
    """One small heatmap per panel, three to a row."""
    go = _go()
    from plotly.subplots import make_subplots

    title = FIGURE_TITLES["skip_matrices"]
    if not info:
        return _layout(_note_only(go.Figure(), "no best trial or baseline with a skip matrix yet"), title)
    cols = min(3, len(info))
    rows = math.ceil(len(info) / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[p["title"] for p in info], horizontal_spacing=0.08, vertical_spacing=0.18)
    for index, panel in enumerate(info):
        depth = len(panel["matrix"])
        columns, levels = _level_labels(depth)
        fig.add_trace(
            go.Heatmap(
                z=panel["matrix"], x=columns, y=levels, zmin=0, zmax=1, showscale=False, xgap=2, ygap=2,
                colorscale=[[0.0, "#eeeeee"], [1.0, "#1f77b4" if panel["role"] == "best" else "#555555"]],
                hovertemplate=f"{html.escape(panel['name'])}: encoder %{{y}} -> decoder %{{x}} = %{{z}}<extra></extra>",
            ),
            row=index // cols + 1, col=index % cols + 1,
        )
    fig.update_yaxes(autorange="reversed")
    fig.update_annotations(font_size=12)
    return _layout(fig, f"{title} (rows: encoder i, columns: decoder j)", height=300 * rows + 80)
