"""Touching round particles: the demo's bead clusters, counted by each method from one network.

    python experiments/touching_particles.py --train-seeds 0,1,2,3 --test-seeds 0,1,2,3 \
        --model beads_model --out experiments/results/touching_particles.csv -- --width 24 --steps 7600
    python experiments/touching_particles.py --smoke --out /tmp/touching.csv

1. a dataset made from demo draws (the same generator, other seeds) in which only the beads (round,
   in clusters of touching beads) are labelled; the other particles stay in the images, unlabelled,
   as clutter. ``--train-seeds`` gives its train and val splits (the val images choose the weights
   kept), ``--extra-train-seeds`` draws whose train and val splits both only train, and
   ``--test-seeds`` draws whose test splits are counted (images the network never saw: one demo
   test split holds only about 33 beads);
2. one network trained on it with ``skipnas train``: every option after ``--`` goes to that
   command (``--width``, ``--steps``, ``--auxiliary``, ``--keep-best``, ``--patience`` ...), or
   ``--from-model`` counts with a model folder trained before;
3. for each counting method, the post-processing is calibrated on the val images (with
   ``--calibrate-seeds``, also the val splits of further draws, never trained on), the grid
   restricted to that method, and the test images are counted with it. The same counting of the
   true masks (the ceiling of each method) comes alongside, and for the learned map where its
   error comes from: the true map on the predicted mask, and the predicted map on the true mask.

Writes one CSV row per method: test relative count error, count MAE, exact-count accuracy, Dice,
object precision and recall, the beads counted too many and too few (summed over images), the
beads with no pixel of the calibrated mask at all, the errors particle by particle (beads missed,
merged into a neighbour's particle or split, and false positives: :func:`error_kinds`), and the
test error of the counting calibrated on the test images themselves, the best any calibration
could do with the network.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from skipnas.cli import main as skipnas_main
from skipnas.counting.calibrate import CalibrationGrid, calibrate
from skipnas.counting.evaluation import Evaluation
from skipnas.counting.postprocess import (
    AUXILIARY_METHODS,
    METHODS,
    Detections,
    PostprocessConfig,
    as_probabilities,
    count_particles,
    describe,
    mask_from_probabilities,
)
from skipnas.counting.seeded import auxiliary_target
from skipnas.data.demo import class_instances, demo_classes, demo_dataset_path
from skipnas.data.io import count_instances, read_raw, write_image, write_mask
from skipnas.data.loading import LabeledImage
from skipnas.data.rescale import rescale_labeled
from skipnas.data.validate import check_dataset
from skipnas.errors import SkipnasError
from skipnas.fileio import write_csv_atomic
from skipnas.modelio import ModelFolder, load_model_folder
from skipnas.predict import Prediction, auxiliary_maps, predict_images
from skipnas.runtime.device import describe_machine, place_model, select_device
from skipnas.runtime.metrics import count_metrics
from skipnas.train.data import load_split

# the smoke run's training, unless options after -- say otherwise
SMOKE_TRAINING = ("--width", "4", "--steps", "6", "--validation-steps", "3", "--calibrate-on", "val")


def write_class_subset(
    demo_root: Path, out: Path, keep: str = "bead", prefix: str = "", splits: Sequence[str] | None = None, into: str | None = None
) -> Path:
    """The demo dataset with only the ``keep`` particles labelled (the others unlabelled clutter).

    ``prefix`` goes before every file name, so several demo draws can share one folder; ``splits``
    (default all) limits the splits written; ``into`` writes every split into that one split's
    folder instead of its own (a draw's val images as training images).
    """
    classes = demo_classes(demo_root)
    if splits is not None:
        classes = {split: stems for split, stems in classes.items() if split in splits}
    for split, stems in classes.items():
        written = out / (into or split)
        for folder in ("images", "masks"):
            (written / folder).mkdir(parents=True, exist_ok=True)
        for stem, ids in stems.items():
            image = next((demo_root / split / "images").glob(f"{stem}.*"))
            mask = next((demo_root / split / "masks").glob(f"{stem}.*"))
            write_image(written / "images" / f"{prefix}{image.name}", read_raw(image))
            write_mask(written / "masks" / f"{prefix}{mask.name}", class_instances(read_raw(mask), ids, keep))
    return out


def write_beads_dataset(
    root: Path, train_seeds: Sequence[int], extra_train_seeds: Sequence[int], test_seeds: Sequence[int]
) -> Path:
    """The beads-only dataset of the draws: train and val of ``train_seeds``, both splits of
    ``extra_train_seeds`` as training images, the test splits of ``test_seeds``."""
    for demo_seed in train_seeds:
        write_class_subset(demo_dataset_path(demo_seed), root, prefix=f"seed{demo_seed}-", splits=("train", "val"))
    for demo_seed in extra_train_seeds:
        write_class_subset(demo_dataset_path(demo_seed), root, prefix=f"seed{demo_seed}-", splits=("train", "val"), into="train")
    for demo_seed in test_seeds:
        write_class_subset(demo_dataset_path(demo_seed), root, prefix=f"seed{demo_seed}-", splits=("test",))
    return root


def predict_at_model_scale(folder: ModelFolder, images: Sequence[LabeledImage]) -> tuple[list[LabeledImage], list[Prediction]]:
    """The model folder's predictions of ``images`` (its tiles, scale and test-time augmentation),
    with the images resized to the maps' scale so that counts compare pixel by pixel."""
    setup = select_device("cpu")
    model = place_model(folder.model, setup)
    predictions = predict_images(model, images, folder.normalisation, setup, folder.tile, 32, folder.tta, folder.scale)
    return [rescale_labeled(item, folder.scale) for item in images], predictions


def describe_model(folder: ModelFolder) -> str:
    """The network, its kept weights and how it was trained, for the results' comment line."""
    training = folder.info.get("training") or {}
    kept = training.get("kept") or {}
    return (
        f"{folder.genome.name} width {folder.genome.base_width} with the {folder.auxiliary} head, "
        f"weights of step {kept.get('step', '?')} ({training.get('steps', '?')} steps trained), scale {folder.scale:g}, "
        f"test-time augmentation {folder.tta}"
    )


def _numbers(parser: argparse.ArgumentParser, option: str, text: str, kind: type = int) -> list:
    """Sorted distinct numbers (``kind``: int or float) of a comma-separated option (at least one)."""
    noun = "integers" if kind is int else "numbers"
    try:
        values = sorted({kind(value) for value in text.split(",") if value.strip()})
    except ValueError:
        parser.error(f"{option}: comma-separated {noun}, got {text!r}")
    if not values or min(values) < 0:
        parser.error(f"{option}: give at least one of the {noun}, none negative, got {text!r}")
    return values


def counting_grid(parser: argparse.ArgumentParser, args: argparse.Namespace) -> CalibrationGrid:
    """The calibration grid of the options: bead-sized minimum areas and, where given, seed thresholds and peak windows."""
    changes: dict[str, tuple] = {"min_area": tuple(_numbers(parser, "--min-areas", args.min_areas))}
    if args.seed_thresholds:
        changes["seed_threshold"] = tuple(_numbers(parser, "--seed-thresholds", args.seed_thresholds, float))
    if args.peak_windows:
        changes["watershed_min_distance"] = tuple(_numbers(parser, "--peak-windows", args.peak_windows))
    if args.min_peak_probabilities:
        changes["min_peak_probability"] = tuple(_numbers(parser, "--min-peak-probabilities", args.min_peak_probabilities, float))
    try:
        return CalibrationGrid(**changes)
    except SkipnasError as error:
        parser.error(str(error))


def describe_grid(grid: CalibrationGrid) -> str:
    """The grid's settings that the options change, for the results' comment line."""
    text = f"calibration min areas {','.join(map(str, grid.min_area))}"
    text += f", seed thresholds {','.join(f'{value:g}' for value in grid.seed_threshold)}"
    if grid.watershed_min_distance is not None:
        text += f", peak windows {','.join(map(str, grid.watershed_min_distance))} px"
    if any(grid.min_peak_probability):
        text += f", min peak probabilities {','.join(f'{value:g}' for value in grid.min_peak_probability)}"
    return text


def unseen_particles(prob: np.ndarray, instances: np.ndarray, config: PostprocessConfig) -> int:
    """How many true particles have no pixel in the mask ``config`` makes of ``prob``: none of them can be counted."""
    mask = mask_from_probabilities(prob, config) > 0
    ids = np.unique(instances[instances > 0])
    seen = np.unique(instances[mask & (instances > 0)])
    return int(len(ids) - len(seen))


ERROR_KINDS: tuple[str, ...] = ("missed", "merged", "split", "false_positives")


def error_kinds(labels: np.ndarray, instances: np.ndarray) -> dict[str, int]:
    """How the counted ``labels`` (0 background) err against the true ``instances``, particle by particle.

    A counted particle lies on the true particle holding most of its pixels, when true particles
    hold at least half of them; otherwise it is a false positive. A true particle on which no counted
    particle lies is missed when no counted particle covers any of its pixels, and merged (into a
    neighbour's particle) when one does; each further particle lying on one true particle is a split.
    So found - true = split + false_positives - missed - merged, exactly.
    """
    kinds = dict.fromkeys(ERROR_KINDS, 0)
    lies_on = np.zeros(int(instances.max(initial=0)) + 1, np.int64)
    for particle in np.unique(labels[labels > 0]):
        under = instances[labels == particle]
        on_particles = under[under > 0]
        if 2 * len(on_particles) < len(under):
            kinds["false_positives"] += 1
        else:
            lies_on[np.bincount(on_particles).argmax()] += 1
    for true_id in np.unique(instances[instances > 0]):
        if lies_on[true_id] == 0:
            covered = bool((labels[instances == true_id] > 0).any())
            kinds["merged" if covered else "missed"] += 1
        else:
            kinds["split"] += int(lies_on[true_id]) - 1
    return kinds


def count_by_method(
    val: Sequence[LabeledImage],
    val_predictions: Sequence[Prediction],
    test: Sequence[LabeledImage],
    test_predictions: Sequence[Prediction],
    target: str,
    grid: CalibrationGrid,
) -> list[dict[str, object]]:
    """One row per counting method: calibrated on val (grid restricted to the method), scored on test,
    with the method's ceiling on the true masks and, for the learned map, where its error comes from."""
    val_probs = [p.foreground for p in val_predictions]
    val_maps = auxiliary_maps(val_predictions)
    test_probs = [p.foreground for p in test_predictions]
    predicted_maps = auxiliary_maps(test_predictions)
    truth = [count_instances(item.instances) for item in test]
    true_masks = [(item.instances > 0).astype(np.float32) for item in test]
    true_maps = [auxiliary_target(target, item.instances) for item in test]

    def counts(probs: list[np.ndarray], maps: list[np.ndarray] | None, config: PostprocessConfig) -> list[int]:
        extras = maps if maps is not None else [None] * len(probs)
        return [count_particles(prob, config, extra).count for prob, extra in zip(probs, extras, strict=True)]

    def relative_error(found: list[int]) -> float:
        return round(count_metrics(found, truth)["relative_count_error"], 3)

    rows: list[dict[str, object]] = []
    for method in METHODS:
        only = dataclasses.replace(grid, methods=(method,))
        best, _ = calibrate(val_probs, [item.instances for item in val], grid=only, auxiliary=val_maps)
        # the best any calibration could do with these predictions: calibrated on the test images themselves
        on_test, _ = calibrate(test_probs, [item.instances for item in test], grid=only, auxiliary=predicted_maps)
        detections: list[Detections] = [
            count_particles(prob, best, extra) for prob, extra in zip(test_probs, predicted_maps or [None] * len(test), strict=True)
        ]
        evaluation = Evaluation()
        kinds = dict.fromkeys(ERROR_KINDS, 0)
        for prob, found, item in zip(test_probs, detections, test, strict=True):
            evaluation.add_detections(found, item.instances, item.stem, foreground=as_probabilities(prob) > best.threshold)
            for kind, number in error_kinds(found.labels, item.instances).items():
                kinds[kind] += number
        metrics = evaluation.summary()
        predicted_counts = [found.count for found in detections]
        # the true masks need no threshold or morphology
        on_true_masks = best.replace(threshold=0.5, erode=0, dilate=0)
        rows.append(
            {
                "method": method,
                "calibrated": describe(best),
                "test_images": len(test),
                "test_particles": sum(truth),
                **{key: round(metrics[key], 3) for key in (
                    "relative_count_error", "count_mae", "exact_count_accuracy", "dice", "object_precision", "object_recall"
                )},
                # summed over images: how the count errs, and the beads without one pixel of the mask
                "too_many": sum(max(found - true, 0) for found, true in zip(predicted_counts, truth, strict=True)),
                "too_few": sum(max(true - found, 0) for found, true in zip(predicted_counts, truth, strict=True)),
                "unseen_particles": sum(unseen_particles(prob, item.instances, best) for prob, item in zip(test_probs, test, strict=True)),
                # particle by particle, summed over images: found - true = split + false positives - missed - merged
                **kinds,
                "test_calibrated_relative_count_error": relative_error(counts(test_probs, predicted_maps, on_test)),
                # where the error comes from: the method on the true masks (with the true map: its ceiling),
                # and, for the learned map, each of mask and map swapped for the truth
                "ceiling_relative_count_error": relative_error(counts(true_masks, true_maps, on_true_masks)),
                "true_map_on_predicted_mask": relative_error(counts(test_probs, true_maps, best)) if method in AUXILIARY_METHODS else "",
                "predicted_map_on_true_mask": (
                    relative_error(counts(true_masks, predicted_maps, on_true_masks)) if method in AUXILIARY_METHODS else ""
                ),
            }
        )
        print(rows[-1])
    return rows


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    train_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--train-seeds", default="0", metavar="S,S,...",
        help="demo draws whose train and val splits train the network and calibrate the counting (default 0: the "
        "demo's own; each draw adds about 130 training beads)",
    )
    parser.add_argument(
        "--extra-train-seeds", default="", metavar="S,S,...",
        help="demo draws whose train and val splits both only train (neither keep weights nor calibrate) (default none)",
    )
    parser.add_argument(
        "--calibrate-seeds", default="", metavar="S,S,...",
        help="demo draws whose val splits also calibrate the counting (not the weights kept) (default none)",
    )
    parser.add_argument("--test-seeds", default="0", metavar="S,S,...", help="demo draws whose test splits are counted (default 0)")
    parser.add_argument("--model", type=Path, default=None, metavar="DIR", help="keep the trained model folder here")
    parser.add_argument(
        "--from-model", type=Path, default=None, metavar="DIR",
        help="count with this model folder (kept by --model) instead of training one; options after -- are refused",
    )
    parser.add_argument(
        "--min-areas", default="0,10,20,30,100", metavar="PX,PX,...",
        help="minimum areas the calibration tries (default: bead-sized steps, finer than the search's grid)",
    )
    parser.add_argument(
        "--seed-thresholds", default="", metavar="T,T,...",
        help="seed thresholds the calibration tries with the seeded method (default the grid's: 0.3,0.5,0.7)",
    )
    parser.add_argument(
        "--peak-windows", default="", metavar="PX,PX,...",
        help="peak windows (watershed_min_distance, px) the calibration tries with watershed and seeded (default the grid's: 3,5,10)",
    )
    parser.add_argument(
        "--min-peak-probabilities", default="", metavar="P,P,...",
        help="the least highest probability a particle needs, values the calibration tries (default the grid's: 0, no filter)",
    )
    parser.add_argument("--smoke", action="store_true", help="two draws and a tiny network trained a few steps: checks the script runs")
    parser.add_argument("--out", type=Path, default=Path("experiments/results/touching_particles.csv"))
    args = parser.parse_args(argv)
    if args.from_model is not None and (args.extra_train_seeds.strip() or train_args):
        parser.error("--from-model trains nothing; leave out --extra-train-seeds and the training options after --")
    if args.smoke:
        args.test_seeds, args.train_seeds = "0,1", "0,1"
        train_args = [*SMOKE_TRAINING, *train_args] if args.from_model is None else []
    seeds = {
        option: _numbers(parser, option, text) if text.strip() else []
        for option, text in (
            ("--train-seeds", args.train_seeds), ("--test-seeds", args.test_seeds),
            ("--calibrate-seeds", args.calibrate_seeds), ("--extra-train-seeds", args.extra_train_seeds),
        )
    }
    if not seeds["--train-seeds"] or not seeds["--test-seeds"]:
        parser.error("--train-seeds and --test-seeds: give at least one demo draw each")
    earlier: set[int] = set(seeds["--train-seeds"])
    for option in ("--calibrate-seeds", "--extra-train-seeds"):
        if set(seeds[option]) & earlier:
            parser.error(f"{option}: {sorted(set(seeds[option]) & earlier)} already train or calibrate; give each draw one role")
        earlier |= set(seeds[option])
    grid = counting_grid(parser, args)

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        root = write_beads_dataset(Path(scratch) / "beads", seeds["--train-seeds"], seeds["--extra-train-seeds"], seeds["--test-seeds"])
        model_dir = args.from_model or args.model or Path(scratch) / "model"
        if args.from_model is None:
            code = skipnas_main(["train", "--data", str(root), *train_args, "--out", str(model_dir)])
            if code:
                sys.exit(code)
        try:
            folder = load_model_folder(model_dir)
        except SkipnasError as error:
            parser.error(f"--from-model: {error}")
        index = check_dataset(root)
        val = load_split(index, "val")
        calibration_root = Path(scratch) / "calibration"
        for demo_seed in seeds["--calibrate-seeds"]:
            write_class_subset(demo_dataset_path(demo_seed), calibration_root, prefix=f"seed{demo_seed}-", splits=("val",))
        if seeds["--calibrate-seeds"]:
            val += load_split(check_dataset(calibration_root), "val")
        val, val_predictions = predict_at_model_scale(folder, val)
        test, test_predictions = predict_at_model_scale(folder, load_split(index, "test"))
    rows = count_by_method(val, val_predictions, test, test_predictions, folder.auxiliary or "distance", grid)
    listed = {option: ",".join(map(str, values)) for option, values in seeds.items()}
    trained = f"the model in {args.from_model}" if args.from_model else f"trained by skipnas train {' '.join(train_args)}".rstrip()
    calibration = f" and the val splits of demo seeds {listed['--calibrate-seeds']}" if seeds["--calibrate-seeds"] else ""
    extra = (
        f", also trained on the train and val splits of demo seeds {listed['--extra-train-seeds']}" if seeds["--extra-train-seeds"] else ""
    )
    comment = (
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {describe_machine()}, demo beads only, {describe_model(folder)}, "
        f"{trained}, {time.perf_counter() - started:.0f} s, counting calibrated on the val splits of demo seeds "
        f"{listed['--train-seeds']}{calibration}{extra}, test splits of demo seeds {listed['--test-seeds']}, {describe_grid(grid)}"
    )
    write_csv_atomic(args.out, rows, comment=comment)


if __name__ == "__main__":
    main()
