"""Evaluate a model folder on a dataset split, the way the field measures it."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from skipnas.candidate import evaluate_predictions
from skipnas.counting.postprocess import describe
from skipnas.data.loading import LabeledImage, load_labeled
from skipnas.data.scan import resolve_dataset
from skipnas.data.validate import check_dataset
from skipnas.errors import SkipnasError
from skipnas.modelio import ModelFolder, load_model_folder
from skipnas.predict import predict_images
from skipnas.runtime.device import DeviceSetup, place_model, select_device

SPLITS = ("train", "val", "test")


def evaluate_model_folder(
    model_dir: str | os.PathLike[str],
    data: str | Path,
    split: str = "val",
    device: str = "auto",
    overlap: int = 32,
    tta: str | None = None,
) -> dict[str, Any]:
    """Pixel and counting metrics of a model folder on one split's labelled images.

    Unlabelled images of the split (test images without masks) are skipped and counted in
    ``unlabelled_images``. ``counting_method`` names the method that counted (``"seeded"`` counts
    from the auxiliary head, named in ``auxiliary``), ``postprocess`` all its settings. ``tta`` is the
    test-time augmentation (None: the one the folder's counting was calibrated with).
    """
    if split not in SPLITS:
        raise SkipnasError(f"--split must be one of {', '.join(SPLITS)}, got {split!r}")
    setup = select_device(device)
    folder = load_model_folder(model_dir, map_location=setup.device)
    tta = folder.tta_for(tta)
    index = check_dataset(resolve_dataset(data))
    samples = index.samples(split)
    images = load_labeled(samples)
    if not images:
        raise SkipnasError(f"{index.root}: the {split} split has no labelled images; add masks or choose another --split")
    metrics = _evaluate_folder(folder, images, setup, overlap, tta)
    metrics.update({"split": split, "data": str(index.root), "unlabelled_images": len(samples) - len(images)})
    return metrics


def evaluate_images(
    model_dir: str | os.PathLike[str],
    images: Sequence[LabeledImage],
    device: str = "auto",
    overlap: int = 32,
    tta: str | None = None,
) -> dict[str, Any]:
    """:func:`evaluate_model_folder`'s metrics on labelled images already in memory (no split, no
    dataset check): for callers that score many folders on the same images."""
    setup = select_device(device)
    folder = load_model_folder(model_dir, map_location=setup.device)
    return _evaluate_folder(folder, images, setup, overlap, folder.tta_for(tta))


def _evaluate_folder(
    folder: ModelFolder, images: Sequence[LabeledImage], setup: DeviceSetup, overlap: int, tta: str
) -> dict[str, Any]:
    """``tta``: resolved by the folder (:meth:`ModelFolder.tta_for`)."""
    place_model(folder.model, setup)
    predictions = predict_images(folder.model, images, folder.normalisation, setup, folder.tile, overlap, tta, folder.scale)
    postprocess = folder.postprocess
    metrics = evaluate_predictions(predictions, images, postprocess)
    metrics.update(
        {
            "model": str(folder.path),
            "topology": folder.genome.name,
            "counting_method": postprocess.method,
            "auxiliary": folder.auxiliary,
            "postprocess": describe(postprocess),
            "tta": tta,
            "input_scale": folder.scale,
            "calibrated_tta": folder.tta,
        }
    )
    return metrics
