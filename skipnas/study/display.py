"""The live view of a running search: overall progress, the current trial, the best trials so far."""

from __future__ import annotations

import time
from typing import Any

import optuna

from skipnas.study.objective import TrialProgress

BEST_ROWS = 8


def trial_rows(study: optuna.Study, limit: int | None = BEST_ROWS) -> list[dict[str, Any]]:
    """Completed trials best first (by the first objective), baselines always included."""
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    maximize = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    ranked = sorted(complete, key=lambda t: t.values[0], reverse=maximize)
    chosen = ranked[:limit] if limit is not None else ranked
    chosen += [t for t in ranked[len(chosen):] if "baseline" in t.user_attrs]
    rows = []
    for trial in chosen:
        attrs = trial.user_attrs
        rows.append(
            {
                "rank": ranked.index(trial) + 1,
                "trial": trial.number,
                "topology": attrs.get("topology", "?"),
                "baseline": attrs.get("baseline", ""),
                "width": (attrs.get("genome") or {}).get("base_width"),
                "value": trial.values[0],
                "dice": attrs.get("dice"),
                "count_mae": attrs.get("count_mae"),
                "memory_mib": attrs.get("predicted_peak_mib"),
                "duplicate_of": attrs.get("duplicate_of"),
            }
        )
    return rows


class SearchDisplay:
    """A rich Live panel fed by the objective's progress calls and the study's trial callbacks."""

    def __init__(self, total: int, study_name: str, enabled: bool = True) -> None:
        self.total = total
        self.study_name = study_name
        self.enabled = enabled
        self.current = TrialProgress()
        self.done = 0
        self.counts: dict[str, int] = {}
        self.rows: list[dict[str, Any]] = []
        self.objective_label = "Dice"
        self._live: Any = None
        self._started = time.perf_counter()

    def __enter__(self) -> SearchDisplay:
        if self.enabled:
            from rich.console import Console
            from rich.live import Live

            console = Console(stderr=True)
            if console.is_terminal:
                self._live = Live(self._render(), console=console, refresh_per_second=4, transient=False)
                self._live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            self._live.update(self._render())
            self._live.__exit__(*exc)

    def on_progress(self, state: TrialProgress) -> None:
        self.current = state
        self._refresh()

    def on_study(self, study: optuna.Study) -> None:
        """Refresh from the study (after each trial, or every few seconds while workers run)."""
        from skipnas.study.trials import counted_trials

        self.study_name = study.study_name
        self.done = counted_trials(study)
        self.counts = {}
        for t in study.get_trials(deepcopy=False):
            self.counts[t.state.name.lower()] = self.counts.get(t.state.name.lower(), 0) + 1
        self.rows = trial_rows(study)
        self.objective_label = "Dice" if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else "count MAE"
        self._refresh()

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.update(self._render())

    def _render(self) -> Any:
        from rich.console import Group
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        elapsed = time.perf_counter() - self._started
        states = ", ".join(f"{n} {s}" for s, n in sorted(self.counts.items()) if s != "waiting")
        header = Table.grid(padding=(0, 1))
        header.add_row(
            Text(f"study {self.study_name}" if self.study_name else "study", style="bold"),
            ProgressBar(total=self.total, completed=self.done, width=40),
            Text(f"{self.done}/{self.total} trials" + (f" ({states})" if states else "") + f", {elapsed / 60:.1f} min"),
        )
        current = self.current
        now = Text("")
        if current.number is not None and current.stage != "done":
            dice = f", val Dice {current.val_dice:.3f}" if current.val_dice is not None else ""
            epoch = f" epoch {current.epoch}" if current.epoch else ""
            now = Text(f"running trial {current.number}: {current.topology}, {current.stage}{epoch}{dice}")
        table = Table(title="best trials", title_justify="left")
        columns = ("#", "trial", "topology", "width", "Dice", "count MAE", "MiB")
        for column in columns:
            bold = column == self.objective_label
            table.add_column(column, justify="left" if column == "topology" else "right", style="bold" if bold else None)
        for row in self.rows:
            name = row["topology"] + (f" [cyan](baseline {row['baseline']})[/]" if row["baseline"] else "")
            if row["duplicate_of"] is not None:
                name += f" [dim](= trial {row['duplicate_of']})[/]"
            table.add_row(
                str(row["rank"]), str(row["trial"]), name, str(row["width"] or ""),
                _fmt(row["dice"]), _fmt(row["count_mae"]), _fmt(row["memory_mib"], 1),
            )
        return Group(header, now, table)


def _fmt(value: Any, digits: int = 3) -> str:
    return "" if value is None else f"{value:.{digits}f}"
