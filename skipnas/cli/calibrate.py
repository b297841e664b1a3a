"""``skipnas calibrate``: choose a model folder's counting setting again on more or other labelled images."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from skipnas.cli._common import console, print_json, status_console
from skipnas.cli.train import add_device_arguments

# skipnas.counting.calibrate.SELECTIONS, kept here so that building the parser imports no numpy
SELECTION_RULES = ("stable", "mean", "objects", "balanced")
# the rows of the before / after table: metric key, label
COMPARED = (
    ("relative_count_error", "relative count error"),
    ("count_mae", "count MAE"),
    ("object_precision", "object precision"),
    ("object_recall", "object recall"),
    ("dice", "Dice"),
)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "calibrate",
        help="choose a model folder's counting setting again on more or other labelled images (no training)",
        description="Predict the labelled images of the given splits with a model folder and choose its counting "
        "setting (threshold, morphology, minimum area, splitting method) again on all of them, as training does on "
        "val. Use it when you have annotated more images than the val split holds, or images from another "
        "microscope. The weights are unchanged; postprocess.json and metrics.json are rewritten. The scores shown "
        "are selection scores (these images chose the setting): measure it with skipnas evaluate --split test.",
    )
    parser.add_argument("model_dir", type=Path, metavar="MODEL_DIR", help="folder written by skipnas train or export")
    parser.add_argument("--data", default="demo", metavar="DIR|demo", help="dataset folder (default: the embedded demo)")
    parser.add_argument(
        "--split", action="append", choices=("train", "val", "test"), default=None, dest="splits",
        help="split whose labelled images calibrate; repeat for several (--split val --split train). Train images "
        "were trained on, so the network predicts them better than new ones; test is refused (default val)",
    )
    parser.add_argument(
        "--selection", choices=SELECTION_RULES, default=None,
        help="the rule that chooses: stable (the count MAE over bootstrap resamples of the images), mean (the plain count "
        "MAE), objects (the fewest particles wrong per image, as matched to the true ones), balanced (the larger of the "
        "particles counted but not there and those missed, per image) (default: the rule the folder was trained with)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, metavar="MODEL_DIR",
        help="write the recalibrated folder here (default: replace the counting in MODEL_DIR itself)",
    )
    parser.add_argument("--overwrite", action="store_true", help="also write --out into a folder of other files, beside them")
    add_device_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=_calibrate)


def _calibrate(args: argparse.Namespace) -> int:
    from skipnas.counting.postprocess import describe
    from skipnas.recalibrate import check_calibration_splits, recalibrate_model_folder

    splits = check_calibration_splits(args.splits or ["val"])
    if not args.json:
        status_console().print(f"predicting the {' and '.join(splits)} images of {args.data} with {args.model_dir} ...")
    result = recalibrate_model_folder(
        args.model_dir, args.data, splits, out=args.out, device=args.device, overwrite=args.overwrite, selection=args.selection
    )
    if args.json:
        print_json(
            {
                "model_dir": str(result.model_dir), "data": result.data, "splits": list(result.splits), "images": result.images,
                "previous": describe(result.previous), "postprocess": describe(result.postprocess), "changed": result.changed,
                "before": result.before, "after": result.after, "calibration": result.record,
            }
        )
        return 0
    from rich.table import Table

    out = console()
    table = Table(title=f"{result.images} images of {' + '.join(result.splits)} (selection scores: they chose the new setting)")
    table.add_column("metric")
    table.add_column("before", justify="right")
    table.add_column("after", justify="right")
    for key, label in COMPARED:
        table.add_row(label, f"{result.before[key]:.3f}", f"{result.after[key]:.3f}")
    out.print(table)
    out.print(f"before: {describe(result.previous)}", soft_wrap=True)
    out.print(f"after:  {describe(result.postprocess)}" + ("" if result.changed else " (unchanged)"), soft_wrap=True)
    out.print(f"chosen by: {result.record['objective']}", soft_wrap=True)
    for key in ("caution", "note"):
        if key in result.record:
            out.print(f"[yellow]note: {result.record[key]}[/]", soft_wrap=True)
    out.print(f"model folder: {result.model_dir}; measure it with skipnas evaluate {result.model_dir} --data DIR --split test")
    return 0
