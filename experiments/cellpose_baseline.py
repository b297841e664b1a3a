"""Cellpose trained from scratch on a dataset split, counted on its test split: the baseline skipnas is compared with.

    python experiments/cellpose_baseline.py --data ../shared/data/polystyrene-beads-lmmp/extracted --out beads-cellpose.json
    python experiments/cellpose_baseline.py --data ../shared/data/sem-fibres-shi2022/extracted --train-seconds 180 --seed 1
    python experiments/cellpose_baseline.py --data DIR --smoke --out /tmp/smoke.json   # 2 train images, 1 epoch, 1 test image
    python experiments/cellpose_baseline.py --smoke    # the same on skipnas's demo data

Cellpose is not a skipnas dependency. Install it in a virtualenv of its own, with skipnas beside it
(this script reads the data and scores the counts with skipnas's own reader and metrics):

    python3 -m venv /tmp/cpvenv
    /tmp/cpvenv/bin/pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu   # 2.13.0+cpu
    /tmp/cpvenv/bin/pip install 'cellpose<4'         # resolves to cellpose 3.1.1.3 (numpy 2.0.2)
    /tmp/cpvenv/bin/pip install -e /path/to/skipnas  # skipnas and its dependencies (optuna, albumentations, ...)
    /tmp/cpvenv/bin/python experiments/cellpose_baseline.py --data DIR

Dataset: DIR/{train,val,test}/images/NAME.(png|jpg|tif) and DIR/{train,val,test}/masks/NAME.png
(16-bit instance IDs, 0 = background), read with skipnas.data.loading. Images are made grey (the
mean of the colour channels, as Cellpose's channels=[0, 0] does) and Cellpose normalises each
image to its 1st..99th percentile.

Model: ``CellposeModel(gpu=False, pretrained_model=False, diam_mean=D)``, no weights loaded, where D
is the median equivalent diameter sqrt(4 * area / pi) of the train split's particles. Training uses
``cellpose.train.train_seg`` (AdamW, Cellpose's schedule: the learning rate climbs linearly from 0 over
the first 10 epochs) on the train split, with the val split for its logged test loss; prediction uses
``model.eval(image, diameter=D, channels=[0, 0])`` and counts the instance IDs of the masks.

Time budget (--train-seconds, default 180 s, what skipnas gets: 60 s pretraining + 120 s fine-tuning).
The clock starts before the flow targets are computed and covers all of training:
1. the flows are computed once (Cellpose's labels_to_flows) and handed to train_seg precomputed;
2. train_seg is asked for 100 epochs. Its learning rate climbs from 0 over 10 epochs and then stays
   flat (the halvings come only when n_epochs > 100), so its first k epochs are exactly those of a
   run asked for k <= 100 epochs: no epoch count has to be guessed up front;
3. a guard (patched into cellpose.train) stops train_seg before its next batch once the deadline
   has passed (skipnas's trainer's rule too: the batch under way then finishes); the net keeps the
   weights trained so far, and the JSON gives the whole epochs run;
4. should the time left after epoch 10 fit more than 100 epochs (a fast machine, tiny data), the
   run is restarted from the initial weights with the epoch count that fits, at the pace measured
   over epochs 1-10, so that Cellpose's schedule ends with its halvings (``replanned``).
--epochs N asks train_seg for N epochs instead (the guard still holds); --smoke uses 1 epoch, whose
learning rate is 0 in Cellpose's warm-up: the smoke run checks the plumbing, it learns nothing.
A --smoke run where Cellpose is not installed (the project's own environment, where
tests/experiments/test_smoke.py runs every script's smoke mode) prints "skipped: ..." and writes
{"skipped": ...} instead of failing; any other run exits 2 then.

Output: one JSON (--out, written atomically) with a row per test image (stem, true and predicted
count, object tp/fp/fn) and the totals (relative count error, count MAE, object precision, recall
and F1, training seconds, epochs, Cellpose version), and a short table on stdout.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import random
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from skipnas.data.loading import load_labeled
from skipnas.data.scan import resolve_dataset
from skipnas.data.validate import check_dataset
from skipnas.errors import SkipnasError
from skipnas.runtime.metrics import count_metrics, match_objects, object_metrics

CHANNELS = [0, 0]  # Cellpose: segment the grey image, no nuclear channel
SMOKE_TRAIN_IMAGES = 2
SMOKE_VAL_IMAGES = 1
SMOKE_TEST_IMAGES = 1
SMOKE_EPOCHS = 1
FLAT_EPOCHS = 100  # train_seg's learning rate: 0 -> lr over 10 epochs, then flat; halvings only when n_epochs > 100
WARMUP_EPOCHS = 10
STEM_WIDTH = 40  # the printed table's stem column
INSTALL_HINT = "install it in a virtualenv of its own with skipnas beside it (see the top of experiments/cellpose_baseline.py)"


class BadInput(Exception):
    """A problem with the command's input, told in one line."""


