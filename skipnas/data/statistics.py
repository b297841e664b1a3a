"""A dataset's statistics (sizes, channels, normalisation, particle sizes), cached by its files. No torch."""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from skipnas.data.intensity import POLARITIES, brightness_spread, image_means, particle_contrast, polarity
from skipnas.data.io import count_instances, image_range, read_image, read_mask
from skipnas.data.particles import ParticleMeasures, ParticleSizes, measure_particles
from skipnas.data.scan import DatasetIndex, Progress, Sample
from skipnas.errors import SkipnasError
from skipnas.fileio import write_json_atomic
from skipnas.paths import cache_dir

SUMMARY_VERSION = 5


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
    polarities: Counter[str] = Counter()
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
            if counts[-1]:  # an image without particles has no polarity
                polarities[polarity(particle_contrast(image, mask.instances))] += 1
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
        # images with particles, by whether these are brighter / darker than their surroundings (or neither clearly)
        "particle_polarity": {name: polarities[name] for name in POLARITIES} if counts else None,
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
