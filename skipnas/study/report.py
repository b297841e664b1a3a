"""``skipnas report``: one self-contained HTML page about a search study.

Split like Optuna's plotting modules: each figure has an ``_<figure>_info(study)`` function that
reads the study into plain data (dicts, lists, numpy arrays; tested without plotly) and a
``plot_<figure>(info)`` renderer returning a ``plotly.graph_objects.Figure``. plotly is imported
only inside the renderers so ``skipnas --help`` stays fast. :func:`write_report` joins a short
header (study, trial counts, best trial, baselines against it) and the figures into one HTML file
with the plotly library inlined, so the page opens offline.
"""

from __future__ import annotations

import datetime
import html
import math
import re
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from skipnas.errors import SkipnasError
from skipnas.fileio import atomic_open
from skipnas.genome import NAMED_TOPOLOGIES

SKIP_PARAM = re.compile(r"^skip_e(\d+)_d(\d+)$")
BASELINE_SYMBOLS = {"standard": "diamond", "semi-dense": "square", "reverse": "triangle-up", "dense": "star", "none": "cross"}
OBJECTIVE_LABELS = {"dice": "Dice", "count_mae": "count MAE", "dice+memory": "Dice"}
TOP_FRACTION = 0.25  # share of completed trials counted as "top" for the link frequencies
MIN_TOP = 3
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


# reading trials ---------------------------------------------------------------------------------
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


# figure data ------------------------------------------------------------------------------------
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


def _pareto_mask(dice: np.ndarray, memory: np.ndarray) -> np.ndarray:
    """True where no other point has Dice >= and memory <=, one of them strictly."""
    at_least_as_good = (dice[None, :] >= dice[:, None]) & (memory[None, :] <= memory[:, None])
    strictly_better = (dice[None, :] > dice[:, None]) | (memory[None, :] < memory[:, None])
    return ~np.any(at_least_as_good & strictly_better, axis=1)


def _pareto_info(study: optuna.Study) -> dict[str, Any]:
    """Dice and predicted memory of each unique completed trial; the front maximises Dice, minimises memory."""
    points: list[dict[str, Any]] = []
    duplicates = 0
    for trial in _completed(study):
        if "duplicate_of" in trial.user_attrs:
            duplicates += 1  # same candidate, same point: drawn once
            continue
        dice, memory = _dice_and_memory(study, trial)
        if dice is None or memory is None or not (math.isfinite(dice) and math.isfinite(memory)):
            continue
        points.append(
            {
                "number": trial.number,
                "dice": dice,
                "memory_mib": memory,
                "name": trial.user_attrs.get("baseline") or _topology(trial),
                "baseline": trial.user_attrs.get("baseline"),
            }
        )
    if points:
        mask = _pareto_mask(np.array([p["dice"] for p in points]), np.array([p["memory_mib"] for p in points]))
        for point, on_front in zip(points, mask):
            point["on_front"] = bool(on_front)
    front = [p["number"] for p in sorted((p for p in points if p["on_front"]), key=lambda p: (p["memory_mib"], -p["dice"]))]
    pruned, _ = _stopped_trials(study)
    infeasible = [row for row in pruned if row["infeasible"] and row["memory_mib"] is not None]
    return {
        "points": points,
        "front": front,
        "budget_mib": _budget_mib(study),
        "infeasible": infeasible,
        "duplicates_left_out": duplicates,
    }


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