class CellposeMissing(BadInput):
    """Cellpose cannot be imported: an error, except that a smoke run is then skipped (exit 0)."""


class BudgetSpent(Exception):
    """Raised inside train_seg to stop it at the deadline."""


# ---------------------------------------------------------------- data


def grey(image: np.ndarray) -> np.ndarray:
    """The image as 2-D float32: grey as it is, colour as the mean of its (up to 3) colour channels, alpha dropped."""
    image = np.asarray(image)
    if image.ndim == 2:
        return image.astype(np.float32)
    channels = image.shape[2]
    colour = image[..., :3] if channels >= 3 else image[..., :1]
    return colour.astype(np.float32).mean(axis=2)


def instance_count(instances: np.ndarray) -> int:
    """How many distinct nonzero IDs a label image holds."""
    ids = np.unique(instances)
    return int(np.count_nonzero(ids))


def equivalent_diameters(instances: np.ndarray) -> np.ndarray:
    """sqrt(4 * area / pi) of each particle of an instance map."""
    areas = np.bincount(np.asarray(instances, dtype=np.int64).ravel())[1:]
    areas = areas[areas > 0]
    return np.sqrt(4.0 * areas / math.pi)


def median_diameter(instance_maps: list[np.ndarray]) -> float:
    """The median equivalent diameter over every particle of the maps (pooled, not per image)."""
    diameters = np.concatenate([equivalent_diameters(item) for item in instance_maps] or [np.zeros(0)])
    if diameters.size == 0:
        raise BadInput("the train split has no particles; Cellpose needs labelled particles to train on")
    return float(np.median(diameters))


def plan_epochs(seconds_left: float, setup_seconds: float, epoch_seconds: float) -> int:
    """The whole epochs that fit in ``seconds_left`` after a setup; at least 1."""
    if epoch_seconds <= 0:
        return 1
    return max(1, int(math.floor((seconds_left - setup_seconds) / epoch_seconds)))


@dataclass
class Splits:
    root: Path
    train: list[Any]
    val: list[Any]
    test: list[Any]


def load_splits(data: str, split: str, smoke: bool) -> Splits:
    """The labelled train, val and evaluated split, or BadInput naming what is missing."""
    try:
        index = check_dataset(resolve_dataset(data))
    except SkipnasError as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        first = lines[1] if len(lines) > 1 else lines[0]  # the first named problem, not the heading
        more = f" (and {len(lines) - 2} more problems)" if len(lines) > 2 else ""
        raise BadInput(first + more) from None
    root = index.root

    def labelled(name: str, required: bool) -> list[Any]:
        samples = index.samples(name)
        if not samples:
            if required:
                raise BadInput(f"{root / name}: no {name} split (expected {name}/images and {name}/masks)")
            return []
        items = load_labeled(samples)
        if not items and required:
            raise BadInput(f"{root / name / 'masks'}: the {name} split has images but no masks")
        return items

    try:
        train = labelled("train", required=True)
        val = labelled("val", required=False)  # only for train_seg's logged test loss
        test = labelled(split, required=True)
    except SkipnasError as error:
        raise BadInput(str(error).splitlines()[0]) from None
    if not any(instance_count(item.instances) for item in train):
        raise BadInput(f"{root / 'train' / 'masks'}: no train mask holds a particle; Cellpose needs particles to train on")
    if smoke:
        with_particles = [item for item in train if instance_count(item.instances)]
        train, val, test = with_particles[:SMOKE_TRAIN_IMAGES], val[:SMOKE_VAL_IMAGES], test[:SMOKE_TEST_IMAGES]
    return Splits(root, train, val, test)


