"""How often each encoder-to-decoder link is on among the top trials."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import optuna

from skipnas.study.report._trials import (
    FIGURE_TITLES,
    _go,
    _layout,
    _level_labels,
    _note_only,
    _objective_label,
    _ranked,
    _skip_matrix,
)

TOP_FRACTION = 0.25  # share of completed trials counted as "top" for the link frequencies


MIN_TOP = 3


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