def _importance_info(study: optuna.Study) -> dict[str, Any]:
    """Importance of each skip gene for the first objective (Optuna's default evaluator).

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
        # Optuna's default evaluator ranks low targets as good: negate a maximised Dice
        sign = -1.0 if _maximize(study) else 1.0
        target = lambda t: sign * t.values[0]  # noqa: E731
    scratch = _quiet_scratch_study(study, trials)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            importances = optuna.importance.get_param_importances(scratch, params=params, target=target)
        except (ValueError, RuntimeError) as exc:
            info["note"] = f"importance could not be computed: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__}"
            return info
    if any("will be equal" in str(w.message) for w in caught):
        info["note"] = f"too few completed trials ({len(trials)}) to tell the genes apart: Optuna reports equal importances"
    ordered = sorted(importances.items(), key=lambda item: (-item[1], params.index(item[0])))
    info["params"] = [name for name, _ in ordered]
    info["importances"] = [float(value) for _, value in ordered]
    return info


def _link_frequency_info(study: optuna.Study) -> dict[str, Any]:
    """How often each link is on among the top trials (top 25 %, at least 3) by the first objective."""
    ranked = [(t, m) for t in _ranked(study) if (m := _skip_matrix(t)) is not None]
    info: dict[str, Any] = {"objective": _objective_label(study), "completed": len(ranked), "trials": [], "depth": None, "frequency": None}
    if not ranked:
        return info
    count = min(len(ranked), max(MIN_TOP, math.ceil(TOP_FRACTION * len(ranked))))
    depth = ranked[0][1].shape[0]
    top = [(t, m) for t, m in ranked[:count] if m.shape == (depth, depth)]
    info["trials"] = [t.number for t, _ in top]
    info["depth"] = depth
    info["frequency"] = np.mean(np.stack([m for _, m in top]).astype(float), axis=0)
    return info


def _format_value(label: str, value: float | None) -> str:
    return f"{label} {value:.4g}" if value is not None else ""


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
    }


# rendering --------------------------------------------------------------------------------------
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


def plot_pareto(info: dict[str, Any]) -> Any:
    """Dice against predicted memory, the Pareto front as a line, baselines labelled, the budget as a vertical line."""
    go = _go()
    fig = go.Figure()
    title = FIGURE_TITLES["pareto"]
    points = info["points"]
    if not points and not info["infeasible"]:
        return _layout(_note_only(fig, "no completed trial has both a Dice and a predicted memory"), title)
    others = [p for p in points if not p["baseline"]]
    if others:
        fig.add_trace(
            go.Scatter(
                x=[p["memory_mib"] for p in others], y=[p["dice"] for p in others], mode="markers", name="trial",
                marker={"size": 9, "color": ["firebrick" if p["on_front"] else "steelblue" for p in others]},
                text=[f"trial {p['number']} ({p['name']})" for p in others],
                hovertemplate="%{text}<br>%{x:.1f} MiB, Dice %{y:.4f}<extra></extra>",
            )
        )
    for p in points:
        if p["baseline"]:
            fig.add_trace(
                go.Scatter(
                    x=[p["memory_mib"]], y=[p["dice"]], mode="markers+text", name=f"baseline {p['baseline']}",
                    text=[p["baseline"]], textposition="top center",
                    marker={"symbol": BASELINE_SYMBOLS.get(p["baseline"], "hexagon"), "size": 13, "line": {"width": 2, "color": "firebrick" if p["on_front"] else "white"}},
                    hovertemplate=f"trial {p['number']}: baseline {html.escape(p['baseline'])}<br>%{{x:.1f}} MiB, Dice %{{y:.4f}}<extra></extra>",
                )
            )
    by_number = {p["number"]: p for p in points}
    front = [by_number[n] for n in info["front"]]
    if front:
        fig.add_trace(
            go.Scatter(
                x=[p["memory_mib"] for p in front], y=[p["dice"] for p in front], mode="lines",
                name="Pareto front (max Dice, min memory)", line={"color": "firebrick", "shape": "hv", "dash": "dot"}, hoverinfo="skip",
            )
        )
    if info["infeasible"]:
        fig.add_trace(
            go.Scatter(
                x=[p["memory_mib"] for p in info["infeasible"]], y=[0.0] * len(info["infeasible"]), mode="markers",
                name="over budget (not trained), drawn at Dice 0", marker={"symbol": "x", "size": 10, "color": "grey"},
                text=[f"trial {p['number']} ({p['name']})" for p in info["infeasible"]],
                hovertemplate="%{text}<br>%{x:.1f} MiB predicted<extra></extra>",
            )
        )
    if info["budget_mib"] is not None:
        fig.add_vline(
            x=info["budget_mib"], line_dash="dash", line_color="grey",
            annotation_text=f"budget {info['budget_mib']:.0f} MiB", annotation_position="top left",
        )
    return _layout(fig, title, xaxis_title="predicted peak training memory (MiB)", yaxis_title="Dice")


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


def _level_labels(depth: int) -> tuple[list[str], list[str]]:
    return [f"d{j}" for j in range(depth)], [f"e{i}" for i in range(depth)]


def plot_link_frequency(info: dict[str, Any]) -> Any:
    """D x D heatmap: rows encoder i, columns decoder j, level 0 full resolution."""
    go = _go()
    fig = go.Figure()
    title = FIGURE_TITLES["link_frequency"]
    if info["frequency"] is None:
        return _layout(_note_only(fig, "no completed trial with a skip matrix yet"), title)
    columns, rows = _level_labels(info["depth"])
    fig.add_trace(
        go.Heatmap(
            z=np.asarray(info["frequency"]).tolist(), x=columns, y=rows, zmin=0.0, zmax=1.0, colorscale="Blues",
            texttemplate="%{z:.2f}", colorbar={"title": "share on"}, xgap=2, ygap=2,
            hovertemplate="encoder %{y} -> decoder %{x}: on in %{z:.0%} of the top trials<extra></extra>",
        )
    )
    subtitle = f"top {len(info['trials'])} of {info['completed']} completed trials by {info['objective']}"
    fig.update_yaxes(autorange="reversed", title="encoder level i (0 = full resolution)")
    fig.update_xaxes(title="decoder level j (0 = full resolution)", side="top")
    return _layout(fig, f"{title}: {subtitle}", width=520, height=480, margin={"t": 110})


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


# the page ---------------------------------------------------------------------------------------
_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1100px; color: #222; padding: 0 1em; }
h1 { margin-bottom: 0.2em; } .meta { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25em 0.7em; text-align: right; }
th:first-child, td:first-child, td.text { text-align: left; }
tr.best td { font-weight: 600; background: #eef4fb; }
section { margin-top: 2.2em; } .note { color: #666; } .empty { font-size: 1.2em; padding: 1em; background: #f6f6f6; }
"""


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.{digits}g}" if math.isfinite(value) else str(value)
    return html.escape(str(value))


