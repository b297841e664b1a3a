"""One HTML page of plotly figures for an experiment, with a PNG of each beside it when kaleido imports.

Imported by the experiment scripts beside it (``python experiments/NAME.py`` puts this folder on
``sys.path``); not part of the package.
"""

from __future__ import annotations

import html
import importlib.util
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from skipnas.fileio import atomic_open, atomic_path


def write_figure_page(path: Path, figures: Sequence[Any], title: str, comment: str = "", inline_js: bool = False) -> list[Path]:
    """``figures`` on one page under ``title`` and ``comment`` (the run's settings), written
    atomically; plotly's library inline (``inline_js``, for offline reading) or from its CDN. Then a
    PNG per figure (``NAME.png``, or ``NAME-1.png``, ... for several) when kaleido can draw them: a
    kaleido without its browser loses neither the page nor the runs. The paths written."""
    written = [path]
    divs = [
        figure.to_html(full_html=False, include_plotlyjs=(True if inline_js else "cdn") if i == 0 else False, config={"displaylogo": False})
        for i, figure in enumerate(figures)
    ]
    stamp = f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {comment}"
    with atomic_open(path) as handle:
        handle.write(f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{html.escape(title)}</title>\n</head>\n<body>\n')
        handle.write(f"<h1>{html.escape(title)}</h1>\n<p>{html.escape(stamp)}</p>\n")
        handle.write("\n".join(divs))
        handle.write("\n</body>\n</html>\n")
    if importlib.util.find_spec("kaleido") is None:
        print("kaleido is not installed: HTML only, no PNG")
        return written
    for i, figure in enumerate(figures):
        png = path.with_suffix(".png") if len(figures) == 1 else path.with_name(f"{path.stem}-{i + 1}.png")
        try:
            with atomic_path(png) as tmp:
                figure.write_image(str(tmp), format="png", width=1400, height=int(figure.layout.height or 800), scale=1)
            written.append(png)
        except Exception as exc:  # noqa: BLE001 - kaleido fails in many ways without its browser
            print(f"no PNG ({exc.__class__.__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''})")
    return written