# ---------------------------------------------------------------- cellpose


def import_cellpose() -> tuple[Any, Any, Any, str]:
    os.environ.setdefault("TQDM_DISABLE", "1")  # Cellpose draws progress bars for every list it walks
    warnings.filterwarnings("ignore", message="Sparse invariant checks")  # torch, on Cellpose's mask dynamics
    try:
        from importlib.metadata import version

        from cellpose import dynamics, models, train
    except ImportError as error:
        raise CellposeMissing(f"cellpose is not importable in {sys.executable} ({error}); {INSTALL_HINT}") from None
    cellpose_version = version("cellpose")
    if not cellpose_version.startswith("3."):
        raise BadInput(f"cellpose {cellpose_version} is installed; this script uses the Cellpose 3 API ('cellpose<4')")
    return models, train, dynamics, cellpose_version


class Replan(Exception):
    """Raised inside train_seg when the time left fits more epochs than the flat schedule holds."""


class Guard:
    """Patches cellpose.train while one train_seg call runs.

    It times train_seg's setup (``_process_train_test``), learns how many batches make an epoch from
    what that setup returns, notes when each training epoch starts, and, before each training batch,
    stops the run at the deadline (:class:`BudgetSpent`). With ``replan_at`` set it also stops the
    run (:class:`Replan`) when that epoch starts and the time left would fit more than ``flat``
    epochs at the pace of the epochs since epoch 1 (epoch 0 carries one-off warm-up costs).
    """

    def __init__(self, train_module: Any, net: Any, deadline: float, batch_size: int, *,
                 replan_at: int | None = None, flat: int = 0) -> None:
        self.train = train_module
        self.net = net
        self.deadline = deadline
        self.batch_size = batch_size
        self.replan_at = replan_at
        self.flat = flat
        self.setup_seconds = 0.0
        self.batches_per_epoch = 0
        self.train_batches = 0
        self.epoch_starts: list[float] = []
        self.stopped = False
        self.epoch_seconds: float | None = None  # the pace measured for a replan

    @property
    def epochs(self) -> int:
        """Whole training epochs run so far (before a stop, the epoch in progress is not counted)."""
        return self.train_batches // self.batches_per_epoch if self.batches_per_epoch else 0

    def pace(self) -> float | None:
        """Seconds an epoch, from the starts of epoch 1 to the latest one (None before epoch 2 starts)."""
        if len(self.epoch_starts) < 3:
            return None
        return (self.epoch_starts[-1] - self.epoch_starts[1]) / (len(self.epoch_starts) - 2)

    def __enter__(self) -> "Guard":
        self._get_batch = self.train._get_batch
        self._process = self.train._process_train_test

        def get_batch(*args: Any, **kwargs: Any) -> Any:
            if self.net.training:  # train_seg puts the net in eval mode for its test loss
                now = time.monotonic()
                if now >= self.deadline:
                    self.stopped = True
                    raise BudgetSpent
                if self.batches_per_epoch and self.train_batches % self.batches_per_epoch == 0:
                    self.epoch_starts.append(now)
                    pace = self.pace()
                    if self.replan_at is not None and len(self.epoch_starts) - 1 == self.replan_at and pace:
                        if plan_epochs(self.deadline - now, self.setup_seconds, pace) > self.flat:
                            self.epoch_seconds = pace
                            raise Replan
                self.train_batches += 1
            return self._get_batch(*args, **kwargs)

        def process(*args: Any, **kwargs: Any) -> Any:
            start = time.monotonic()
            try:
                out = self._process(*args, **kwargs)
            finally:
                self.setup_seconds += time.monotonic() - start
            train_data = out[0]  # what train_seg will train on, after min_train_masks
            self.batches_per_epoch = math.ceil(len(train_data) / self.batch_size)
            return out

        self.train._get_batch = get_batch
        self.train._process_train_test = process
        return self

    def __exit__(self, *exc: Any) -> None:
        self.train._get_batch = self._get_batch
        self.train._process_train_test = self._process


