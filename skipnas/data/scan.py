"""Finding a dataset's image/mask pairs and splitting them. No torch.

A dataset folder holds ``images/`` and ``masks/`` with matching file stems (``a.png`` may pair with
``a.tif``), either directly or inside ``train/``, ``val/`` and ``test/`` sub-folders. Without split
folders the images are split by seed, grouped by a regex on the stem (default: the part before the
first ``-``) so that tiles of one micrograph never land in two splits.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from skipnas.data.io import IMAGE_SUFFIXES
from skipnas.errors import SkipnasError

SPLITS: tuple[str, ...] = ("train", "val", "test")


UNLABELLED_SPLITS: tuple[str, ...] = ("test",)  # images without masks are allowed only here


DEFAULT_GROUP_PATTERN = r"^([^-]+)"


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
class FolderScan:
    """What one ``images/`` + ``masks/`` pair holds, problems included."""

    samples: list[Sample]
    orphan_masks: list[Path]
    unsupported: list[Path]
    duplicates: list[tuple[Path, Path]]
    subfolders: list[Path]
    has_images_dir: bool
    has_masks_dir: bool


def group_regex(group_pattern: str) -> re.Pattern[str]:
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


def scan_folder(folder: Path, pattern: re.Pattern[str]) -> FolderScan:
    image_files, image_dirs = _listing(folder / "images")
    mask_files, mask_dirs = _listing(folder / "masks")
    images, bad_images, dup_images = _by_stem(image_files)
    masks, bad_masks, dup_masks = _by_stem(mask_files)
    samples = [Sample(stem, path, masks.get(stem), group_of(stem, pattern)) for stem, path in sorted(images.items())]
    return FolderScan(
        samples=samples,
        orphan_masks=[path for stem, path in sorted(masks.items()) if stem not in images],
        unsupported=bad_images + bad_masks,
        duplicates=dup_images + dup_masks,
        subfolders=image_dirs + mask_dirs,
        has_images_dir=(folder / "images").is_dir(),
        has_masks_dir=(folder / "masks").is_dir(),
    )


def split_folders(root: Path) -> dict[str, Path]:
    return {split: root / split for split in SPLITS if (root / split).is_dir()}


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise SkipnasError(
            f"split fractions val={val_fraction} test={test_fraction} leave nothing to train on; "
            "give fractions >= 0 whose sum is below 1"
        )


def split_groups(group_sizes: dict[str, int], val_fraction: float, test_fraction: float, seed: int) -> dict[str, str]:
    """Group -> split. Groups are shuffled by seed, then test and val take groups until their share
    of images is closest to the fraction (at least one group each while there are enough groups;
    train always keeps one); the rest is train."""
    check_fractions(val_fraction, test_fraction)
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
    pattern = group_regex(group_pattern)
    folders = split_folders(root)
    if folders:
        splits = {split: scan_folder(folder, pattern).samples for split, folder in folders.items()}
        return DatasetIndex(root, splits, presplit=True)
    samples = scan_folder(root, pattern).samples
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