def _fmt_count(value: float | None) -> str:
    if value is None:
        return ""
    for size, suffix in ((1e9, " G"), (1e6, " M"), (1e3, " k")):
        if abs(value) >= size:
            return f"{value / size:.3g}{suffix}"
    return f"{value:.0f}"


def _table(header: list[str] | None, rows: list[list[str]], row_classes: list[str] | None = None) -> str:
    """An HTML table; cells are HTML already (escape text before), ``header`` None for key-value tables."""
    head = "<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr></thead>" if header else ""
    body = []
    for index, row in enumerate(rows):
        css = f' class="{row_classes[index]}"' if row_classes and row_classes[index] else ""
        body.append(f"<tr{css}>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>")
    return f"<table>{head}<tbody>{''.join(body)}</tbody></table>"


def _header_html(summary: dict[str, Any], title: str) -> str:
    states = ", ".join(f"{count} {state}" for state, count in summary["states"].items()) or "none"
    objective = summary["objective"] or summary["label"]
    overview = [
        ["study", html.escape(summary["study"])],
        ["objective", f"{html.escape(str(objective))} ({', '.join(summary['directions'])})"],
        ["search space", _fmt(summary["space"])],
        ["data", _fmt(summary["data"])],
        ["trials", f"{summary['trials']} ({states})" + (f"; {summary['duplicates']} reused an earlier result" if summary["duplicates"] else "")],
        ["memory budget", f"{summary['budget_mib']:.0f} MiB" if summary["budget_mib"] is not None else "none recorded"],
    ]
    generated = datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    parts = [
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="meta">written by skipnas report on {html.escape(generated)}</p>',
        _table(None, [[html.escape(k), v] for k, v in overview]),
    ]
    best = summary["best"]
    if best is not None:
        genome = best.get("genome") or {}
        skips = "/".join("".join(str(g) for g in row) for row in genome.get("skips", []))
        lines = [
            ["trial", str(best["number"])],
            ["topology", _fmt(best["name"]) + (f" (skips {html.escape(skips)})" if skips else "")],
            [html.escape(summary["label"]), _fmt(best["value"])],
            ["Dice / precision / recall", " / ".join(_fmt(best[k]) for k in ("dice", "precision", "recall"))],
            ["count MAE", _fmt(best["count_mae"])],
            ["predicted peak memory", f"{best['memory_mib']:.1f} MiB" if best["memory_mib"] is not None else ""],
            ["parameters", _fmt_count(best["params"])],
            ["model folder", _fmt(best.get("model_dir"))],
        ]
        parts += ["<h2>Best trial</h2>", _table(None, [[html.escape(k), v] for k, v in lines])]
    rows = ([best] if best is not None else []) + [row for row in summary["baselines"] if best is None or row["number"] != best["number"]]
    if summary["baselines"]:
        # the objective value is Dice or count MAE, both columns already: show only its distance to the best
        header = ["trial", "topology", "state", f"{summary['label']} vs best", "Dice", "precision", "recall", "count MAE", "memory MiB", "params", "note"]
        is_best = [best is not None and r["number"] == best["number"] for r in rows]
        cells = [
            [
                str(r["number"]),
                ("best: " if top else "") + _fmt(r["name"]),
                r["state"],
                f"{r['delta']:+.4f}" if r["delta"] is not None and not top else "",
                _fmt(r["dice"]), _fmt(r["precision"]), _fmt(r["recall"]), _fmt(r["count_mae"]),
                f"{r['memory_mib']:.1f}" if r["memory_mib"] is not None else "",
                _fmt_count(r["params"]),
                f'<span class="note">{html.escape(r["note"])}</span>',
            ]
            for r, top in zip(rows, is_best)
        ]
        classes = ["best" if top else "" for top in is_best]
        parts += ["<h2>Baselines against the best trial</h2>", _table(header, cells, classes)]
    stopped = [("pruned", p) for p in summary["pruned"]] + [("failed", f) for f in summary["failed"]]
    if stopped:
        cells = [[str(row["number"]), _fmt(row["name"]), state, f'<span class="note">{html.escape(row["reason"])}</span>'] for state, row in stopped]
        parts += [
            f"<details><summary>{len(summary['pruned'])} pruned and {len(summary['failed'])} failed trial(s)</summary>",
            _table(["trial", "topology", "state", "reason"], cells),
            "</details>",
        ]
    return "\n".join(parts)


