"""Touching round particles: the demo's bead clusters, counted by each method from one network.

    python experiments/touching_particles.py --train-seeds 0,1,2,3 --test-seeds 0,1,2,3 \
        --predictions beads.npz --out experiments/results/touching_particles.csv
    python experiments/touching_particles.py --smoke --out /tmp/touching.csv

1. a dataset made from the demo data in which only the beads (round, in clusters of touching
   beads) are labelled; the other particles stay in the images, unlabelled, as clutter.
   ``--train-seeds`` pools the train and val splits of several demo draws (same generator, other
   seeds): the demo's own 32 training images hold only about 130 beads;
2. one `standard` U-Net trained on it with an auxiliary head (``--auxiliary``: the distance map
   or centre peaks; semi-synthetic pretraining, then fine-tuning);
3. for each counting method, the post-processing is calibrated on val with the grid restricted
   to that method, and the test split is counted with it. ``--test-seeds`` adds the test splits of
   other draws (images the network never saw), because the demo's own test split holds only about
   33 beads: one bead is 3 percentage points. The same counting of the true masks (the ceiling of
   each method) comes alongside, and for the learned map where its error comes from: the true map
   on the predicted mask, and the predicted map on the true mask.

``--keep-best count`` keeps the fine-tuning weights that count the val beads best (every
validation calibrates the counting, with the ``--min-areas`` grid) instead of those of the best
pixel Dice. ``--particle-weight`` adds the per-particle Dice term to the loss, so a faint bead the
network misses costs as much as any other bead. ``--augment-contrast`` adds random brightness and
contrast to the training tiles (camouflaged beads are low-contrast beads). ``--model`` keeps the
trained model folder, and ``--from-model`` predicts with a kept one instead of training.
``--tta`` averages each prediction over mirrored views (test-time augmentation) before counting.
``--calibrate-seeds`` adds the val splits of further draws (never trained on) to the images the
counting is calibrated on, and ``--extra-train-seeds`` the train and val splits of further draws
to the training images alone (more beads to learn from; the weights kept and the calibration are
unchanged). ``--predictions`` keeps what the network predicted, so the counting can
be re-run (another ``--min-areas``, changed counting code) without training again, and
``--average`` counts the mean of several such files (an ensemble of networks, or of training
seeds).

Writes one CSV row per method: test relative count error, count MAE, exact-count accuracy, Dice,
the beads counted too many and too few (summed over images), the beads with no pixel of the
calibrated mask at all, the errors particle by particle (beads missed, merged into a neighbour's
particle or split, and false positives: :func:`error_kinds`), and the test error of the counting
calibrated on the test images themselves, the best any calibration could do with the network.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np

from skipnas.auxiliary import AUXILIARY_TARGETS
from skipnas.candidate import prepare_data, train_candidate
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
from skipnas.data.augment import AugmentConfig
from skipnas.data.demo import class_instances, demo_classes, demo_dataset_path
from skipnas.data.io import count_instances, read_raw, write_image, write_mask
from skipnas.data.loading import LabeledImage
from skipnas.data.validate import check_dataset
from skipnas.errors import SkipnasError
from skipnas.fileio import atomic_open, write_csv_atomic
from skipnas.genome import Genome
from skipnas.modelio import load_model_folder
from skipnas.predict import Prediction, auxiliary_maps, predict_images
from skipnas.runtime.device import describe_machine, place_model, select_device
from skipnas.runtime.metrics import count_metrics
from skipnas.train.config import KEEP_BEST_BY, SCHEDULERS, PhaseConfig, TrainConfig
from skipnas.train.data import load_split
from skipnas.train.losses import LossConfig, check_loss_weight
from skipnas.tta import TTA_MODES


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


def write_panels(folder: Path, images: Sequence[LabeledImage], predictions: Sequence[Prediction], target: str) -> None:
    """Per test image (named by its stem), side by side: the image, the true auxiliary target and the predicted one."""
    folder.mkdir(parents=True, exist_ok=True)
    for item, prediction in zip(images, predictions, strict=True):
        grey = (item.image if item.image.ndim == 2 else item.image[..., 0]).astype(np.float32)
        grey = (255 * (grey - grey.min()) / max(float(np.ptp(grey)), 1e-6)).astype(np.uint8)
        true = (255 * auxiliary_target(target, item.instances)).astype(np.uint8)
        predicted = (255 * prediction.auxiliary).astype(np.uint8)
        panel = np.concatenate([grey, true, predicted], axis=1)
        cv2.imwrite(str(folder / f"{item.stem}.png"), cv2.resize(panel, None, fx=3, fy=3, interpolation=cv2.INTER_NEAREST))


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


@dataclass
class Predicted:
    """What the network predicted for the val and test images, with the images and their truth:
    everything counting needs, so counting can be re-run without training again."""

    val: list[LabeledImage]
    val_predictions: list[Prediction]
    test: list[LabeledImage]
    test_predictions: list[Prediction]
    own_test: int  # the first own_test test images are the demo's own test split (seed 0)
    description: str  # machine, network, training and data, for the results' comment line
    auxiliary: str = "distance"  # the auxiliary head's target

    def save(self, path: Path) -> None:
        arrays: dict[str, np.ndarray] = {}
        for split, images, predictions in (("val", self.val, self.val_predictions), ("test", self.test, self.test_predictions)):
            arrays[f"{split}_stems"] = np.array([item.stem for item in images])
            arrays[f"{split}_images"] = np.stack([item.image for item in images])
            arrays[f"{split}_instances"] = np.stack([item.instances for item in images])
            arrays[f"{split}_classes"] = np.stack([p.classes for p in predictions])
            arrays[f"{split}_auxiliary"] = np.stack([p.auxiliary for p in predictions])
        with atomic_open(path, "wb") as handle:
            np.savez_compressed(handle, own_test=self.own_test, description=self.description, auxiliary=self.auxiliary, **arrays)

    @classmethod
    def load(cls, path: Path) -> Predicted:
        with np.load(path) as saved:
            splits = {}
            for split in ("val", "test"):
                images = [
                    LabeledImage(str(stem), image, instances)
                    for stem, image, instances in zip(saved[f"{split}_stems"], saved[f"{split}_images"], saved[f"{split}_instances"], strict=True)
                ]
                predictions = [Prediction(classes, auxiliary) for classes, auxiliary in zip(saved[f"{split}_classes"], saved[f"{split}_auxiliary"], strict=True)]
                splits[split] = (images, predictions)
            # files saved before the centre target have no 'auxiliary': they hold distance maps
            auxiliary = str(saved["auxiliary"]) if "auxiliary" in saved.files else "distance"
            return cls(*splits["val"], *splits["test"], int(saved["own_test"]), str(saved["description"]), auxiliary)

    @classmethod
    def mean(cls, paths: Sequence[Path]) -> Predicted:
        """The pixel-wise mean of the predictions saved in ``paths``: the same images, predicted by several networks."""
        loaded = [cls.load(path) for path in paths]
        first = loaded[0]
        for path, other in zip(paths[1:], loaded[1:]):
            same_images = all(
                [a.stem for a in mine] == [b.stem for b in theirs] and all(np.array_equal(a.instances, b.instances) for a, b in zip(mine, theirs))
                for mine, theirs in ((first.val, other.val), (first.test, other.test))
            )
            if not same_images or other.auxiliary != first.auxiliary or other.own_test != first.own_test:
                raise ValueError(f"{path} holds other images or another auxiliary target than {paths[0]}; average predictions of the same images")

        def mean_of(split: str) -> list[Prediction]:
            per_model = [getattr(item, split) for item in loaded]
            return [
                Prediction(
                    np.mean([p.classes for p in predictions], axis=0),
                    None if predictions[0].auxiliary is None else np.mean([p.auxiliary for p in predictions], axis=0),
                )
                for predictions in zip(*per_model, strict=True)
            ]

        sources = "; ".join(f"{path}: {item.description}" for path, item in zip(paths, loaded))
        description = f"the mean of {len(paths)} networks' predictions ({sources})"
        return cls(first.val, mean_of("val_predictions"), first.test, mean_of("test_predictions"), first.own_test, description, first.auxiliary)


def train_and_predict(
    args: argparse.Namespace,
    test_seeds: Sequence[int],
    train_seeds: Sequence[int],
    grid: CalibrationGrid,
    calibrate_seeds: Sequence[int] = (),
    extra_train_seeds: Sequence[int] = (),
) -> Predicted:
    """Train the network on the beads of the ``train_seeds`` draws (and on both the train and val
    splits of the ``extra_train_seeds`` draws) and predict their val, the ``calibrate_seeds``' val
    and the ``test_seeds``' test images."""
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch) / "beads"
        for demo_seed in train_seeds:
            write_class_subset(demo_dataset_path(demo_seed), root, prefix=f"seed{demo_seed}-", splits=("train", "val"))
        for demo_seed in extra_train_seeds:
            write_class_subset(demo_dataset_path(demo_seed), root, prefix=f"seed{demo_seed}-", splits=("train", "val"), into="train")
        config = TrainConfig(
            pretrain=PhaseConfig(seconds=args.pretrain_seconds, steps=args.pretrain_steps, lr=1e-3),
            finetune=PhaseConfig(seconds=args.finetune_seconds, steps=args.finetune_steps, lr=5e-4),
            synthetic_images=8 if args.smoke else 64,
            loss=LossConfig(particle_weight=args.particle_weight),
            augment=AugmentConfig(brightness_contrast=args.augment_contrast),
            auxiliary=args.auxiliary,
            auxiliary_weight=args.auxiliary_weight,
            early_stopping=None,  # the whole budget: validation Dice stops improving before the cores sharpen
            keep_best_by=args.keep_best,
            scheduler=args.scheduler,
            count_grid=grid,
            seed=args.seed,
        )
        started = time.perf_counter()
        if args.from_model is not None:
            # the same val split calibrates: the folder's own data are the same demo draws
            data = prepare_data(root, dataclasses.replace(config, synthetic_images=0))
            folder = load_model_folder(args.from_model)
            setup = select_device("cpu")
            model = place_model(folder.model, setup)
            target = folder.auxiliary or "distance"
        else:
            data = prepare_data(root, config)
            genome = Genome.named("standard", base_width=args.width)
            result = train_candidate(genome, data, config, out=args.model, progress=False)
            model, setup = result.training.model, result.training.setup
            target = args.auxiliary

        def beads_of(split_name: str, demo_seeds: Sequence[int]) -> tuple[list[LabeledImage], int]:
            """The beads-only ``split_name`` images of these draws (stems ``seed<N>-...``), and how many are seed 0's."""
            images: list[LabeledImage] = []
            own = 0
            for demo_seed in demo_seeds:
                beads = write_class_subset(
                    demo_dataset_path(demo_seed), Path(scratch) / f"{split_name}-seed{demo_seed}", prefix=f"seed{demo_seed}-", splits=(split_name,)
                )
                split = load_split(check_dataset(beads), split_name)
                images += split
                own += len(split) if demo_seed == 0 else 0
            return images, own

        test, own_test = beads_of("test", test_seeds)
        val = list(data.val) + beads_of("val", calibrate_seeds)[0]
        val_predictions = predict_images(model, val, data.normalisation, setup, config.val_tile, config.val_overlap, args.tta)
        test_predictions = predict_images(model, test, data.normalisation, setup, config.val_tile, config.val_overlap, args.tta)
        seconds = time.perf_counter() - started
        if args.panels is not None:
            write_panels(args.panels, test, test_predictions, target)
    tta = f", test-time augmentation {args.tta}" if args.tta != "none" else ""
    calibration = f" and the val splits of demo seeds {','.join(map(str, calibrate_seeds))}" if calibrate_seeds else ""
    extra = f", also trained on the train and val splits of demo seeds {','.join(map(str, extra_train_seeds))}" if extra_train_seeds else ""
    if args.from_model is not None:
        kept_step = (folder.info.get("training", {}).get("kept") or {}).get("step", "?")
        description = (
            f"{describe_machine()}, demo beads only, the model in {args.from_model} ({folder.genome.name} width "
            f"{folder.genome.base_width} with the {folder.auxiliary} head, weights of step {kept_step}){tta}, "
            f"predicted in {seconds:.0f} s, calibrated on the val splits of demo seeds {','.join(map(str, train_seeds))}{calibration}, "
            f"test splits of demo seeds {','.join(map(str, test_seeds))}"
        )
        return Predicted(val, val_predictions, test, test_predictions, own_test, description, target)
    training = result.training
    kept = training.kept or training.history[-1]
    top_dice = max((r for r in training.history if r.phase == "finetune"), key=lambda r: r.val_dice, default=kept)
    description = (
        f"{describe_machine()}, demo beads only, standard width {args.width} with the {args.auxiliary} head, training seed {args.seed}"
        + (f", particle loss weight {args.particle_weight:g}" if args.particle_weight else "")
        + (", brightness-contrast augmentation" if args.augment_contrast else "")
        + (f", {args.scheduler} learning-rate schedule" if args.scheduler != "plateau" else "")
        + (f", auxiliary loss weight {args.auxiliary_weight:g}" if args.auxiliary_weight != 1.0 else "")
        + tta
        + f", {training.steps} "
        f"training steps in {seconds:.0f} s ({len(training.history)} validations, final learning rate {training.history[-1].lr:.2g}; "
        f"weights of step {kept.step} kept by best {args.keep_best}: {kept.scores()}; "
        f"best validation Dice {top_dice.val_dice:.3f} at step {top_dice.step}), "
        f"trained and calibrated on the train and val splits of demo seeds {','.join(map(str, train_seeds))}{calibration}{extra}, "
        f"test splits of demo seeds {','.join(map(str, test_seeds))}"
    )
    return Predicted(val, val_predictions, test, test_predictions, own_test, description, target)


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


