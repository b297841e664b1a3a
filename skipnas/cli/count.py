"""``skipnas count``: count particles in new images with a model folder."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from skipnas.cli._common import console, print_json
from skipnas.cli.evaluate import counting_line
from skipnas.cli.train import add_device_arguments, add_tta_argument


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "count",
        help="count particles in images of any size: CSVs and overlay images with numbered boxes",
        description="Tiled inference with a model folder on images of any size, then the folder's calibrated "
        "counting. Writes counts.csv (one row per image; the true count where a masks/ folder sits beside "
        "images/), particles.csv (one row per particle: box, area, equivalent "
        "diameter, length along the skeleton for fibres, confidence), overlays/IMAGE.png with "
        "numbered boxes and summary.json (the counting method and the totals).",
    )
    parser.add_argument("model_dir", type=Path, metavar="MODEL_DIR", help="folder written by skipnas train or export")
    parser.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files or folders of images")
    parser.add_argument(
        "--out", type=Path, required=True, metavar="OUT_DIR",
        help="folder for the CSVs and overlays, all written at the end (a failure leaves it as it was)",
    )
    parser.add_argument(
        "--overwrite", action="store_true",
        help="replace an earlier count's outputs in --out, its overlays included (other files there are kept)",
    )
    parser.add_argument("--no-overlays", action="store_true", help="skip the overlay images")
    add_device_arguments(parser)
    add_tta_argument(parser)
    parser.add_argument(
        "--engine", choices=("torch", "onnx"), default="torch",
        help="what runs the network: PyTorch, or the folder's model.onnx (skipnas onnx) with onnxruntime on the CPU "
        '(pip install "skipnas[onnx]") (default torch)',
    )
    parser.add_argument("--json", action="store_true", help="print the per-image counts as one JSON object")
    parser.set_defaults(func=_count)


def _count(args: argparse.Namespace) -> int:
    from rich.table import Table

    from skipnas.count import count_images

    result = count_images(
        args.model_dir, args.inputs, args.out, device=args.device, overlays=not args.no_overlays, progress=not args.json,
        tta=args.tta, overwrite=args.overwrite, engine=args.engine,
    )
    if args.json:
        print_json(
            {"out_dir": str(result.out_dir), "counting": result.counting, "method": result.method, "auxiliary": result.auxiliary,
             "tta": result.tta, "calibrated_tta": result.calibrated_tta, "total": result.total, "images": result.images}
        )
        return 0
    table = Table()
    columns = [key for key in result.images[0] if key not in ("file", "overlay")]
    table.add_column("image")
    for key in columns:
        table.add_column(key.replace("_", " "), justify="right")
    for row in result.images:
        table.add_row(Path(row["file"]).name, *(str(row[key]) for key in columns))
    out = console()
    out.print(f"[bold]counts[/] (counting: {result.counting})")
    out.print(table)
    out.print(counting_line(result.method, result.auxiliary, result.tta, result.calibrated_tta))
    out.print(f"{result.total} particles in {len(result.images)} images -> {result.out_dir}")
    return 0
