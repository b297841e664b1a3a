"""``skipnas report``: one self-contained HTML page (plotly, works offline) about a search study."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from skipnas.cli._common import console, status_console
from skipnas.errors import SkipnasError

_NAMES_SHOWN = 20


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "report",
        help="write one HTML page about a search study: history, Pareto front, gene importance, skip matrices",
        description=(
            "Read a search study from its Optuna storage and write one self-contained HTML page (plotly inlined, "
            "opens offline): trial counts, the best trial and the baselines against it, the optimisation history, "
            "Dice against predicted memory with the Pareto front, skip-gene importance, how often each link is on "
            "among the top trials, and the skip matrices of the best trial and the baselines."
        ),
    )
    parser.add_argument(
        "--storage",
        default=None,
        metavar="URL",
        help="Optuna storage: an RDB URL (sqlite:///..., postgresql://...) or a journal file path "
        "(default: sqlite:///runs/skipnas.db, where skipnas search writes)",
    )
    parser.add_argument("--study", default=None, metavar="NAME", help="study name (default: the storage's only study)")
    parser.add_argument(
        "--out", type=Path, default=None, metavar="FILE", help="HTML file to write (default: runs/STUDY/report.html)"
    )
    parser.add_argument("--title", default=None, help="page title (default: 'skipnas search report: STUDY')")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing --out file that is not a report skipnas wrote"
    )
    parser.set_defaults(func=_report)


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:_NAMES_SHOWN])
    return shown + (f", ... ({len(names) - _NAMES_SHOWN} more)" if len(names) > _NAMES_SHOWN else "")


def choose_study(names: list[str], wanted: str | None, storage_label: str) -> str:
    """``wanted`` when the storage holds it; with no name, the storage's only study."""
    if not names:
        raise SkipnasError(f"{storage_label}: holds no study; run `skipnas search` first")
    if wanted is None:
        if len(names) == 1:
            return names[0]
        raise SkipnasError(f"{storage_label} holds {len(names)} studies; give --study NAME, one of: {_listing(sorted(names))}")
    if wanted not in names:
        raise SkipnasError(f"no study {wanted!r} in {storage_label}; give --study with one of: {_listing(sorted(names))}")
    return wanted


# the header line of every page skipnas.study.report.page writes; a file without it is not such a page
_REPORT_MARKER = b'<p class="meta">written by skipnas report on '
_MARKER_WITHIN = 1 << 20  # bytes: the header comes after the title and the style sheet


def check_report_target(out: Path, overwrite: bool) -> None:
    """Refuse to replace an existing file that is not a skipnas report, unless ``overwrite``."""
    if overwrite or not out.is_file():
        return  # a folder is refused by write_report
    try:
        with open(out, "rb") as handle:
            head = handle.read(_MARKER_WITHIN)
    except OSError as exc:
        raise SkipnasError(f"{out}: cannot read it ({exc.strerror or exc.__class__.__name__}); choose another --out") from None
    if _REPORT_MARKER not in head:
        raise SkipnasError(f"{out}: exists and is not a report written by skipnas; choose another --out, or add --overwrite to replace it")


def _report(args: argparse.Namespace) -> int:
    import optuna

    from skipnas.study.report import write_report
    from skipnas.study.settings import DEFAULT_RUNS_DIR
    from skipnas.study.storage import open_existing_storage

    storage, label = open_existing_storage(args.storage)
    study_name = choose_study(optuna.get_all_study_names(storage), args.study, label)
    study = optuna.load_study(study_name=study_name, storage=storage)
    out = args.out if args.out is not None else DEFAULT_RUNS_DIR / study_name / "report.html"
    check_report_target(out, args.overwrite)
    with status_console().status(f"writing the report of study {study_name}"):
        path = write_report(study, out, title=args.title)
    console().print(f"report of study {study_name} ({len(study.get_trials(deepcopy=False))} trials) written to {path}")
    return 0
