"""How a model folder's counting errs on each labelled image, particle by particle.

    python experiments/error_kinds.py MODEL_DIR --data ../shared/data/polystyrene-beads-lmmp/extracted --split val --split test
    python experiments/error_kinds.py MODEL_DIR --data demo --out experiments/results/error_kinds.csv
    python experiments/error_kinds.py --smoke --out /tmp/smoke.csv   # a tiny network trained on the demo first

Each image is counted as ``skipnas count`` counts it (the folder's input scale, tile and counting
setting) and its errors are classed as ``touching_particles.py`` classes them (:func:`error_kinds`):
a true particle no counted particle touches is **missed**, one covered only by a neighbour's counted
particle is **merged**, each further counted particle on one true particle is a **split**, and a
counted particle lying mostly on background is a **false** positive; found - true = split + false -
missed - merged. Val rows are selection scores where the model's counting was chosen on val.
One row per image on stdout, and with ``--out`` in a CSV.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from touching_particles import ERROR_KINDS, error_kinds

from skipnas.candidate import open_dataset
from skipnas.count import count_image
from skipnas.data.loading import load_labeled
from skipnas.errors import SkipnasError
from skipnas.fileio import write_csv_atomic
from skipnas.modelio import load_model_folder
from skipnas.runtime.device import select_device

FIELDS = ["data_split", "image", "true_count", "found", *ERROR_KINDS]


def image_rows(model_dir: str, data: str, splits: list[str], device: str = "cpu") -> list[dict[str, Any]]:
    """One row per labelled image of ``splits``: its true count, the particles counted and their errors by kind."""
    folder = load_model_folder(model_dir)
    if len(folder.class_names) != 1:
        raise SkipnasError(f"{model_dir}: a model of {len(folder.class_names)} classes; this script classes one class's errors")
    setup = select_device(device)
    index = open_dataset(data)
    rows = []
    for split in splits:
        for item in load_labeled(index.samples(split)):
            labels = next(iter(count_image(folder, item.image, setup).values())).labels
            rows.append({
                "data_split": split,  # "split" is an error kind
                "image": item.stem,
                "true_count": int(np.unique(item.instances[item.instances > 0]).size),
                "found": int(np.unique(labels[labels > 0]).size),
                **error_kinds(labels, item.instances),
            })
    return rows


def smoke_model(out: Path) -> str:
    from skipnas.cli import main as skipnas_main

    flags = ["--width", "4", "--steps", "4", "--calibrate-on", "val", "--device", "cpu", "--json", "--out", str(out)]
    if skipnas_main(["train", "--data", "demo", *flags]) != 0:
        raise SkipnasError("the smoke run's network could not be trained")
    return str(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", metavar="MODEL_DIR", nargs="?", help="a folder written by skipnas train or export")
    parser.add_argument("--data", default="demo", metavar="DIR|demo", help="dataset folder (default: the embedded demo)")
    parser.add_argument(
        "--split", action="append", choices=("train", "val", "test"), default=None, help="split to count (repeatable; default test)"
    )
    parser.add_argument("--out", type=Path, default=None, help="also write the rows to this CSV")
    parser.add_argument("--smoke", action="store_true", help="train a tiny network on the demo (4 steps) and class its errors")
    args = parser.parse_args(argv)
    if args.model is None and not args.smoke:
        parser.error("give MODEL_DIR (or --smoke)")
    try:
        if args.smoke:
            with tempfile.TemporaryDirectory() as folder:
                rows = image_rows(smoke_model(Path(folder) / "model"), "demo", args.split or ["val", "test"])
        else:
            rows = image_rows(args.model, args.data, args.split or ["test"])
    except SkipnasError as exc:
        print(f"error_kinds: {exc}", file=sys.stderr)
        return 2
    print("\t".join(FIELDS))
    for row in rows:
        print("\t".join(str(row[field]) for field in FIELDS))
    if args.out is not None:
        write_csv_atomic(args.out, rows, FIELDS)  # makes the folder too
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
