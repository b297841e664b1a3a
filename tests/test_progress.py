"""Progress bars and their listeners (skipnas/progress.py)."""

from __future__ import annotations

import threading

from skipnas.progress import progress_bar, report_progress_to


def test_a_listener_hears_every_bar_in_its_context_even_a_hidden_one() -> None:
    heard: list[tuple[str, float, float | None]] = []
    with report_progress_to(lambda *event: heard.append(event)), progress_bar("tiles", total=3, enabled=False) as bar:
        bar.advance()
        bar.advance(2)
        bar.update(description="stitching")
    assert heard == [("tiles", 0, 3), ("tiles", 1, 3), ("tiles", 3, 3), ("stitching", 3, 3)]
    with progress_bar("after", total=1, enabled=False) as bar:
        bar.advance()
    assert len(heard) == 4  # outside the context nobody listens


def test_a_listener_in_one_thread_hears_nothing_of_another() -> None:
    heard: list[tuple[str, float, float | None]] = []

    def elsewhere() -> None:
        with progress_bar("other thread", total=1, enabled=False) as bar:
            bar.advance()

    with report_progress_to(lambda *event: heard.append(event)):
        thread = threading.Thread(target=elsewhere)
        thread.start()
        thread.join()
    assert heard == []
