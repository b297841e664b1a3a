"""Dataset folders: finding image/mask pairs, splitting, validating, and cached statistics. No torch.

A dataset folder holds ``images/`` and ``masks/`` with matching file stems (``a.png`` may pair with
``a.tif``), either directly or inside ``train/``, ``val/`` and ``test/`` sub-folders. Without split
folders the images are split by seed, grouped by a regex on the stem (default: the part before the
first ``-``) so that tiles of one micrograph never land in two splits.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from skipnas.data.intensity import brightness_spread, image_means
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
from skipnas.data.particles import ParticleMeasures, ParticleSizes, measure_particles
from skipnas.errors import SkipnasError
from skipnas.fileio import write_json_atomic
from skipnas.paths import cache_dir

SPLITS: tuple[str, ...] = ("train", "val", "test")
UNLABELLED_SPLITS: tuple[str, ...] = ("test",)  # images without masks are allowed only here
DEFAULT_GROUP_PATTERN = r"^([^-]+)"
SUMMARY_VERSION = 4
_IGNORED_NAMES = frozenset({"thumbs.db", "desktop.ini"})  # files operating systems drop into folders

Progress = Callable[[int, int], None]  # (done, total)


@dataclass(frozen=True)
class Sample:
    stem: str
    image_path: Path
    mask_path: Path | None
    group: str


@dataclass
class DatasetIndex:
    root: Path
    splits: dict[str, list[Sample]]
    presplit: bool

    def samples(self, split: str | None = None) -> list[Sample]:
        """One split's samples ([] when it does not exist), or every sample when ``split`` is None."""
        if split is None:
            return [sample for samples in self.splits.values() for sample in samples]
        return list(self.splits.get(split, []))


@dataclass
class ValidationReport:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass
class _FolderScan:
    """What one ``images/`` + ``masks/`` pair holds, problems included."""

    samples: list[Sample]
    orphan_masks: list[Path]
    unsupported: list[Path]
    duplicates: list[tuple[Path, Path]]
    subfolders: list[Path]
    has_images_dir: bool
    has_masks_dir: bool


# ---------------------------------------------------------------- scanning


