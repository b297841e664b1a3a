"""Calibrate a trained model folder's counting again, on other or more labelled images, without training.

Training calibrates the counting (threshold, morphology, minimum area, splitting method) on the
validation split, often a handful of images; a setting chosen on a few images can be extreme. With
more annotated images, or images from another microscope, :func:`recalibrate_model_folder` predicts
them with the folder's network and chooses the setting again on all of them, the way training did
(:func:`~skipnas.candidate.calibrate_counting`, the same grid, its minimum areas following these
images' particles). The weights do not change. Test images are refused: a split that chose the
counting no longer measures it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skipnas.candidate import calibrate_counting, evaluate_predictions
from skipnas.counting.calibrate import CalibrationGrid, check_selection
from skipnas.counting.postprocess import PostprocessConfig, PostprocessConfigError, describe, write_postprocess_config
from skipnas.data.loading import LabeledImage, load_labeled
from skipnas.data.particles import min_area_grid
from skipnas.data.scan import resolve_dataset
from skipnas.data.statistics import particle_sizes
from skipnas.data.validate import check_dataset
from skipnas.errors import SkipnasError
from skipnas.fileio import write_json_atomic
from skipnas.modelio import (
    METRICS_FILE,
    MODEL_FOLDER_FILES,
    POSTPROCESS_FILE,
    ModelFolder,
    check_model_target,
    derive_model_folder,
    load_model_folder,
)
from skipnas.predict import predict_images
from skipnas.runtime.device import place_model, select_device

CALIBRATION_SPLITS = ("train", "val")


@dataclass(frozen=True)
class Recalibration:
    model_dir: Path  # where the recalibrated folder was written
    data: str  # the dataset folder calibrated on
    splits: tuple[str, ...]
    images: int
    previous: PostprocessConfig  # the folder's counting before
    postprocess: PostprocessConfig  # the counting chosen now
    before: dict[str, Any]  # the previous counting's metrics on the calibration images
    after: dict[str, Any]  # the new counting's metrics on them: selection scores
    record: dict[str, Any]  # why it was chosen, as written to postprocess.json

    @property
    def changed(self) -> bool:
        return self.postprocess != self.previous


def check_calibration_splits(splits: Sequence[str]) -> tuple[str, ...]:
    """``splits`` without repeats, each a split counting may be calibrated on (never test)."""
    chosen = tuple(dict.fromkeys(splits))
    if not chosen:
        raise SkipnasError("give at least one split to calibrate on: --split val")
    for split in chosen:
        if split == "test":
            raise SkipnasError(
                "--split test: the test split measures the counting and must not choose it; calibrate on val "
                "(and train), then run skipnas evaluate --split test"
            )
        if split not in CALIBRATION_SPLITS:
            raise SkipnasError(f"--split must be one of {', '.join(CALIBRATION_SPLITS)}, got {split!r}")
    return chosen


def folder_grid(folder: ModelFolder) -> tuple[CalibrationGrid | None, str]:
    """The calibration grid and selection rule the folder's training used (defaults for older folders)."""
    train_config = folder.info.get("train_config") or {}
    stored = train_config.get("count_grid")
    try:
        grid = CalibrationGrid.from_dict(stored) if isinstance(stored, dict) else None
    except (PostprocessConfigError, TypeError):
        raise SkipnasError(f"{folder.path / 'model.json'}: train_config.count_grid is not a calibration grid; re-export the model folder") from None
    return grid, str(train_config.get("calibration_selection", "stable"))


def recalibrate_model_folder(
    model_dir: str | os.PathLike[str],
    data: str | Path,
    splits: Sequence[str] = ("val",),
    out: str | os.PathLike[str] | None = None,
    device: str = "auto",
    overlap: int = 32,
    overwrite: bool = False,
    selection: str | None = None,
) -> Recalibration:
    """Choose the folder's counting setting again on the labelled images of ``splits`` of ``data``
    and write the folder with it to ``out`` (None: the folder itself; only ``postprocess.json`` and
    ``metrics.json`` change, atomically). ``selection``: the rule that chooses
    (:data:`~skipnas.counting.calibrate.SELECTIONS`; None: the one the folder's training used).
    ``metrics.json`` then holds the new counting's metrics on
    those images, and ``postprocess.json``'s calibration record names them."""
    splits = check_calibration_splits(splits)
    if selection is not None:
        check_selection(selection, "--selection")  # before the model is loaded and the images predicted
    source = Path(model_dir)
    setup = select_device(device)
    folder = load_model_folder(source, map_location=setup.device)
    target = check_model_target(source if out is None else out, overwrite)
    index = check_dataset(resolve_dataset(data))
    images: list[LabeledImage] = []
    for split in splits:
        images += load_labeled(index.samples(split))
    if not images:
        raise SkipnasError(f"{index.root}: no labelled images in {' or '.join(splits)}; add masks or choose another --split")
    grid, trained_with = folder_grid(folder)
    # the minimum areas follow the particles of the images calibrated on, at the network's scale: the
    # training split's where it is among them (it holds the most), as skipnas train takes them
    areas = min_area_grid(particle_sizes(index, "train" if "train" in splits else splits[0]), folder.scale)
    grid = dataclasses.replace(grid or CalibrationGrid(), min_area=areas)
    place_model(folder.model, setup)
    predictions = predict_images(
        folder.model, images, folder.normalisation, setup, folder.tile, overlap, folder.tta, folder.scale
    )
    before = evaluate_predictions(predictions, images, folder.postprocess)
    counting = calibrate_counting(predictions, images, grid, selection or trained_with)
    record = {
        **counting.record,
        "calibrated_on": {"data": str(index.root), "splits": list(splits), "images": len(images)},
        "previous": describe(folder.postprocess),
    }
    if "train" in splits:
        record["note"] = "the train images were trained on: the network predicts them better than new images"
    metrics = {**counting.metrics, "split": "+".join(splits), "data": str(index.root)}

    def write(staging: Path) -> None:
        write_postprocess_config(staging / POSTPROCESS_FILE, counting.postprocess, record)
        write_json_atomic(staging / METRICS_FILE, metrics)

    derive_model_folder(source, target, [n for n in MODEL_FOLDER_FILES if n not in (POSTPROCESS_FILE, METRICS_FILE)], write, overwrite)
    return Recalibration(
        target, str(index.root), splits, len(images), folder.postprocess, counting.postprocess, before, counting.metrics, record
    )


__all__: Sequence[str] = ("Recalibration", "check_calibration_splits", "recalibrate_model_folder")