def count_by_method(predicted: Predicted, grid: CalibrationGrid) -> list[dict[str, object]]:
    """One row per counting method: calibrated on val (grid restricted to the method), scored on test,
    with the method's ceiling on the true masks and, for the learned map, where its error comes from."""
    test = predicted.test
    val_probs = [p.foreground for p in predicted.val_predictions]
    val_maps = auxiliary_maps(predicted.val_predictions)
    test_probs = [p.foreground for p in predicted.test_predictions]
    truth = [count_instances(item.instances) for item in test]
    true_masks = [(item.instances > 0).astype(np.float32) for item in test]
    true_maps = [auxiliary_target(predicted.auxiliary, item.instances) for item in test]
    predicted_maps = auxiliary_maps(predicted.test_predictions)
    own_test = predicted.own_test

    def counts(probs: list[np.ndarray], maps: list[np.ndarray] | None, config: PostprocessConfig) -> list[int]:
        extras = maps if maps is not None else [None] * len(probs)
        return [count_particles(prob, config, extra).count for prob, extra in zip(probs, extras, strict=True)]

    def kinds_of_error(detections: list[Detections]) -> dict[str, int]:
        totals = dict.fromkeys(ERROR_KINDS, 0)
        for found, item in zip(detections, test, strict=True):
            for kind, number in error_kinds(found.labels, item.instances).items():
                totals[kind] += number
        return totals

    def relative_error(found: list[int], images: int | None = None) -> float:
        return round(count_metrics(found[:images], truth[:images])["relative_count_error"], 3)

    rows: list[dict[str, object]] = []
    for method in METHODS:
        only = dataclasses.replace(grid, methods=(method,))
        best, _ = calibrate(val_probs, [item.instances for item in predicted.val], grid=only, auxiliary=val_maps)
        # the best any calibration could do with these predictions: calibrated on the test images themselves
        on_test, _ = calibrate(test_probs, [item.instances for item in test], grid=only, auxiliary=predicted_maps)
        detections = [
            count_particles(prob, best, extra) for prob, extra in zip(test_probs, predicted_maps or [None] * len(test), strict=True)
        ]
        evaluation = Evaluation()
        for prob, found, item in zip(test_probs, detections, test, strict=True):
            evaluation.add_detections(found, item.instances, item.stem, foreground=as_probabilities(prob) > best.threshold)
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
                "relative_count_error": round(metrics["relative_count_error"], 3),
                # the demo's own test split alone (seed 0 comes first), when it was counted
                "relative_count_error_seed0": (
                    relative_error(predicted_counts, own_test) if own_test else ""
                ),
                "count_mae": round(metrics["count_mae"], 3),
                "exact_count_accuracy": round(metrics["exact_count_accuracy"], 3),
                "dice": round(metrics["dice"], 3),
                # summed over images: how the count errs, and the beads without one pixel of the mask
                "too_many": sum(max(found - true, 0) for found, true in zip(predicted_counts, truth, strict=True)),
                "too_few": sum(max(true - found, 0) for found, true in zip(predicted_counts, truth, strict=True)),
                "unseen_particles": sum(unseen_particles(prob, item.instances, best) for prob, item in zip(test_probs, test, strict=True)),
                # particle by particle (error_kinds), summed over images: found - true = split + false positives - missed - merged
                **kinds_of_error(detections),
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--pretrain-seconds", type=float, default=60.0)
    parser.add_argument("--finetune-seconds", type=float, default=240.0)
    parser.add_argument(
        "--pretrain-steps", type=int, default=None,
        help="also end pretraining after this many steps (whichever comes first): the same work on a busy machine",
    )
    parser.add_argument("--finetune-steps", type=int, default=None, help="the same for fine-tuning")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--keep-best", choices=KEEP_BEST_BY, default="dice",
        help="keep the fine-tuning weights of the best val Dice, or of the lowest calibrated val count MAE (default dice)",
    )
    parser.add_argument(
        "--particle-weight", type=float, default=0.0, metavar="W",
        help="weight of the per-particle Dice term in the loss (default 0: pixel losses only)",
    )
    parser.add_argument(
        "--augment-contrast", action="store_true", help="random brightness and contrast on the training tiles (default off)"
    )
    parser.add_argument(
        "--scheduler", choices=SCHEDULERS, default="plateau",
        help="the learning-rate schedule of both phases (default plateau; cosine: a half cosine over each phase's budget)",
    )
    parser.add_argument(
        "--auxiliary", choices=AUXILIARY_TARGETS, default="distance",
        help="the auxiliary head's target, whose cores seed the seeded counting (default distance)",
    )
    parser.add_argument(
        "--auxiliary-weight", type=float, default=1.0, metavar="W",
        help="weight of the auxiliary head's loss next to the segmentation loss (default 1)",
    )
    parser.add_argument("--model", type=Path, default=None, metavar="DIR", help="also keep the trained model folder here")
    parser.add_argument(
        "--from-model", type=Path, default=None, metavar="DIR",
        help="predict with this model folder (kept by --model) instead of training one; the training options are then unused",
    )
    parser.add_argument(
        "--tta", choices=TTA_MODES, default="none",
        help="test-time augmentation of the val and test predictions: none, flips (4 views) or dihedral (8) (default none)",
    )
    parser.add_argument(
        "--test-seeds", default="0", metavar="S,S,...",
        help="demo seeds whose test splits are counted (default 0: the demo's own test split)",
    )
    parser.add_argument(
        "--train-seeds", default="0", metavar="S,S,...",
        help="demo seeds whose train and val splits train the network and calibrate the counting (default 0: the "
        "demo's own; each further draw adds about 130 training beads)",
    )
    parser.add_argument(
        "--calibrate-seeds", default="", metavar="S,S,...",
        help="demo seeds whose val splits also calibrate the counting (not the weights kept); none of --train-seeds (default none)",
    )
    parser.add_argument(
        "--extra-train-seeds", default="", metavar="S,S,...",
        help="demo seeds whose train and val splits both only train (neither keep weights nor calibrate); none of "
        "--train-seeds or --calibrate-seeds (default none)",
    )
    parser.add_argument(
        "--average", default="", metavar="A.npz,B.npz,...",
        help="count the mean of these saved --predictions files (the same images, several networks) instead of training",
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
    parser.add_argument("--smoke", action="store_true", help="tiny width and a few steps: checks the script runs")
    parser.add_argument("--panels", type=Path, help="a folder for one PNG per test image: image, true and predicted core maps")
    parser.add_argument(
        "--predictions", type=Path, default=None, metavar="FILE.npz",
        help="keep the network's val and test predictions here; when the file exists, count them instead of training again",
    )
    parser.add_argument("--out", type=Path, default=Path("experiments/results/touching_particles.csv"))
    args = parser.parse_args()
    for option, name in (("--particle-weight", "particle_weight"), ("--auxiliary-weight", "auxiliary_weight")):
        try:
            check_loss_weight(name, getattr(args, name))
        except SkipnasError as error:
            parser.error(f"{option}: {error}")
    if args.smoke:
        args.width, args.pretrain_seconds, args.finetune_seconds, args.test_seeds, args.train_seeds = 4, 0.5, 1.0, "0,1", "0,1"
    test_seeds, train_seeds = (
        _numbers(parser, option, value) for option, value in (("--test-seeds", args.test_seeds), ("--train-seeds", args.train_seeds))
    )
    grid = counting_grid(parser, args)

    calibrate_seeds = _numbers(parser, "--calibrate-seeds", args.calibrate_seeds) if args.calibrate_seeds.strip() else []
    if set(calibrate_seeds) & set(train_seeds):
        parser.error(f"--calibrate-seeds: {sorted(set(calibrate_seeds) & set(train_seeds))} already calibrate, as --train-seeds")
    extra_train_seeds = _numbers(parser, "--extra-train-seeds", args.extra_train_seeds) if args.extra_train_seeds.strip() else []
    if set(extra_train_seeds) & (set(train_seeds) | set(calibrate_seeds)):
        parser.error(
            f"--extra-train-seeds: {sorted(set(extra_train_seeds) & (set(train_seeds) | set(calibrate_seeds)))} "
            "already train or calibrate, as --train-seeds or --calibrate-seeds"
        )
    if extra_train_seeds and args.from_model is not None:
        parser.error("--extra-train-seeds: --from-model trains nothing; leave out --extra-train-seeds, or --from-model to train")
    averaged = [Path(path) for path in args.average.split(",") if path.strip()]
    for path in averaged:
        if not path.is_file():
            parser.error(f"--average: {path} is not a file; give the --predictions files of earlier runs")

    if averaged:
        try:
            predicted = Predicted.mean(averaged)
        except ValueError as error:
            parser.error(f"--average: {error}")
        print(f"counting {predicted.description}")
    elif args.predictions is not None and args.predictions.exists():
        predicted = Predicted.load(args.predictions)
        print(f"counting the predictions in {args.predictions} ({predicted.description})")
    else:
        predicted = train_and_predict(args, test_seeds, train_seeds, grid, calibrate_seeds, extra_train_seeds)
        if args.predictions is not None:
            predicted.save(args.predictions)
    rows = count_by_method(predicted, grid)
    comment = f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {predicted.description}, {describe_grid(grid)}"
    write_csv_atomic(args.out, rows, comment=comment)


if __name__ == "__main__":
    main()
