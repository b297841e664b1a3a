"""Dice against predicted memory, with the Pareto front and the candidates over the budget."""

from __future__ import annotations

import html
import math
from typing import Any

import numpy as np
import optuna

from skipnas.study.report._trials import (
    BASELINE_SYMBOLS,
    FIGURE_TITLES,
    _budget_mib,
    _completed,
    _dice_and_memory,
    _go,
    _layout,
    _note_only,
    _stopped_trials,
    _topology,
)


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