def _figures(study: optuna.Study) -> Iterator[tuple[str, str, Any]]:
    """(title, caption, figure) in page order, each figure built when it is reached."""
    yield FIGURE_TITLES["history"], "First objective value of each completed trial; the line is the best so far.", plot_history(_history_info(study))
    yield (
        FIGURE_TITLES["pareto"],
        "Dice (validation) against the cost model's predicted peak training memory; red points form the Pareto front.",
        plot_pareto(_pareto_info(study)),
    )
    yield FIGURE_TITLES["importance"], "Optuna's parameter importance of each link gene (duplicates left out).", plot_importance(_importance_info(study))
    yield (
        FIGURE_TITLES["link_frequency"],
        f"Share of the top trials (best {TOP_FRACTION:.0%}, at least {MIN_TOP}) in which each link is on.",
        plot_link_frequency(_link_frequency_info(study)),
    )
    yield FIGURE_TITLES["skip_matrices"], "A filled cell: encoder level i feeds decoder level j.", plot_skip_matrices(_skip_matrices_info(study))


def _page_parts(study: optuna.Study, title: str | None) -> Iterator[str]:
    summary = _summary_info(study)
    title = title or f"skipnas search report: {study.study_name}"
    yield f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n'
    yield _header_html(summary, title) + "\n"
    if summary["best"] is None:
        yield '<p class="empty">No completed trial yet: there is nothing to plot. Run or resume the search, then write the report again.</p>\n'
    else:
        first = True
        for fig_title, caption, figure in _figures(study):
            # the first figure carries the plotly library inline so the page works offline
            height = f"{figure.layout.height or 450}px"  # a percentage of an auto-height section would collapse
            div = figure.to_html(
                full_html=False, include_plotlyjs=first, default_height=height, config={"displaylogo": False, "responsive": True}
            )
            first = False
            yield f'<section>\n<h2>{html.escape(fig_title)}</h2>\n<p class="note">{html.escape(caption)}</p>\n{div}\n</section>\n'
    yield "</body>\n</html>\n"


def render_report(study: optuna.Study, title: str | None = None) -> str:
    """The report page as one HTML string."""
    return "".join(_page_parts(study, title))


def write_report(study: optuna.Study, out: Path, title: str | None = None) -> Path:
    """Write the report page to ``out`` atomically (a failure leaves any earlier file untouched)."""
    out = Path(out)
    if out.is_dir():
        raise SkipnasError(f"{out}: is a folder; give the report a file name, e.g. --out {out / 'report.html'}")
    try:
        with atomic_open(out, "w") as handle:
            for part in _page_parts(study, title):
                handle.write(part)
    except OSError as exc:
        raise SkipnasError(f"{out}: cannot write the report ({exc.strerror or exc.__class__.__name__}); choose another --out") from None
    return out
