"""``skipnas baseline-count``: the classical (no network) counting baseline's metrics on a split."""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from skipnas.cli._common import console, print_json, status_console

_SUMMARY_ROWS: tuple[tuple[str, str], ...] = (
    ("images", "images scored"),
    ("dice", "pixel Dice"),
    ("precision", "pixel precision"),
    ("recall", "pixel recall"),
    ("iou", "pixel IoU"),
    ("count_mae", "count MAE"),
    ("count_mse", "count MSE"),
    ("count_bias", "count bias (pred - true)"),
    ("exact_count_accuracy", "images counted exactly"),
    ("relative_count_error", "relative count error"),
    ("object_precision", "object precision"),
    ("object_recall", "object recall"),
    ("object_f1", "object F1"),
)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "baseline-count",
        help="count particles with a classical threshold baseline (no network) and score it",
        description=(
            "Threshold each image (adaptive local mean or Otsu), apply the same post-processing as for a network "
            "(calibrated as for a network: on the validation split, and the training split too when it holds few particles), count the particles and print pixel, count and object metrics "
            "on a split. Images without a mask are skipped and reported."
        ),
    )
    parser.add_argument(
        "--data", default="demo", metavar="DIR", help="dataset folder, or 'demo' for the embedded demo data (default)"
    )
    parser.add_argument("--split", default="test", metavar="NAME", help="split to score (default test)")
    parser.add_argument(
        "--calibrate-on",
        default="auto",
        metavar="NAME",
        help="split whose labelled images choose the post-processing, 'none' to keep the defaults, or auto: val, and "
        "training images too when val holds fewer than 100 particles, as skipnas train calibrates a network (default auto)",
    )
    parser.add_argument(
        "--threshold-method",
        choices=("adaptive", "otsu"),
        default="adaptive",
        help="local mean (adaptive) or one global level (otsu) (default adaptive)",
    )
    parser.add_argument(
        "--polarity",
        choices=("auto", "bright", "dark"),
        default="auto",
        help="particles brighter or darker than the background (default auto: decided from the images)",
    )
    parser.add_argument(
        "--block-size", type=int, default=51, metavar="PX", help="odd window of the adaptive threshold (default 51)"
    )
    parser.add_argument(
        "--offset",
        type=float,
        default=10.0,
        metavar="GREY",
        help="grey levels (of 255) a particle must stand out from the local mean or Otsu level (default 10)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout instead of tables")
    parser.set_defaults(func=_baseline_count)


@contextlib.contextmanager
def _progress(description: str) -> Iterator[Callable[[int, int], None]]:
    """A transient bar on stderr, silent when stderr is no terminal."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    stderr = status_console()
    if not stderr.is_terminal:
        yield lambda done, total: None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=stderr, transient=True) as progress:
        task = progress.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        yield update


def _number(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def _print_result(result: dict[str, Any]) -> None:
    from rich.table import Table

    out = console()
    out.print(f"classical baseline on {result['root']}, split {result['split']}", soft_wrap=True)
    table = Table()
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, label in _SUMMARY_ROWS:
        table.add_row(label, _number(result[key]))
    out.print(table)
    images = Table(title="per image", title_justify="left")
    for name in ("image", "true count", "counted", "Dice"):
        images.add_column(name, justify="left" if name == "image" else "right")
    for row in result["rows"]:
        images.add_row(row["stem"], str(row["true_count"]), str(row["pred_count"]), f"{row['dice']:.3f}")
    out.print(images)
    if result["calibrated_on"]:
        source = f"calibrated on {result['calibrated_on']} ({result['calibration_images']} images)"
    else:
        source = "not calibrated (defaults)"
    out.print(f"threshold: {result['classical']['threshold_method']}, {result['polarity']} particles", soft_wrap=True)
    out.print(f"post-processing {source}: {result['postprocess_text']}", soft_wrap=True)
    if result["skipped_unlabelled"]:
        out.print(f"skipped {result['skipped_unlabelled']} unlabelled image(s) (no mask)", soft_wrap=True)


def _baseline_count(args: argparse.Namespace) -> int:
    from skipnas.counting.classical import ClassicalConfig, evaluate_classical

    config = ClassicalConfig(
        threshold_method=args.threshold_method,
        block_size=args.block_size,
        offset=args.offset,
        polarity=args.polarity,
    )
    calibrate_on = None if args.calibrate_on.lower() == "none" else args.calibrate_on
    with _progress("reading and counting") as update:
        result = evaluate_classical(args.data, args.split, config, calibrate_on=calibrate_on, progress=update)
    for line in result["notes"]:
        status_console().print(f"note: {line}", soft_wrap=True)
    if args.json:
        print_json(result)
    else:
        _print_result(result)
    return 0
