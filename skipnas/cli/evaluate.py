"""``skipnas evaluate``: a model folder's metrics on a dataset split."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from skipnas.cli._common import console, print_json
from skipnas.cli.train import add_device_arguments, add_tta_argument, print_metrics


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="pixel and counting metrics of a model folder on a dataset split",
        description="Predict every labelled image of a split with a model folder and report Dice, precision, "
        "recall, IoU, count MAE/MSE, exact-count accuracy and object-level precision/recall.",
    )
    parser.add_argument("model_dir", type=Path, metavar="MODEL_DIR", help="folder written by skipnas train or export")
    parser.add_argument("--data", default="demo", metavar="DIR|demo", help="dataset folder (default: the embedded demo)")
    parser.add_argument("--split", choices=("train", "val", "test"), default="val", help="split to evaluate (default val)")
    add_device_arguments(parser)
    add_tta_argument(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=_evaluate)


def _evaluate(args: argparse.Namespace) -> int:
    from skipnas.evaluate import evaluate_model_folder

    metrics = evaluate_model_folder(args.model_dir, args.data, split=args.split, device=args.device, tta=args.tta)
    if args.json:
        print_json(metrics)
        return 0
    skipped = f", {metrics['unlabelled_images']} unlabelled skipped" if metrics["unlabelled_images"] else ""
    print_metrics(
        f"{metrics['topology']} on {args.split} ({metrics['images']} images{skipped}); counting: {metrics['postprocess']}",
        metrics,
    )
    console().print(counting_line(metrics["counting_method"], metrics.get("auxiliary"), metrics["tta"], metrics["calibrated_tta"]))
    return 0


def counting_line(method: str, auxiliary: str | None, tta: str = "none", calibrated_tta: str = "none") -> str:
    """Which method counted, whether it used the model's auxiliary head, and the test-time augmentation
    when there is one (with a warning when it is not the one the counting was calibrated with)."""
    from skipnas.counting.postprocess import AUXILIARY_METHODS

    if method in AUXILIARY_METHODS:
        line = f"counted by: {method}, from the model's auxiliary {auxiliary} head"
    else:
        line = f"counted by: {method}" + (f" (the model's auxiliary {auxiliary} head is not used)" if auxiliary else "")
    if tta != "none":
        line += f"; test-time augmentation: {tta}"
    if tta != calibrated_tta:
        line += f" (the counting was calibrated with test-time augmentation {calibrated_tta}: its thresholds may not fit)"
    return line
