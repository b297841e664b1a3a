"""Count particles in new images with a model folder: CSVs, overlays, a progress bar.

Writes into ``out_dir``: ``counts.csv`` (one row per image: file, count per class, and the true
count where a mask is found in a sibling ``masks/`` folder), ``particles.csv`` (one row per
particle: image, id, class, bounding box, area, equivalent diameter, length along the skeleton for a
model that counts fibres, confidence = mean probability inside it) and
``overlays/<image>.png`` with a numbered box per particle, so each detection can be checked and
false positives rejected by id, and ``summary.json`` (the model, the counting method and its
settings, the totals). Only the class channels are counted: a model's auxiliary map (its last
channel) is what ``method="seeded"`` counts them with. All files are written to a staging folder
and moved into ``out_dir`` together at the end, so a failure half-way leaves ``out_dir`` as it was.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import cv2
import numpy as np

from skipnas.counting.measure import equivalent_diameter, particle_length
from skipnas.counting.postprocess import Detections, count_per_class, describe
from skipnas.data.io import IMAGE_SUFFIXES, check_image_size, count_instances, read_image, read_mask
from skipnas.errors import SkipnasError
from skipnas.fileio import atomic_path, install_files, staging_dir, write_csv_atomic, write_json_atomic
from skipnas.modelio import ModelFolder, is_model_folder, load_model_folder
from skipnas.predict import Prediction, predict_image
from skipnas.progress import progress_bar
from skipnas.runtime.device import DeviceSetup, place_model, select_device
from skipnas.runtime.normalise import prepare_image

COUNTS_FILE = "counts.csv"
ENGINES = ("torch", "onnx")  # what runs the network: PyTorch, or the folder's model.onnx with onnxruntime
PARTICLES_FILE = "particles.csv"
SUMMARY_FILE = "summary.json"
OVERLAY_DIR = "overlays"
COUNT_FILES = (COUNTS_FILE, PARTICLES_FILE, SUMMARY_FILE)
PARTICLE_FIELDS = ["file", "id", "class", "x", "y", "width", "height", "area", "equivalent_diameter", "length", "confidence"]
# one BGR colour per class in overlays
_PALETTE = [(0, 200, 255), (80, 220, 80), (255, 120, 40), (200, 80, 255), (40, 40, 255)]


def _is_image(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def collect_images(inputs: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Image files from files and folders: a folder's images, its ``images/``, or its splits' ``images/``."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_file():
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                raise SkipnasError(f"{path}: not a supported image ({', '.join(sorted(IMAGE_SUFFIXES))})")
            found.append(path)
            continue
        if not path.is_dir():
            raise SkipnasError(f"{path}: no such file or folder; give images or folders of images")
        folders = [path / s / "images" for s in ("train", "val", "test") if (path / s / "images").is_dir()]
        folders = folders or ([path / "images"] if (path / "images").is_dir() else [path])
        images = sorted(p for folder in folders for p in folder.iterdir() if _is_image(p))
        if not images:
            raise SkipnasError(f"{path}: holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}); check the folder")
        found.extend(images)
    if not found:
        raise SkipnasError("no images given; pass image files or folders")
    return found


def mask_for(image_path: Path) -> Path | None:
    """The mask of an image in the dataset layout (``.../images/a.png`` -> ``.../masks/a.*``)."""
    if image_path.parent.name != "images":
        return None
    masks = image_path.parent.parent / "masks"
    for suffix in sorted(IMAGE_SUFFIXES):
        for candidate in (masks / f"{image_path.stem}{suffix}", masks / f"{image_path.stem}{suffix.upper()}"):
            if candidate.is_file():
                return candidate
    return None


def display_image(image: np.ndarray) -> np.ndarray:
    """An 8-bit BGR view of any image, contrast-stretched so faint particles stay visible."""
    grey_or_rgb = image.astype(np.float32)
    low, high = np.percentile(grey_or_rgb, (0.5, 99.5))
    scaled = np.clip((grey_or_rgb - low) / max(high - low, 1e-6) * 255, 0, 255).astype(np.uint8)
    if scaled.ndim == 2:
        return cv2.cvtColor(scaled, cv2.COLOR_GRAY2BGR)
    return cv2.cvtColor(scaled, cv2.COLOR_RGB2BGR)


def _particle_colours(count: int) -> np.ndarray:
    """``count`` BGR colours, neighbours in ID far apart in hue (golden-ratio steps)."""
    if count == 0:
        return np.zeros((0, 3), np.int32)
    hues = (np.arange(count) * 0.618034 % 1.0 * 180).astype(np.uint8)
    hsv = np.stack([hues, np.full(count, 200, np.uint8), np.full(count, 255, np.uint8)], axis=1)
    return cv2.cvtColor(hsv[None], cv2.COLOR_HSV2BGR)[0].astype(np.int32)


def draw_overlay(image: np.ndarray, detections: dict[str, Detections]) -> np.ndarray:
    """Every particle tinted in a colour of its own (so crossing fibres show as two), with its box and number.

    With one class, box and number take the particle's colour; with several, its class's colour.
    """
    canvas = display_image(image)
    scale = max(0.35, min(canvas.shape[:2]) / 900)
    thickness = max(1, round(scale * 2))
    several_classes = len(detections) > 1
    for class_index, found in enumerate(detections.values()):
        colours = _particle_colours(found.count)
        inside = found.labels > 0
        tint = colours[found.labels[inside] - 1]
        canvas[inside] = (0.55 * canvas[inside] + 0.45 * tint).astype(np.uint8)
        for row in found.rows():
            colour = _PALETTE[class_index % len(_PALETTE)] if several_classes else tuple(int(c) for c in colours[row["id"] - 1])
            x, y, w, h = row["bbox"]
            cv2.rectangle(canvas, (x, y), (x + w - 1, y + h - 1), colour, thickness)
            cv2.putText(canvas, str(row["id"]), (x, max(y - 3, 10)), cv2.FONT_HERSHEY_SIMPLEX, scale, colour, thickness, cv2.LINE_AA)
    return canvas


def unique_name(stem: str, used: set[str]) -> str:
    """``stem``, or ``stem-2``, ``stem-3``... when images from several folders share a name."""
    name, number = stem, 1
    while name in used:
        number += 1
        name = f"{stem}-{number}"
    used.add(name)
    return name


def earlier_count_outputs(out: Path) -> list[str]:
    """The files an earlier count wrote to ``out`` (paths relative to it): its CSVs, its summary and
    the overlays its ``counts.csv`` names, nothing else (the user's own files there are never removed)."""
    found = [name for name in COUNT_FILES if (out / name).is_file()]
    try:
        with open(out / COUNTS_FILE, newline="", encoding="utf-8") as handle:
            overlays = [row.get("overlay") or "" for row in csv.DictReader(handle)]
    except (OSError, UnicodeDecodeError, csv.Error):
        return found  # no readable counts.csv: it names no overlays, so none is removed
    for overlay in overlays:
        parts = PurePosixPath(overlay).parts
        # only a file directly in overlays/, as the count names them: a hand-edited path never leads elsewhere
        if len(parts) == 2 and parts[0] == OVERLAY_DIR and parts[1].endswith(".png") and (out / overlay).is_file():
            found.append(overlay)
    return found


def check_count_target(out: Path, overwrite: bool) -> list[str]:
    """Refuse an ``out`` that holds an earlier count's outputs unless ``overwrite``; the earlier
    count's files (:func:`earlier_count_outputs`) to remove when its outputs are replaced."""
    if out.exists() and not out.is_dir():
        raise SkipnasError(f"{out}: is a file; give a folder for the counts")
    if not out.is_dir():
        return []
    if is_model_folder(out):  # its summary.json is export's, not a count's
        raise SkipnasError(f"{out}: is a model folder; give the counts a folder of their own with --out")
    for name in COUNT_FILES:
        if (out / name).is_dir():
            raise SkipnasError(f"{out / name}: is a folder where the count's file goes; move it or choose another --out")
    if (out / OVERLAY_DIR).exists() and not (out / OVERLAY_DIR).is_dir():
        raise SkipnasError(f"{out / OVERLAY_DIR}: is a file where the overlays' folder goes; move it or choose another --out")
    earlier = earlier_count_outputs(out)
    overlays = (out / OVERLAY_DIR).is_dir() and any((out / OVERLAY_DIR).iterdir())
    if (earlier or overlays) and not overwrite:
        raise SkipnasError(
            f"{out}: holds an earlier count's outputs ({', '.join(earlier) if earlier else OVERLAY_DIR + '/'}); "
            "choose another --out, or add --overwrite to replace them (the earlier count's overlays go too, other files stay)"
        )
    return earlier


@dataclass
class CountResult:
    out_dir: Path
    images: list[dict[str, Any]]  # one row per image
    particles: list[dict[str, Any]]  # one row per particle
    counting: str  # the post-processing that counted, in words
    method: str  # the counting method ("blobs", "watershed", "fibres", "seeded")
    auxiliary: str | None = None  # the model's auxiliary head, if it has one
    tta: str = "none"  # the test-time augmentation it was predicted with
    calibrated_tta: str = "none"  # the one the model's counting was calibrated with

    @property
    def total(self) -> int:
        return sum(int(row["count"]) for row in self.images)


def predict_for_counting(
    folder: ModelFolder, image: np.ndarray, setup: DeviceSetup, overlap: int = 32, progress: bool = False, tta: str | None = None
) -> Prediction:
    """The network's maps of one image of any size, at the folder's input scale, ready for :func:`count_prediction`.

    ``tta`` (None: the folder's own, the one its counting was calibrated with) is the test-time augmentation.
    """
    prepared = prepare_image(image, folder.normalisation)
    return predict_image(
        folder.model, prepared, setup, folder.tile, overlap, progress=progress, tta=folder.tta_for(tta), scale=folder.scale
    )


def count_prediction(folder: ModelFolder, prediction: Prediction, shape: tuple[int, int]) -> dict[str, Detections]:
    """Class name -> detections at the image's ``shape``, counted with the folder's setting; the auxiliary map is never a class."""
    return count_per_class(
        prediction.classes, folder.postprocess, names=folder.class_names, auxiliary=prediction.auxiliary, shape=shape
    )


def count_image(
    folder: ModelFolder, image: np.ndarray, setup: DeviceSetup, overlap: int = 32, progress: bool = False, tta: str | None = None
) -> dict[str, Detections]:
    """Class name -> detections for one image of any size (see :func:`predict_for_counting`)."""
    return count_prediction(folder, predict_for_counting(folder, image, setup, overlap, progress, tta), image.shape[:2])


def particle_row(
    file: str, particle_id: int, class_name: str, bbox: Sequence[int], area: int, length: float | None, confidence: float
) -> dict[str, Any]:
    """One ``particles.csv`` row (columns :data:`PARTICLE_FIELDS`); ``length`` None leaves it blank (not a fibre)."""
    x, y, w, h = bbox
    return {"file": file, "id": particle_id, "class": class_name, "x": x, "y": y, "width": w, "height": h, "area": area,
            "equivalent_diameter": round(equivalent_diameter(area), 2), "length": "" if length is None else round(length, 1),
            "confidence": round(confidence, 4)}


def particle_rows(file: str, class_name: str, found: Detections, measure_length: bool) -> list[dict[str, Any]]:
    """The ``particles.csv`` rows of one class's detections in one image.

    ``measure_length``: give each particle its length along the skeleton (fibres), else leave it blank.
    """
    return [
        particle_row(file, p["id"], class_name, p["bbox"], p["area"],
                     particle_length(found.labels, p["id"], tuple(p["bbox"])) if measure_length else None, p["confidence"])
        for p in found.rows()
    ]


def counts_fields(class_names: Sequence[str], overlays: bool = False) -> list[str]:
    """The columns of ``counts.csv``: a count per class only where there are several."""
    several = len(class_names) > 1
    return ["file", "count", *(f"count_{n}" for n in class_names if several), "true_count", *(["overlay"] if overlays else [])]


def counts_row(file: str, counts: dict[str, int], true_count: int | str = "") -> dict[str, Any]:
    """One ``counts.csv`` row (without its overlay) from the particles counted per class."""
    row: dict[str, Any] = {"file": file, "count": sum(counts.values())}
    if len(counts) > 1:
        row.update({f"count_{name}": number for name, number in counts.items()})
    row["true_count"] = true_count
    return row


def count_images(
    model_dir: str | os.PathLike[str],
    inputs: Iterable[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    device: str = "auto",
    overlap: int = 32,
    overlays: bool = True,
    progress: bool = True,
    tta: str | None = None,
    overwrite: bool = False,
    engine: str = "torch",
) -> CountResult:
    """Count every image of ``inputs`` and write the CSVs and overlays to ``out_dir``.

    ``tta``: the test-time augmentation (None: the one the model folder's counting was calibrated with).
    ``overwrite``: replace an earlier count's outputs in ``out_dir`` (see :func:`check_count_target`).
    ``engine``: ``"torch"``, or ``"onnx"``: the folder's ``model.onnx`` with onnxruntime, on the CPU.
    """
    if engine not in ENGINES:
        raise SkipnasError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    out = Path(out_dir)
    earlier = check_count_target(out, overwrite)
    setup = select_device("cpu" if engine == "onnx" else device)
    folder = load_model_folder(model_dir, map_location=setup.device)
    if engine == "onnx":
        from skipnas.onnxio import OnnxNetwork

        folder = dataclasses.replace(folder, model=OnnxNetwork(folder))
    tta = folder.tta_for(tta)
    paths = collect_images(inputs)
    for path in paths:  # from the headers: an image too large for memory stops the count before any work
        check_image_size(path)
    place_model(folder.model, setup)
    staging = staging_dir(out)
    try:
        result = _count_into(staging, out, folder, paths, setup, overlap, overlays, progress, tta, engine)
        written = [COUNTS_FILE, PARTICLES_FILE, SUMMARY_FILE, *(row["overlay"] for row in result.images if "overlay" in row)]
        for name in written:
            if (out / name).is_dir():
                raise SkipnasError(f"{out / name}: is a folder where the count's file goes; move it or choose another --out")
        install_files(staging, out, written, stale=earlier)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # empty, or gone when it became out_dir
    return result


def _count_into(
    staging: Path,
    out: Path,
    folder: ModelFolder,
    paths: list[Path],
    setup: DeviceSetup,
    overlap: int,
    overlays: bool,
    progress: bool,
    tta: str,
    engine: str = "torch",
) -> CountResult:
    """Count ``paths`` and write every output file to ``staging``; the result names ``out``."""
    names = folder.class_names
    image_rows: list[dict[str, Any]] = []
    used_names: set[str] = set()
    particles: list[dict[str, Any]] = []
    with progress_bar("counting", total=len(paths), enabled=progress) as bar:
        for path in paths:
            image = read_image(path)
            try:
                detections = count_image(folder, image, setup, overlap, tta=tta)
            except SkipnasError as exc:
                raise SkipnasError(f"{path}: {exc}") from None
            mask_path = mask_for(path)
            true_count = count_instances(read_mask(mask_path).instances) if mask_path else ""
            row = counts_row(str(path), {name: found.count for name, found in detections.items()}, true_count)
            image_rows.append(row)
            for name, found in detections.items():
                particles.extend(particle_rows(str(path), name, found, folder.postprocess.method == "fibres"))
            if overlays:
                name = unique_name(path.stem, used_names)
                row["overlay"] = f"{OVERLAY_DIR}/{name}.png"
                with atomic_path(staging / OVERLAY_DIR / f"{name}.png") as tmp:
                    if not cv2.imwrite(str(tmp), draw_overlay(image, detections)):
                        raise SkipnasError(f"{out / OVERLAY_DIR}: could not write the overlay; check space and permissions")
            bar.advance()
    write_csv_atomic(staging / COUNTS_FILE, image_rows, counts_fields(names, overlays))
    write_csv_atomic(staging / PARTICLES_FILE, particles, PARTICLE_FIELDS)
    result = CountResult(
        out, image_rows, particles, describe(folder.postprocess), folder.postprocess.method, folder.auxiliary, tta, folder.tta
    )
    summary = {
        "model": str(folder.path),
        "method": result.method,
        "auxiliary": result.auxiliary,
        "counting": result.counting,
        "tta": result.tta,
        "calibrated_tta": result.calibrated_tta,
        "engine": engine,
        "input_scale": folder.scale,  # the network saw the images resized by this; counts are in the images' pixels
        "postprocess": folder.postprocess.to_dict(),
        "images": len(image_rows),
        "total": result.total,
    }
    write_json_atomic(staging / SUMMARY_FILE, summary)
    return result
