"""The optimisation history: each trial's value and the best so far, with pruned and failed trials marked."""

from __future__ import annotations

import html
import math
from typing import Any

import optuna

from skipnas.study.report._trials import (
    BASELINE_SYMBOLS,
    FIGURE_TITLES,
    _completed,
    _go,
    _layout,
    _maximize,
    _note_only,
    _objective_label,
    _stopped_trials,
    _topology,
)


def _history_info(study: optuna.Study) -> dict[str, Any]:
    """First objective value per completed trial, the best so far, and the trials without a value."""
    maximize = _maximize(study)
    numbers: list[int] = []
    values: list[float] = []
    best_so_far: list[float | None] = []
    kinds: list[str] = []
    names: list[str] = []
    duplicate_of: list[int | None] = []
    best: float | None = None
    for trial in _completed(study):
        value = float(trial.values[0])
        if math.isfinite(value):
            best = value if best is None else (max(best, value) if maximize else min(best, value))
        attrs = trial.user_attrs
        numbers.append(trial.number)
        values.append(value)
        best_so_far.append(best)
        duplicate_of.append(attrs.get("duplicate_of"))
        if "baseline" in attrs:
            kinds.append("baseline")
            names.append(str(attrs["baseline"]))
        elif "duplicate_of" in attrs:
            kinds.append("duplicate")
            names.append(f"{_topology(trial)} (= trial {attrs['duplicate_of']})")
        else:
            kinds.append("sampled")
            names.append(_topology(trial))
    pruned, failed = _stopped_trials(study)
    return {
        "objective": _objective_label(study),
        "direction": "maximize" if maximize else "minimize",
        "numbers": numbers,
        "values": values,
        "best_so_far": best_so_far,
        "kinds": kinds,
        "names": names,
        "duplicate_of": duplicate_of,
        "pruned": pruned,
        "failed": failed,
    }


def plot_history(info: dict[str, Any]) -> Any:
    """Objective value per trial, best-so-far step line, baselines by symbol, duplicates and pruned trials apart."""
    go = _go()
    fig = go.Figure()
    title = f"{FIGURE_TITLES['history']} ({info['objective']}, {info['direction']})"
    if not info["numbers"]:
        return _layout(_note_only(fig, "no completed trial yet"), title)
    rows = list(zip(info["numbers"], info["values"], info["kinds"], info["names"]))
    for kind, legend, symbol in (("sampled", "sampled trial", "circle"), ("duplicate", "duplicate (result reused)", "circle-open")):
        chosen = [r for r in rows if r[2] == kind]
        if chosen:
            fig.add_trace(
                go.Scatter(
                    x=[r[0] for r in chosen], y=[r[1] for r in chosen], mode="markers", name=legend,
                    marker={"symbol": symbol, "size": 9}, text=[r[3] for r in chosen],
                    hovertemplate="trial %{x}: %{text}<br>%{y:.4f}<extra></extra>",
                )
            )
    for number, value, kind, name in rows:
        if kind == "baseline":
            fig.add_trace(
                go.Scatter(
                    x=[number], y=[value], mode="markers+text", name=f"baseline {name}", text=[name],
                    textposition="top center", marker={"symbol": BASELINE_SYMBOLS.get(name, "hexagon"), "size": 13},
                    hovertemplate=f"trial %{{x}}: baseline {html.escape(name)}<br>%{{y:.4f}}<extra></extra>",
                )
            )
    fig.add_trace(
        go.Scatter(
            x=info["numbers"], y=info["best_so_far"], mode="lines", name="best so far",
            line={"shape": "hv", "color": "firebrick", "width": 2}, hoverinfo="skip",
        )
    )
    finite = [v for v in info["values"] if math.isfinite(v)]
    floor = min(finite) if finite else 0.0
    for infeasible, legend, symbol in ((True, "over memory budget (not trained)", "x"), (False, "pruned while training", "line-ns-open")):
        chosen = [p for p in info["pruned"] if p["infeasible"] is infeasible]
        if chosen:
            fig.add_trace(
                go.Scatter(
                    x=[p["number"] for p in chosen], y=[floor] * len(chosen), mode="markers",
                    name=f"{legend}: no value, drawn at the lowest value", marker={"symbol": symbol, "size": 10, "color": "grey"},
                    text=[f"{p['name']}: {p['reason']}" for p in chosen], hovertemplate="trial %{x}: %{text}<extra></extra>",
                )
            )
    return _layout(fig, title, xaxis_title="trial", yaxis_title=info["objective"])
