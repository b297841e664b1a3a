"""Does a model lean on its batches' own statistics? One split predicted two ways, per image.

    python experiments/batchnorm_check.py MODEL_DIR --data DIR --split val --out experiments/results/batchnorm_check.csv
    python experiments/batchnorm_check.py --smoke --out /tmp/smoke.csv

A network trained with BatchNorm normalises each training step by that batch's statistics and
predicts with their running averages. With few tiles a batch, the network can learn to rely on each
batch's own statistics, which the running averages do not give back: its predictions with the
running averages (how ``skipnas`` always predicts) are then worse than with the statistics of the
tiles being predicted. This script scores one split both ways (pixel Dice, and the model folder's own
counting): a large gap says the training batch was too small. Predicting with batch statistics is a
diagnosis only: a prediction would depend on which tiles share its batch.

Output: one CSV row per image and mode (``running`` or ``batch``): Dice, true and predicted count;
and the split's Dice and relative count error per mode on stdout.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from torch import nn

from skipnas.candidate import evaluate_predictions, open_dataset, prepare_data, train_candidate
from skipnas.data.loading import LabeledImage, load_labeled
from skipnas.errors import SkipnasError
from skipnas.genome import Genome
from skipnas.modelio import ModelFolder, load_model_folder
from skipnas.predict import predict_images
from skipnas.runtime.device import select_device
from skipnas.train.config import PhaseConfig, TrainConfig

FIELDS = ["image", "mode", "dice", "true_count", "pred_count"]
MODES = ("running", "batch")


@contextmanager
def batch_statistics(model: nn.Module) -> Iterator[None]:
    """Within the block, every BatchNorm layer normalises by the batch in front of it, in eval mode too;
    its running averages are left untouched and back in use after the block."""
    norms = [module for module in model.modules() if isinstance(module, nn.modules.batchnorm._BatchNorm)]
    saved = [(module.running_mean, module.running_var) for module in norms]
    try:
        for module in norms:
            # without running averages, PyTorch's BatchNorm uses the batch's statistics and records nothing
            module.running_mean, module.running_var = None, None
        yield
    finally:
        for module, (mean, var) in zip(norms, saved):
            module.running_mean, module.running_var = mean, var


def score_both(folder: ModelFolder, images: Sequence[LabeledImage], device: str = "cpu") -> dict[str, dict[str, Any]]:
    """:func:`~skipnas.candidate.evaluate_predictions` of ``images`` predicted with the running averages and with batch statistics."""
    setup = select_device(device)
    model = folder.model.to(setup.device)

    def predict() -> dict[str, Any]:
        predictions = predict_images(model, images, folder.normalisation, setup, folder.tile, 32, "none", folder.scale)
        return evaluate_predictions(predictions, images, folder.postprocess)

    running = predict()
    with batch_statistics(model):
        batch = predict()
    return {"running": running, "batch": batch}


def smoke_model(out: Path) -> Path:
    """A tiny model trained for a few steps on the demo data."""
    config = TrainConfig(pretrain=PhaseConfig(steps=2), finetune=PhaseConfig(steps=4), batch_size=2, calibrate_on="val")
    prepared = prepare_data(open_dataset("demo"), config)
    train_candidate(Genome.named("standard", base_width=4), prepared, config, out=out, progress=False)
    return out


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(handle, "w", newline="") as stream:
        writer = csv.DictWriter(stream, FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(temporary, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", type=Path, help="model folder (skipnas train or export)")
    parser.add_argument("--data", default="demo", help="dataset folder (default: the embedded demo)")
    parser.add_argument("--split", default="val", choices=("train", "val", "test"))
    parser.add_argument("--smoke", action="store_true", help="a tiny model trained for a few steps on the demo: checks the plumbing")
    parser.add_argument("--out", type=Path, required=True, help="CSV of per-image rows")
    args = parser.parse_args(argv)
    if args.model is None and not args.smoke:
        parser.error("give MODEL_DIR (or --smoke)")
    try:
        with tempfile.TemporaryDirectory() as scratch:
            model_dir = smoke_model(Path(scratch) / "model") if args.smoke else args.model
            folder = load_model_folder(model_dir)
            images = load_labeled(open_dataset(args.data).samples(args.split))
            if not images:
                raise SkipnasError(f"{args.data}: the {args.split} split has no labelled images; choose another --split")
            scores = score_both(folder, images)
    except SkipnasError as exc:
        print(f"batchnorm_check: {exc}", file=sys.stderr)
        return 2
    rows = [
        {"image": row["stem"], "mode": mode, "dice": round(row["dice"], 4), "true_count": row["true_count"], "pred_count": row["pred_count"]}
        for mode in MODES
        for row in scores[mode]["rows"]
    ]
    write_csv(args.out, rows)
    for mode in MODES:
        metrics = scores[mode]
        print(f"{mode:8s} statistics: Dice {metrics['dice']:.3f}  relative count error {metrics['relative_count_error']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
