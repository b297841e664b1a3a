"""One rich progress bar for every long job: on stderr, and only when stderr is a terminal
(a live bar in a log file or a pipe leaves blank lines among the messages). A listener set with
:func:`report_progress_to` (a web page, say) hears every bar opened in its context, shown or not."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from typing import Any

ProgressListener = Callable[[str, float, "float | None"], None]  # (description, completed, total)
_listener: contextvars.ContextVar[ProgressListener | None] = contextvars.ContextVar("skipnas_progress_listener", default=None)


@contextlib.contextmanager
def report_progress_to(listener: ProgressListener) -> Iterator[None]:
    """Within this context (this thread), every progress bar also reports to ``listener``."""
    token = _listener.set(listener)
    try:
        yield
    finally:
        _listener.reset(token)


class ProgressBar:
    """Handle of a running bar; every method is a no-op when the bar is disabled and nobody listens."""

    def __init__(self, progress: Any = None, task: Any = None, description: str = "", total: float | None = None) -> None:
        self._progress = progress
        self._task = task
        self._listener = _listener.get()
        self._description, self._completed, self._total = description, 0.0, total
        self._tell()

    def _tell(self) -> None:
        if self._listener is not None:
            self._listener(self._description, self._completed, self._total)

    def advance(self, steps: float = 1) -> None:
        self._completed += steps
        self._tell()
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
        if completed is not None or total is not None or description is not None:
            self._completed = self._completed if completed is None else completed
            self._total = self._total if total is None else total
            self._description = self._description if description is None else description
            self._tell()
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
        yield ProgressBar(description=description, total=total)
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    console = Console(stderr=True)
    if not console.is_terminal:
        yield ProgressBar(description=description, total=total)
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
        yield ProgressBar(progress, progress.add_task(description, total=total, detail=""), description, total)
