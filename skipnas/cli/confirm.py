"""``skipnas confirm``: the best candidates and the baselines trained again with several seeds, scored on held-out data."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from skipnas.cli._common import console, print_json, status_console
from skipnas.study.settings import DEFAULT_RUNS_DIR


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "confirm",
        help="train the study's top candidates and the baselines again with several seeds and score them on test",
        description="A search ranks on validation scores, which also chose each trial's weights and counting. "
        "This trains the top K distinct candidates and the standard, semi-dense and reverse baselines S times "
        "each (seeds 0..S-1, the study's budget and settings), scores them on the test split (a dataset without "
        "test masks: K-fold cross-validation over train and val), and compares the best candidate with the best "
        "baseline image by image: a verdict, stored in the study.",
    )
    parser.add_argument("--study", required=True, metavar="NAME", help="study name (skipnas search prints it)")
    parser.add_argument("--storage", default=None, metavar="URL", help="Optuna storage (default: sqlite:///runs/skipnas.db)")
    parser.add_argument("--top", type=int, default=3, metavar="K", help="distinct best candidates to train again (default 3)")
    parser.add_argument("--seeds", type=int, default=3, metavar="S", help="runs per candidate (default 3)")
    parser.add_argument(
        "--folds", type=int, default=3, metavar="K",
        help="without labelled test images: K-fold cross-validation over the labelled train and val images, each fold "
        "held out once (val the next fold, train the rest), K times the training (default 3)",
    )
    parser.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto", help="where to train (default auto)")
    parser.add_argument("--runs-dir", type=Path, default=DEFAULT_RUNS_DIR, metavar="DIR", help="the model folders go to DIR/STUDY/confirm/ (default runs/)")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")
    parser.set_defaults(func=_confirm)


def print_confirmation(result: dict[str, Any]) -> None:
    from rich.table import Table

    from skipnas.study.confirm import shown_scores

    table = Table(title=f"held out ({result['split']}), {result['seeds']} seed(s) each: mean [95 % interval]")
    scores = shown_scores(result)
    for column in ("trial", "topology", *(label for _, label in scores)):
        table.add_column(column, justify="left" if column == "topology" else "right")
    for entry in result["candidates"]:
        name = entry["topology"] + (f" (baseline {entry['baseline']})" if entry["baseline"] else "")
        cells = [f"{entry[k]['mean']:.3f} [{entry[k]['low']:.3f}, {entry[k]['high']:.3f}]" for k, _ in scores]
        table.add_row(str(entry["trial"]), name, *cells)
    out = console()
    out.print(table)
    out.print(result["verdict"]["text"])


def _confirm(args: argparse.Namespace) -> int:
    from skipnas.study.confirm import confirm
    from skipnas.study.export import load_study
    from skipnas.study.storage import open_existing_storage

    storage, _ = open_existing_storage(args.storage)
    study = load_study(storage, args.study)
    notes = status_console()

    def on_run(candidate: Any, seed: int, metrics: dict[str, float]) -> None:
        notes.print(f"trial {candidate.trial} ({candidate.topology}), seed {seed}: held-out Dice {metrics['dice']:.3f}, "
                    f"count MAE {metrics['count_mae']:.2f}, object precision {metrics['object_precision']:.2f}, "
                    f"recall {metrics['object_recall']:.2f}")

    result = confirm(study, top=args.top, seeds=args.seeds, device=args.device, runs_dir=args.runs_dir, on_run=on_run, folds=args.folds)
    if args.json:
        print_json(result)
    else:
        print_confirmation(result)
    return 0