def _group_regex(group_pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(group_pattern)
    except re.error as exc:
        message = f"group pattern {group_pattern!r} is not a valid regular expression ({exc}); fix it"
        raise SkipnasError(message) from None


def group_of(stem: str, pattern: re.Pattern[str]) -> str:
    """The regex's first group on the stem (the whole match without groups); the stem if it does not match."""
    match = pattern.search(stem)
    if match is None:
        return stem
    group = match.group(1) if pattern.groups else match.group(0)
    return group or stem


def _listing(folder: Path) -> tuple[list[Path], list[Path]]:
    """(files, sub-folders) of a folder, sorted, skipping hidden and OS bookkeeping files."""
    files: list[Path] = []
    folders: list[Path] = []
    if not folder.is_dir():
        return files, folders
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or entry.name.lower() in _IGNORED_NAMES:
            continue
        (folders if entry.is_dir() else files).append(entry)
    return files, folders


def _by_stem(files: Iterable[Path]) -> tuple[dict[str, Path], list[Path], list[tuple[Path, Path]]]:
    """(stem -> file for supported suffixes, unsupported files, pairs of files sharing a stem)."""
    by_stem: dict[str, Path] = {}
    unsupported: list[Path] = []
    duplicates: list[tuple[Path, Path]] = []
    for path in files:
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            unsupported.append(path)
        elif path.stem in by_stem:
            duplicates.append((by_stem[path.stem], path))
        else:
            by_stem[path.stem] = path
    return by_stem, unsupported, duplicates


def _scan_folder(folder: Path, pattern: re.Pattern[str]) -> _FolderScan:
    image_files, image_dirs = _listing(folder / "images")
    mask_files, mask_dirs = _listing(folder / "masks")
    images, bad_images, dup_images = _by_stem(image_files)
    masks, bad_masks, dup_masks = _by_stem(mask_files)
    samples = [Sample(stem, path, masks.get(stem), group_of(stem, pattern)) for stem, path in sorted(images.items())]
    return _FolderScan(
        samples=samples,
        orphan_masks=[path for stem, path in sorted(masks.items()) if stem not in images],
        unsupported=bad_images + bad_masks,
        duplicates=dup_images + dup_masks,
        subfolders=image_dirs + mask_dirs,
        has_images_dir=(folder / "images").is_dir(),
        has_masks_dir=(folder / "masks").is_dir(),
    )


def _split_folders(root: Path) -> dict[str, Path]:
    return {split: root / split for split in SPLITS if (root / split).is_dir()}


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise SkipnasError(
            f"split fractions val={val_fraction} test={test_fraction} leave nothing to train on; "
            "give fractions >= 0 whose sum is below 1"
        )


def split_groups(group_sizes: dict[str, int], val_fraction: float, test_fraction: float, seed: int) -> dict[str, str]:
    """Group -> split. Groups are shuffled by seed, then test and val take groups until their share
    of images is closest to the fraction (at least one group each while there are enough groups;
    train always keeps one); the rest is train."""
    _check_fractions(val_fraction, test_fraction)
    names = sorted(group_sizes)
    order = [names[i] for i in np.random.default_rng(seed).permutation(len(names))]
    total = sum(group_sizes.values())
    wanted = [(split, fraction) for split, fraction in (("test", test_fraction), ("val", val_fraction)) if fraction > 0]
    while wanted and len(wanted) + 1 > len(order):
        wanted.pop(0)  # too few groups: test goes first, then val
    assignment: dict[str, str] = {}
    position = 0
    for index, (split, fraction) in enumerate(wanted):
        target = fraction * total
        taken = 0
        reserve = len(wanted) - index  # groups later splits (and train) still need
        while position < len(order) - reserve:
            size = group_sizes[order[position]]
            if taken and abs(taken + size - target) >= abs(taken - target):
                break
            assignment[order[position]] = split
            taken += size
            position += 1
    for name in order[position:]:
        assignment[name] = "train"
    return assignment


def scan_dataset(
    root: str | Path,
    *,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 0,
    group_pattern: str = DEFAULT_GROUP_PATTERN,
) -> DatasetIndex:
    """Find image/mask pairs. Split folders are used as they are; otherwise split by seed, grouped.

    Scanning is lenient (images without masks are kept with ``mask_path=None``); run
    :func:`validate_dataset` or :func:`check_dataset` to find problems.
    """
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise SkipnasError(f"{root}: dataset folder not found; give a folder holding images/ and masks/")
    pattern = _group_regex(group_pattern)
    folders = _split_folders(root)
    if folders:
        splits = {split: _scan_folder(folder, pattern).samples for split, folder in folders.items()}
        return DatasetIndex(root, splits, presplit=True)
    samples = _scan_folder(root, pattern).samples
    group_sizes = Counter(sample.group for sample in samples)
    assignment = split_groups(dict(group_sizes), val_fraction, test_fraction, seed)
    splits = {split: [s for s in samples if assignment[s.group] == split] for split in SPLITS}
    return DatasetIndex(root, {split: found for split, found in splits.items() if found}, presplit=False)


def resolve_dataset(spec: str | Path) -> Path:
    """``"demo"`` -> the embedded demo dataset (generated on first use); otherwise an existing folder."""
    if str(spec) == "demo":
        from skipnas.data.demo import demo_dataset_path

        return Path(demo_dataset_path())
    path = Path(spec).expanduser()
    if path.is_file():
        raise SkipnasError(f"{path}: is a file; give the dataset folder (holding images/ and masks/) or 'demo'")
    if not path.is_dir():
        raise SkipnasError(
            f"{path}: dataset folder not found; give a folder holding images/ and masks/ "
            "(or train/, val/, test/ holding them), or 'demo'"
        )
    return path.resolve()


# ---------------------------------------------------------------- validation


def _size(array: np.ndarray) -> str:
    return f"{array.shape[0]}x{array.shape[1]}"


def _folder_problems(name: str, folder: Path, scan: _FolderScan, report: ValidationReport) -> None:
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
    pattern = _group_regex(group_pattern)
    _check_fractions(val_fraction, test_fraction)
    max_image_pixels()  # a bad $SKIPNAS_MAX_IMAGE_PIXELS is one error, not one per file
    folders = _split_folders(root)
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
    scans = {name: _scan_folder(folder, pattern) for name, folder in folders.items()}
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


# ---------------------------------------------------------------- statistics


def _file_signature(path: Path, root: Path) -> str:
    stat = path.stat()
    return f"{path.relative_to(root).as_posix()}:{stat.st_size}:{stat.st_mtime_ns}"


def summary_cache_path(index: DatasetIndex) -> Path:
    """Where :func:`dataset_summary` keeps its result: changes whenever a file or the split changes."""
    digest = hashlib.sha256(f"v{SUMMARY_VERSION}\n{index.root.resolve()}\n".encode())
    for split, samples in sorted(index.splits.items()):
        for sample in samples:
            files = [sample.image_path] + ([sample.mask_path] if sample.mask_path else [])
            line = " ".join(_file_signature(path, index.root) for path in files)
            digest.update(f"{split} {line}\n".encode())
    return cache_dir() / "datasets" / f"{digest.hexdigest()[:32]}.json"


@dataclass
class _PixelMoments:
    """Per-channel running sums of x and x^2 over images scaled to [0, 1]."""

    channels: int = 0
    pixels: int = 0
    total: np.ndarray = field(default_factory=lambda: np.zeros(0))
    squares: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def add(self, path: Path, image: np.ndarray) -> None:
        scaled = image.astype(np.float64) / image_range(image.dtype)
        flat = scaled.reshape(-1, 1 if scaled.ndim == 2 else scaled.shape[2])
        if self.pixels == 0:
            self.channels = flat.shape[1]
            self.total, self.squares = np.zeros(self.channels), np.zeros(self.channels)
        elif flat.shape[1] != self.channels:
            raise SkipnasError(
                f"{path}: has {flat.shape[1]} channel(s) but earlier images have {self.channels}; "
                "convert them all to grey or RGB"
            )
        self.pixels += flat.shape[0]
        self.total += flat.sum(axis=0)
        self.squares += np.square(flat).sum(axis=0)

    def mean_std(self) -> tuple[list[float], list[float]]:
        if self.pixels == 0:
            return [], []
        mean = self.total / self.pixels
        std = np.sqrt(np.maximum(self.squares / self.pixels - mean**2, 0.0))
        return [float(x) for x in mean], [float(x) for x in std]


def _split_summary(samples: list[Sample], progress: Callable[[], None]) -> dict[str, Any]:
    moments = _PixelMoments()
    sizes: Counter[tuple[int, int]] = Counter()
    kinds: Counter[str] = Counter()
    dtypes: set[str] = set()
    counts: list[int] = []
    measures = ParticleMeasures.empty()
    means: list[list[float]] = []
    for sample in samples:
        image = read_image(sample.image_path)
        moments.add(sample.image_path, image)
        means.append(image_means(image))
        sizes[(int(image.shape[0]), int(image.shape[1]))] += 1
        dtypes.add(str(image.dtype))
        if sample.mask_path is not None:
            mask = read_mask(sample.mask_path)
            kinds[mask.kind] += 1
            counts.append(count_instances(mask.instances))
            measures = measures + measure_particles(mask.instances)
        progress()
    mean, std = moments.mean_std()
    heights = [h for h, _ in sizes]
    widths = [w for _, w in sizes]
    return {
        "images": len(samples),
        "masks": len(counts),
        "particles": int(sum(counts)),
        "particles_per_image": (
            {"min": min(counts), "median": float(np.median(counts)), "max": max(counts)} if counts else None
        ),
        "sizes": [[h, w] for (h, w), _ in sizes.most_common(8)],  # [height, width], most common first
        "size_range": {"min": [min(heights), min(widths)], "max": [max(heights), max(widths)]} if sizes else None,
        "mask_kinds": dict(sorted(kinds.items())),
        "particle_sizes": ParticleSizes.of(measures).to_dict(),
        "channels": moments.channels,
        "dtypes": sorted(dtypes),
        "pixels": moments.pixels,
        "mean": mean,
        "std": std,
        "brightness_spread": brightness_spread(means, std),
    }


def dataset_summary(index: DatasetIndex, *, progress: Progress | None = None) -> dict[str, Any]:
    """Per-split counts and statistics (see :func:`_split_summary`), cached by file names, sizes and mtimes.

    ``mean``/``std`` are per channel over the split's images scaled to [0, 1] (8-bit /255, 16-bit /65535).
    """
    cache_file = summary_cache_path(index)
    if cache_file.is_file():
        try:
            cached = json.loads(cache_file.read_text(encoding="utf-8"))
            if isinstance(cached, dict) and cached.get("version") == SUMMARY_VERSION:
                # JSON is stored with sorted keys; give the splits back in the index's order
                cached["splits"] = {name: cached["splits"][name] for name in index.splits}
                return cached
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache entry is recomputed and rewritten
    total = len(index.samples())
    done = 0

    def advance() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    summary = {
        "version": SUMMARY_VERSION,
        "root": str(index.root),
        "presplit": index.presplit,
        "splits": {split: _split_summary(samples, advance) for split, samples in index.splits.items()},
    }
    with contextlib.suppress(OSError):  # a read-only cache only costs recomputing next time
        write_json_atomic(cache_file, summary)
    return summary


def particle_sizes(index: DatasetIndex, split: str = "train") -> ParticleSizes:
    """The particle sizes of one split's masks (from the cached summary)."""
    summary = dataset_summary(index)["splits"].get(split)
    if not summary or not summary["masks"]:
        raise SkipnasError(f"{index.root}: the {split} split has no masks to measure particles on; add masks to it")
    return ParticleSizes.from_dict(summary["particle_sizes"])


def normalisation_stats(index: DatasetIndex) -> tuple[list[float], list[float]]:
    """Per-channel (mean, std) training uses: the train split's, or all images' when there is no train split."""
    splits = dataset_summary(index)["splits"]
    train = splits.get("train")
    if train and train["pixels"]:
        return list(train["mean"]), list(train["std"])
    used = [s for s in splits.values() if s["pixels"]]
    if not used:
        raise SkipnasError(f"{index.root}: no images to compute normalisation statistics from; add images")
    if len({s["channels"] for s in used}) > 1:
        raise SkipnasError(f"{index.root}: splits have different channel counts; convert all images to grey or RGB")
    pixels = sum(s["pixels"] for s in used)
    mean = sum(np.asarray(s["mean"]) * s["pixels"] for s in used) / pixels
    second = sum((np.asarray(s["std"]) ** 2 + np.asarray(s["mean"]) ** 2) * s["pixels"] for s in used) / pixels
    std = np.sqrt(np.maximum(second - mean**2, 0.0))
    return [float(x) for x in mean], [float(x) for x in std]


# ---------------------------------------------------------------- loading


@dataclass(frozen=True)
class LabeledImage:
    """One full image in its file dtype (H x W or H x W x C) and its int32 instance mask."""

    stem: str
    image: np.ndarray
    instances: np.ndarray

    @property
    def channels(self) -> int:
        return 1 if self.image.ndim == 2 else self.image.shape[2]


def load_labeled(samples: Iterable[Sample]) -> list[LabeledImage]:
    """Every labelled sample read into memory (unlabelled test images are left out)."""
    images = []
    for sample in samples:
        if sample.mask_path is None:
            continue
        image = read_image(sample.image_path)
        instances = read_mask(sample.mask_path).instances
        if image.shape[:2] != instances.shape:
            raise SkipnasError(
                f"{sample.mask_path}: mask is {instances.shape[1]}x{instances.shape[0]} but its image is "
                f"{image.shape[1]}x{image.shape[0]} (width x height); give each image the mask drawn on it"
            )
        images.append(LabeledImage(sample.stem, image, instances))
    return images