def fit(args: argparse.Namespace, splits: Splits, diameter: float, cellpose: tuple[Any, Any, Any, str]) -> dict[str, Any]:
    """Trains a fresh Cellpose model within the budget; returns the model and how training went."""
    models, train, dynamics, _ = cellpose
    model = models.CellposeModel(gpu=False, pretrained_model=False, diam_mean=diameter)
    net = model.net
    initial = copy.deepcopy(net.state_dict())
    start = time.monotonic()
    deadline = start + args.train_seconds

    # the flow targets, once (fastremap.renumber works in place: hand it copies)
    train_labels = dynamics.labels_to_flows([item.instances.copy() for item in splits.train], device=model.device)
    val_labels = dynamics.labels_to_flows([item.instances.copy() for item in splits.val], device=model.device) if splits.val else None
    flow_seconds = time.monotonic() - start
    train_data = [grey(item.image) for item in splits.train]
    val_data = [grey(item.image) for item in splits.val] if splits.val else None

    with tempfile.TemporaryDirectory(prefix="cellpose-baseline-") as save_path:
        def run(n_epochs: int, **guard_options: Any) -> Guard:
            guard = Guard(train, net, deadline, args.batch_size, **guard_options)
            with guard:
                try:
                    train.train_seg(
                        net, train_data=train_data, train_labels=train_labels, test_data=val_data, test_labels=val_labels,
                        channels=CHANNELS, normalize=True, n_epochs=n_epochs, learning_rate=args.learning_rate,
                        weight_decay=args.weight_decay, batch_size=args.batch_size, min_train_masks=1,
                        save_path=save_path, model_name="cellpose_baseline",
                    )
                except (BudgetSpent, Replan):
                    pass  # the net keeps the weights trained so far; the guard says why it stopped
            return guard

        replanned = False
        if args.epochs is not None:
            planned = args.epochs
            guard = run(planned)
            how = f"{planned} epoch{'' if planned == 1 else 's'} asked for; a guard stops training at the {args.train_seconds:g} s deadline"
        else:
            planned = FLAT_EPOCHS
            guard = run(planned, replan_at=WARMUP_EPOCHS, flat=FLAT_EPOCHS)
            how = (
                f"train_seg asked for {FLAT_EPOCHS} epochs, whose learning-rate schedule (warm-up over {WARMUP_EPOCHS} epochs, "
                "then flat) is epoch for epoch that of any shorter run; a guard stops it at the "
                f"{args.train_seconds:g} s deadline"
            )
            if guard.epoch_seconds is not None:  # more than FLAT_EPOCHS epochs fit: start again with the right count
                replanned = True
                pace = guard.epoch_seconds
                net.load_state_dict(initial)
                planned = plan_epochs(deadline - time.monotonic(), guard.setup_seconds, pace)
                guard = run(planned)
                how = (
                    f"after {WARMUP_EPOCHS} of {FLAT_EPOCHS} epochs ({pace:.2f} s an epoch) the time left fit more; "
                    f"restarted from the initial weights with the {planned} epochs that fit (Cellpose's schedule then ends "
                    f"with its learning-rate halvings); a guard stops it at the {args.train_seconds:g} s deadline"
                )
    training_seconds = time.monotonic() - start
    net.eval()
    epochs = guard.epochs if guard.stopped else planned
    pace = guard.pace()
    return {
        "model": model,
        "training_seconds": training_seconds,
        "flow_seconds": flow_seconds,
        "setup_seconds": guard.setup_seconds,
        "epoch_seconds": pace,
        "epochs_planned": planned,
        "epochs": epochs,
        "stopped_at_deadline": guard.stopped,
        "replanned": replanned,
        "budget_method": how,
    }


