"""Checking a dataset before training: every problem named with its file and the fix. No torch."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from skipnas.data.io import (
    IMAGE_SUFFIXES,
    Mask,
    count_instances,
    image_range,
    label_blobs,
    max_image_pixels,
    read_image,
    read_mask,
)
from skipnas.data.scan import (
    DEFAULT_GROUP_PATTERN,
    UNLABELLED_SPLITS,
    DatasetIndex,
    FolderScan,
    Progress,
    Sample,
    check_fractions,
    group_regex,
    scan_dataset,
    scan_folder,
    split_folders,
)
from skipnas.errors import SkipnasError


@dataclass
class ValidationReport:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def _size(array: np.ndarray) -> str:
    return f"{array.shape[0]}x{array.shape[1]}"


def _folder_problems(name: str, folder: Path, scan: FolderScan, report: ValidationReport) -> None:
    labels_optional = name in UNLABELLED_SPLITS
    if not scan.has_images_dir:
        report.errors.append(f"{folder}: no images/ folder; put the images in {folder / 'images'}")
        return
    if not scan.samples:
        report.errors.append(
            f"{folder / 'images'}: no images in it; add {', '.join(IMAGE_SUFFIXES)} files or remove the folder"
        )
    if not scan.has_masks_dir:
        line = f"{folder}: no masks/ folder; put a mask per image in {folder / 'masks'}"
        if labels_optional:
            report.warnings.append(line + f" (the {name} images count as unlabelled)")
        else:
            report.errors.append(line)
    for path in scan.unsupported:
        report.errors.append(
            f"{path}: unsupported format {path.suffix or '(no suffix)'!r}; convert it to one of "
            f"{', '.join(IMAGE_SUFFIXES)} or move it out of {path.parent.name}/"
        )
    for first, second in scan.duplicates:
        report.errors.append(f"{second}: has the same stem as {first.name}; keep only one of them")
    for sub in scan.subfolders:
        report.warnings.append(f"{sub}: sub-folder ignored; move its files up a level if they belong to the dataset")
    for path in scan.orphan_masks:
        report.errors.append(f"{path}: mask without an image; add {path.stem}.* to {folder / 'images'} or remove it")
    if scan.has_masks_dir:
        for sample in scan.samples:
            if sample.mask_path is None:
                if labels_optional:
                    line = "image without a mask (kept as an unlabelled test image)"
                    report.warnings.append(f"{sample.image_path}: {line}")
                else:
                    line = f"image without a mask; add {sample.stem}.png or .tif to {folder / 'masks'}"
                    report.errors.append(f"{sample.image_path}: {line}")


def _sample_problems(
    sample: Sample, report: ValidationReport, channels: dict[int, Path], dtypes: dict[str, Path]
) -> None:
    try:
        image = read_image(sample.image_path)
        image_range(image.dtype)
    except SkipnasError as exc:
        report.errors.append(str(exc) if str(sample.image_path) in str(exc) else f"{sample.image_path}: {exc}")
        image = None
    if image is not None:
        channels.setdefault(1 if image.ndim == 2 else image.shape[2], sample.image_path)
        dtypes.setdefault(image.dtype.name, sample.image_path)
    if sample.mask_path is None:
        return
    try:
        mask = read_mask(sample.mask_path)
    except SkipnasError as exc:
        report.errors.append(str(exc))
        return
    if image is not None and mask.instances.shape != image.shape[:2]:
        report.errors.append(
            f"{sample.mask_path}: mask is {_size(mask.instances)} but its image {sample.image_path.name} is "
            f"{_size(image)} (height x width); make them the same size"
        )
    if count_instances(mask.instances) == 0:
        report.warnings.append(f"{sample.mask_path}: mask has no particles (all background)")
    fragmented = _fragmented_labels(sample.mask_path, mask)
    if fragmented:
        report.warnings.append(fragmented)


_BLOBS_PER_LABEL = 5  # a fibre crossed by others is 2 or 3 pieces; 5 per label on average is no longer that


def _fragmented_labels(path: Path, mask: Mask) -> str | None:
    """A warning for an ID or colour mask whose labels each lie in many separate blobs: a class map, a
    binary mask saved as 16-bit 0/1, or particles all highlighted in one colour, each counted as ONE."""
    if mask.kind == "binary" or mask.classes is not None:
        return None
    labels = count_instances(mask.instances)
    blobs = label_blobs(mask.instances)
    if labels == 0 or blobs < 2 * _BLOBS_PER_LABEL or blobs < _BLOBS_PER_LABEL * labels:
        return None
    unit = "colour" if mask.kind == "color" else "ID"
    return (
        f"{path}: its {labels} {unit}(s) lie in {blobs} separate blobs and each {unit} counts as ONE particle; "
        "if it marks classes, or every particle alike, save it as a binary mask (0/255) so each blob counts"
    )


def validate_dataset(
    root: str | Path,
    *,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 0,
    group_pattern: str = DEFAULT_GROUP_PATTERN,
    progress: Progress | None = None,
) -> ValidationReport:
    """Every problem in a dataset folder, one line each naming the file; reads every image and mask."""
    report = ValidationReport()
    root = Path(root).expanduser()
    if not root.is_dir():
        report.errors.append(f"{root}: dataset folder not found; give a folder holding images/ and masks/")
        return report
    root = root.resolve()
    pattern = group_regex(group_pattern)
    check_fractions(val_fraction, test_fraction)
    max_image_pixels()  # a bad $SKIPNAS_MAX_IMAGE_PIXELS is one error, not one per file
    folders = split_folders(root)
    if folders and (root / "images").is_dir():
        report.warnings.append(f"{root / 'images'}: ignored because split folders ({', '.join(folders)}) exist")
    if not folders:
        folders = {"all": root}
        if not (root / "images").is_dir():
            report.errors.append(
                f"{root}: no images/ folder (and no train/, val/, test/ folders); "
                "put images in images/ and masks in masks/"
            )
            return report
    scans = {name: scan_folder(folder, pattern) for name, folder in folders.items()}
    for name, scan in scans.items():
        _folder_problems(name, folders[name], scan, report)
    samples = [sample for scan in scans.values() for sample in scan.samples]
    channels: dict[int, Path] = {}
    dtypes: dict[str, Path] = {}
    for done, sample in enumerate(samples, start=1):
        _sample_problems(sample, report, channels, dtypes)
        if progress is not None:
            progress(done, len(samples))
    if len(channels) > 1:
        examples = ", ".join(f"{path} has {count}" for count, path in sorted(channels.items()))
        report.errors.append(f"images have different channel counts ({examples}); convert them all to grey or RGB")
    if len(dtypes) > 1:
        examples = ", ".join(f"{path} is {dtype}" for dtype, path in sorted(dtypes.items()))
        report.errors.append(f"images have different bit depths ({examples}); convert them all to 8 or all to 16 bit")
    return report


def check_dataset(
    root: str | Path,
    *,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 0,
    group_pattern: str = DEFAULT_GROUP_PATTERN,
    progress: Progress | None = None,
) -> DatasetIndex:
    """The dataset's index, or a SkipnasError listing every problem (the first line says how many)."""
    options: dict[str, Any] = {
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
        "seed": seed,
        "group_pattern": group_pattern,
    }
    report = validate_dataset(root, progress=progress, **options)
    if report.errors:
        count = len(report.errors)
        heading = f"dataset {root} has {count} problem{'s' if count > 1 else ''}; fix them and check again:"
        raise SkipnasError("\n".join([heading, *report.errors]))
    return scan_dataset(root, **options)
