"""Where skipnas keeps things it can regenerate (demo dataset, dataset statistics)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$SKIPNAS_CACHE_DIR``, else ``$XDG_CACHE_HOME/skipnas``, else ``~/.cache/skipnas``."""
    explicit = os.environ.get("SKIPNAS_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "skipnas"


def repo_root() -> Path:
    """The source tree holding ``search_spaces/`` and ``experiments/`` (an editable install)."""
    return Path(__file__).resolve().parents[1]