# ---------------------------------------------------------------- scoring


def evaluate(model: Any, items: list[Any], diameter: float) -> tuple[list[dict[str, Any]], list[np.ndarray]]:
    rows, masks = [], []
    for item in items:
        labels = np.asarray(model.eval(grey(item.image), diameter=diameter, channels=CHANNELS)[0])
        tp, fp, fn = match_objects(labels, item.instances)
        rows.append(
            {
                "stem": item.stem,
                "true_count": instance_count(item.instances),
                "pred_count": instance_count(labels),
                "tp": int(tp),
                "fp": int(fp),
                "fn": int(fn),
            }
        )
        masks.append(labels)
    return rows, masks


def write_json_atomic(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as file:
            json.dump(obj, file, indent=2)
            file.write("\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def print_table(result: dict[str, Any]) -> None:
    def short(stem: str) -> str:  # the JSON keeps the whole stem
        return stem if len(stem) <= STEM_WIDTH else stem[: STEM_WIDTH - 3] + "..."

    width = max([len("stem"), len("total")] + [len(short(row["stem"])) for row in result["images"]])
    print(f"{'stem':<{width}} {'true':>6} {'pred':>6} {'tp':>5} {'fp':>5} {'fn':>5}")
    for row in result["images"]:
        print(f"{short(row['stem']):<{width}} {row['true_count']:>6} {row['pred_count']:>6} {row['tp']:>5} {row['fp']:>5} {row['fn']:>5}")
    print(
        f"{'total':<{width}} {sum(result['true_counts']):>6} {sum(result['pred_counts']):>6} "
        f"{result['object_tp']:>5} {result['object_fp']:>5} {result['object_fn']:>5}"
    )
    print(
        f"relative count error {result['relative_count_error']:.3f}, count MAE {result['count_mae']:.2f}, "
        f"object precision {result['object_precision']:.3f}, recall {result['object_recall']:.3f}, F1 {result['object_f1']:.3f}"
    )
    print(
        f"cellpose {result['cellpose_version']} from scratch, diameter {result['diameter']:.1f} px: trained "
        f"{result['training_seconds']:.1f} s of {result['train_budget_seconds']:g} s, {result['epochs']} "
        f"epoch{'' if result['epochs'] == 1 else 's'}"
        + (" (stopped at the deadline)" if result["stopped_at_deadline"] else "")
    )
    print(f"budget: {result['budget_method']}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="dataset folder holding train/, val/ and test/ (required, but --smoke defaults to 'demo')")
    parser.add_argument("--train-seconds", type=float, default=180.0, help="wall-clock training budget (default 180, as skipnas)")
    parser.add_argument("--seed", type=int, default=0, help="seeds torch's weight initialisation (train_seg seeds numpy by epoch itself)")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"), help="the split counted (default test)")
    parser.add_argument("--out", type=Path, default=Path("experiments/results/cellpose_baseline.json"))
    parser.add_argument("--smoke", action="store_true", help=f"tiny run: {SMOKE_TRAIN_IMAGES} train images, {SMOKE_EPOCHS} epoch, {SMOKE_TEST_IMAGES} test image")
    parser.add_argument("--epochs", type=int, help="ask train_seg for this many epochs (default: as many as the budget fits)")
    parser.add_argument("--learning-rate", type=float, default=0.005, help="train_seg's AdamW rate (default 0.005, its own)")
    parser.add_argument("--weight-decay", type=float, default=1e-5)
    parser.add_argument("--batch-size", type=int, default=8, help="224x224 crops a step (default 8, Cellpose's)")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's own)")
    args = parser.parse_args(argv)
    if args.train_seconds <= 0:
        parser.error("--train-seconds must be positive")
    if args.epochs is not None and args.epochs < 1:
        parser.error("--epochs must be at least 1")
    if args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    if args.data is None:
        if not args.smoke:
            parser.error("--data is required (a folder holding train/, val/ and test/)")
        args.data = "demo"  # skipnas's generated demo set, as the other experiments' smoke modes use
    if args.smoke:
        args.epochs = SMOKE_EPOCHS
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    splits = load_splits(args.data, args.split, args.smoke)
    cellpose = import_cellpose()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    diameter = median_diameter([item.instances for item in splits.train])
    print(
        f"cellpose {cellpose[3]} from scratch on {splits.root}: {len(splits.train)} train, {len(splits.val)} val, "
        f"{len(splits.test)} {args.split} images; diameter {diameter:.1f} px; budget {args.train_seconds:g} s",
        flush=True,
    )
    trained = fit(args, splits, diameter, cellpose)
    predict_start = time.monotonic()
    rows, _ = evaluate(trained["model"], splits.test, diameter)
    predict_seconds = time.monotonic() - predict_start
    counts = count_metrics([row["pred_count"] for row in rows], [row["true_count"] for row in rows])
    objects = object_metrics([(row["tp"], row["fp"], row["fn"]) for row in rows])
    return {
        "method": "cellpose 3 trained from scratch (no pretrained weights)",
        "cellpose_version": cellpose[3],
        "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "data": str(splits.root),
        "split": args.split,
        "seed": args.seed,
        "smoke": args.smoke,
        "train_images": len(splits.train),
        "val_images": len(splits.val),
        "test_images": len(splits.test),
        "diameter": round(diameter, 3),
        "channels": CHANNELS,
        "optimizer": "AdamW",
        "learning_rate": args.learning_rate,
        "weight_decay": args.weight_decay,
        "batch_size": args.batch_size,
        "train_budget_seconds": args.train_seconds,
        "training_seconds": round(trained["training_seconds"], 3),
        "flow_seconds": round(trained["flow_seconds"], 3),
        "setup_seconds": round(trained["setup_seconds"], 3),
        "epoch_seconds": None if trained["epoch_seconds"] is None else round(trained["epoch_seconds"], 3),
        "replanned": trained["replanned"],
        "epochs_planned": trained["epochs_planned"],
        "epochs": trained["epochs"],
        "stopped_at_deadline": trained["stopped_at_deadline"],
        "budget_method": trained["budget_method"],
        "predict_seconds": round(predict_seconds, 3),
        "relative_count_error": counts["relative_count_error"],
        "count_mae": counts["count_mae"],
        "count_bias": counts["count_bias"],
        "pred_counts": counts["pred_counts"],
        "true_counts": counts["true_counts"],
        "object_precision": objects["object_precision"],
        "object_recall": objects["object_recall"],
        "object_f1": objects["object_f1"],
        "object_tp": objects["object_tp"],
        "object_fp": objects["object_fp"],
        "object_fn": objects["object_fn"],
        "images": rows,
        "finished": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        result = run(args)
    except CellposeMissing as error:
        if not args.smoke:
            print(f"error: {error}", file=sys.stderr)
            raise SystemExit(2) from None
        # tests/experiments/test_smoke.py runs every script's --smoke in the project's environment,
        # which has no Cellpose: say so, in the output too, rather than fail
        print(f"skipped: {error}")
        write_json_atomic(args.out, {"skipped": str(error), "smoke": True, "data": args.data, "cellpose_version": None})
        return
    except BadInput as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    write_json_atomic(args.out, result)
    print_table(result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
