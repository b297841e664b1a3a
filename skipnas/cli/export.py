"""``skipnas export``: the best (or a named) trial's model folder, ready for ``skipnas count``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from skipnas.cli._common import CALIBRATE_ON_CHOICES, console, print_json
from skipnas.cli.train import add_device_arguments


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "export",
        help="write the best (or a named) trial's model folder, ready for skipnas count",
        description="Copy a trial's model folder out of a study, with summary.json: its genome, metrics and the "
        "baselines' metrics. The trial: --trial N; else, after skipnas confirm, the confirmed winner, or the best "
        "baseline when no candidate was distinguishable from it; else the best by --metric on validation.",
    )
    parser.add_argument("--storage", default=None, metavar="URL", help="Optuna storage (default: sqlite:///runs/skipnas.db)")
    parser.add_argument("--study", required=True, metavar="NAME", help="study name (skipnas search prints it)")
    parser.add_argument("--trial", type=int, default=None, metavar="N", help="export this trial instead of the best")
    parser.add_argument(
        "--metric", choices=("dice", "count_mae"), default=None,
        help="export the best trial by this validation score, even after a confirmation (default: the confirmation's "
        "choice where there is one, else dice)",
    )
    parser.add_argument(
        "--out", type=Path, required=True, metavar="DIR",
        help="model folder to write: new, empty, or a model folder (only its model files are replaced)",
    )
    parser.add_argument(
        "--overwrite", action="store_true",
        help="also write into a folder of other files, beside them (they are kept; files named like the model's are refused)",
    )
    parser.add_argument(
        "--calibrate-on", choices=CALIBRATE_ON_CHOICES, default="auto",
        help="the labelled images of the study's dataset that choose the exported counting setting: val (as the trial "
        "chose it); val and train; auto: val and train when the trial's calibration saw fewer than 100 particles "
        "(default auto)",
    )
    add_device_arguments(parser)
    parser.add_argument("--onnx", action="store_true", help="also write model.onnx into the exported folder (skipnas onnx)")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    parser.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    from rich.table import Table

    from skipnas.study.export import export
    from skipnas.study.storage import open_existing_storage

    storage, _ = open_existing_storage(args.storage)
    result = export(
        storage, args.study, args.out, trial=args.trial, metric=args.metric, overwrite=args.overwrite,
        calibrate_on=args.calibrate_on, device=args.device,
    )
    onnx_path = None
    if args.onnx:
        from skipnas.onnxio import write_onnx

        onnx_path = write_onnx(result.out)
    if args.json:
        print_json({"out": str(result.out), "trial": result.trial, "baselines": result.baselines, "training_budget": result.training_budget,
                    "confirmation": result.confirmation, "chosen_by": result.chosen_by, "onnx": onnx_path and str(onnx_path),
                    "calibration": result.calibration})
        return 0
    table = Table()
    for column in ("trial", "topology", "Dice", "count MAE", "exact count", "MiB"):
        table.add_column(column, justify="left" if column == "topology" else "right")
    for row, label in [(result.trial, "exported"), *((b, "baseline") for b in result.baselines)]:
        table.add_row(
            str(row["trial"]), f"{row['topology']} ({label})", *(f"{row[k]:.3f}" if row.get(k) is not None else "" for k in ("dice", "count_mae", "exact_count_accuracy", "predicted_peak_mib"))
        )
    out = console()
    out.print(f"exported trial {result.trial['trial']} ({result.trial['topology']}) to {result.out}")
    out.print(table)
    out.print(f"chosen by: {result.chosen_by}", soft_wrap=True)
    out.print(f"every trial trained {result.training_budget}; the table's scores are validation scores, which chose the weights and the counting")
    if result.confirmation:
        out.print(f"held out (skipnas confirm, {result.confirmation.get('split', 'test')}): {result.confirmation['verdict']['text']}")
    else:
        out.print(
            f"[yellow]warning: no held-out confirmation: the choice rests on validation scores; skipnas confirm --study {args.study} "
            "scores the best candidates and the baselines on data that chose nothing[/]", soft_wrap=True,
        )
    if result.calibration:
        out.print(result.calibration, soft_wrap=True, markup=False)
    if onnx_path is not None:
        out.print(f"wrote {onnx_path}: skipnas count {result.out} IMAGES... --engine onnx")
    out.print(f"count with: skipnas count {result.out} IMAGES... --out counts")
    return 0
