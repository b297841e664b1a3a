"""One rich progress bar for every long job: on stderr, and only when stderr is a terminal
(a live bar in a log file or a pipe leaves blank lines among the messages)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


class ProgressBar:
    """Handle of a running bar; every method is a no-op when the bar is disabled."""

    def __init__(self, progress: Any = None, task: Any = None) -> None:
        self._progress = progress
        self._task = task

    def advance(self, steps: float = 1) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, steps)

    def update(
        self,
        *,
        completed: float | None = None,
        total: float | None = None,
        description: str | None = None,
        detail: str | None = None,
    ) -> None:
        if self._progress is None:
            return
        fields: dict[str, Any] = {}
        if detail is not None:
            fields["detail"] = detail
        self._progress.update(self._task, completed=completed, total=total, description=description, **fields)


@contextlib.contextmanager
def progress_bar(description: str, total: float | None = None, enabled: bool = True, transient: bool = True) -> Iterator[ProgressBar]:
    """``with progress_bar("counting", total=n) as bar: ... bar.advance()``."""
    if not enabled:
        yield ProgressBar()
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    console = Console(stderr=True)
    if not console.is_terminal:
        yield ProgressBar()
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, transient=transient) as progress:
        yield ProgressBar(progress, progress.add_task(description, total=total, detail=""))
