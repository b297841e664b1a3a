"""skipnas: search U-Net skip-connection topologies for segmenting and counting microplastics."""

from __future__ import annotations

from skipnas.errors import SkipnasError
from skipnas.genome import NAMED_TOPOLOGIES, Genome, load_genome

__version__ = "0.1.0"

__all__ = ["NAMED_TOPOLOGIES", "Genome", "SkipnasError", "__version__", "export", "load_genome", "search"]


def search(*args: object, **kwargs: object) -> object:
    """Run or resume a search; see :func:`skipnas.study.driver.search` (imports torch and optuna on first use)."""
    from skipnas.study.driver import search as run

    return run(*args, **kwargs)  # type: ignore[arg-type]


def export(storage: object, study: str, out: object, trial: int | None = None, metric: str = "dice") -> object:
    """Export a trial's model folder; ``storage`` is a URL, a journal path or an Optuna storage."""
    from skipnas.study.export import export as run
    import os

    from skipnas.study.storage import open_existing_storage

    if storage is None or isinstance(storage, (str, os.PathLike)):
        storage, _ = open_existing_storage(None if storage is None else os.fspath(storage))
    return run(storage, study, out, trial, metric)  # type: ignore[arg-type]
