"""Particle sizes measured on instance masks, and the settings they suggest. No torch.

Two sizes per particle: the **equivalent diameter** (of the disc with the particle's area, as
Cellpose measures cells) and the **width** (twice the largest distance from a particle pixel to its
border: the diameter of the largest disc that fits inside). For a round bead the two agree; for a
fibre the width is its thickness, the size a network must resolve, and the equivalent diameter
says how much of an image it covers. A particle **touches** another when some pixel of it is
8-adjacent to a pixel of another ID.

:func:`choose_scale` and :func:`choose_tile` turn the training split's sizes into an input scale
(images are resized by it before the network) and a training tile size: large particles are
shrunk until a network of depth 4 sees them whole, and the tile holds at least two of the large
ones across. :func:`choose_width` narrows the network where those tiles make a step costly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import cv2
import numpy as np
from scipy import ndimage

from skipnas.data.rescale import check_scale
from skipnas.errors import SkipnasError
from skipnas.genome import DEFAULT_BASE_WIDTH

PERCENTILES: tuple[int, ...] = (5, 50, 95)
# the input scale makes the large particles (95th percentile width) at most this wide: about the
# receptive field's core of a depth-4 U-Net, so a large particle is seen whole with a margin around it
LARGE_WIDTH_TARGET = 64.0
# ... but never shrinks the median particle below this width, where its edges blur into the background
SMALL_WIDTH_FLOOR = 12.0
# a share of particles touching another above this makes instance-aware counting worth its head
TOUCHING_SHARE_FOR_AUXILIARY = 0.1
DEFAULT_TILE = 64
DEFAULT_BATCH = 8
# BatchNorm normalises each training step by its batch's statistics and inference by running
# averages of them: over fewer tiles than this, a network learns to lean on each batch's own
# statistics, which the running averages cannot give back at inference
MIN_AUTO_BATCH = 8
MAX_AUTO_TILE = 256
# the narrowest base width the automatic choice goes to: the narrowest measured on real data
MIN_AUTO_WIDTH = 8


@dataclass(frozen=True)
class ParticleMeasures:
    """Per-particle measures of one or more masks, in pixels of the masks."""

    areas: np.ndarray
    diameters: np.ndarray  # equivalent diameters
    widths: np.ndarray
    touching: np.ndarray  # bool
    largest_extent: int = 0  # the largest side of any particle's bounding box
    smallest_image_side: int = 0
    largest_image_share: float = 0.0  # the largest share of its image's pixels that one particle covers
    image_median_widths: np.ndarray = field(default_factory=lambda: np.zeros(0))  # one per mask with particles

    @classmethod
    def empty(cls) -> ParticleMeasures:
        nothing = np.zeros(0)
        return cls(nothing, nothing, nothing, np.zeros(0, bool))

    def __add__(self, other: ParticleMeasures) -> ParticleMeasures:
        sides = [s for s in (self.smallest_image_side, other.smallest_image_side) if s]
        return ParticleMeasures(
            np.concatenate([self.areas, other.areas]),
            np.concatenate([self.diameters, other.diameters]),
            np.concatenate([self.widths, other.widths]),
            np.concatenate([self.touching, other.touching]),
            max(self.largest_extent, other.largest_extent),
            min(sides, default=0),
            max(self.largest_image_share, other.largest_image_share),
            np.concatenate([self.image_median_widths, other.image_median_widths]),
        )


def measure_particles(instances: np.ndarray) -> ParticleMeasures:
    """Area, equivalent diameter, width and touching of every particle (non-zero ID) of one mask."""
    instances = np.asarray(instances)
    if instances.ndim != 2:
        raise ValueError(f"measure_particles needs an H x W instance mask, got shape {instances.shape}")
    side = int(min(instances.shape))
    ids = np.unique(instances)
    ids = ids[ids != 0]
    if len(ids) == 0:
        return ParticleMeasures(np.zeros(0), np.zeros(0), np.zeros(0), np.zeros(0, bool), 0, side, 0.0)
    # dense labels 1..N so find_objects gives one box per particle
    lookup = np.searchsorted(ids, instances)
    dense = np.where(instances != 0, lookup + 1, 0).astype(np.int32)
    boxes = ndimage.find_objects(dense)
    areas, widths, touching = np.zeros(len(ids)), np.zeros(len(ids)), np.zeros(len(ids), bool)
    extent = 0
    kernel = np.ones((3, 3), np.uint8)
    for index, box in enumerate(boxes):
        if box is None:
            continue
        rows, cols = box
        extent = max(extent, rows.stop - rows.start, cols.stop - cols.start)
        grown = (slice(max(rows.start - 1, 0), rows.stop + 1), slice(max(cols.start - 1, 0), cols.stop + 1))
        crop = dense[grown]
        particle = (crop == index + 1).astype(np.uint8)
        areas[index] = particle.sum()
        # padded, so a particle cut by the image border still has a border to measure to
        distance = cv2.distanceTransform(np.pad(particle, 1), cv2.DIST_L2, 5)
        widths[index] = 2.0 * float(distance.max())
        around = cv2.dilate(particle, kernel).astype(bool) & (crop != 0) & (crop != index + 1)
        touching[index] = bool(around.any())
    diameters = np.sqrt(4.0 * areas / math.pi)
    share = float(areas.max()) / instances.size
    return ParticleMeasures(areas, diameters, widths, touching, extent, side, share, np.array([np.median(widths)]))


def _percentiles(values: np.ndarray) -> dict[str, float] | None:
    if len(values) == 0:
        return None
    summary = {"min": float(values.min())}
    summary.update({f"p{p}": float(np.percentile(values, p)) for p in PERCENTILES})
    summary["max"] = float(values.max())
    return summary


@dataclass(frozen=True)
class ParticleSizes:
    """A split's particle-size summary: percentiles of diameter, width and area, and touching."""

    particles: int
    diameter: dict[str, float] | None
    width: dict[str, float] | None
    area: dict[str, float] | None
    touching: int
    largest_extent: int = 0
    smallest_image_side: int = 0
    largest_image_share: float = 0.0
    image_median_width: dict[str, float] | None = None  # percentiles over images of each image's median width

    @classmethod
    def of(cls, measures: ParticleMeasures) -> ParticleSizes:
        return cls(
            int(len(measures.areas)),
            _percentiles(measures.diameters),
            _percentiles(measures.widths),
            _percentiles(measures.areas),
            int(measures.touching.sum()),
            int(measures.largest_extent),
            int(measures.smallest_image_side),
            float(measures.largest_image_share),
            _percentiles(measures.image_median_widths),
        )

    @classmethod
    def of_masks(cls, masks: Iterable[np.ndarray]) -> ParticleSizes:
        total = ParticleMeasures.empty()
        for mask in masks:
            total = total + measure_particles(mask)
        return cls.of(total)

    @property
    def touching_share(self) -> float:
        return self.touching / self.particles if self.particles else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "touching_share": self.touching_share}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ParticleSizes:
        names = (
            "particles", "diameter", "width", "area", "touching", "largest_extent", "smallest_image_side",
            "largest_image_share", "image_median_width",
        )
        return cls(**{name: data[name] for name in names if name in data})


def _check_has_particles(sizes: ParticleSizes, where: str) -> None:
    if not sizes.particles or sizes.width is None:
        raise SkipnasError(f"{where}: the masks hold no particle; draw the particles in the masks (non-zero pixels)")


def choose_scale(sizes: ParticleSizes, where: str = "the training masks") -> float:
    """The input scale for these particles: large ones (95th percentile width) shrunk to
    ``LARGE_WIDTH_TARGET`` px, the median kept at ``SMALL_WIDTH_FLOOR`` px or more; never enlarged."""
    _check_has_particles(sizes, where)
    assert sizes.width is not None
    scale = min(1.0, LARGE_WIDTH_TARGET / max(sizes.width["p95"], 1e-6))
    floor = min(1.0, SMALL_WIDTH_FLOOR / max(sizes.width["p50"], 1e-6))
    # two decimals: a scale that prints as it is stored
    return round(max(scale, floor), 2)


def choose_tile(sizes: ParticleSizes, scale: float, multiple: int, where: str = "the training masks") -> int:
    """A training tile at least twice the large particles' width at ``scale`` (and ``DEFAULT_TILE``),
    a multiple of ``multiple`` (the network's total pooling), at most ``MAX_AUTO_TILE`` and the scaled image."""
    _check_has_particles(sizes, where)
    assert sizes.width is not None
    wanted = max(DEFAULT_TILE, 2.0 * sizes.width["p95"] * scale)
    tile = int(math.ceil(wanted / multiple) * multiple)
    if sizes.smallest_image_side:
        fits = int(sizes.smallest_image_side * scale) // multiple * multiple
        tile = min(tile, max(fits, multiple))
    return max(min(tile, MAX_AUTO_TILE), multiple)


def check_tile_size(tile: int, multiple: int, where: str = "--tile") -> int:
    """A tile the network can take: a whole number of at least ``multiple`` (2 ** depth) px."""
    if isinstance(tile, bool) or not isinstance(tile, int) or tile < multiple:
        raise SkipnasError(f"{where} must be at least {multiple} px (2 ** the network's depth) or auto, got {tile!r}")
    return tile


def check_batch(batch: int) -> int:
    if batch < 1:
        raise SkipnasError(f"--batch must be at least 1 or auto, got {batch}")
    return batch


def scale_and_tile(
    sizes: ParticleSizes, multiple: int, scale: float | None = None, tile: int | None = None, where: str = "the training masks"
) -> tuple[float, int]:
    """The input scale and training tile: each given one checked, each None chosen from ``sizes``
    (:func:`choose_scale`, then :func:`choose_tile` at that scale)."""
    scale = choose_scale(sizes, where) if scale is None else check_scale(scale)
    tile = choose_tile(sizes, scale, multiple, where) if tile is None else check_tile_size(tile, multiple)
    return scale, tile


def choose_batch(tile: int) -> int:
    """The batch for ``tile`` px tiles: as many pixels a step as ``DEFAULT_BATCH`` tiles of
    ``DEFAULT_TILE`` px for smaller tiles, and never fewer than ``MIN_AUTO_BATCH`` tiles, so larger
    tiles make slower steps rather than batches too small for BatchNorm."""
    return max(MIN_AUTO_BATCH, round(DEFAULT_BATCH * (DEFAULT_TILE / tile) ** 2))


def choose_width(tile: int, batch: int, default: int = DEFAULT_BASE_WIDTH) -> int:
    """The base width for training steps of ``batch`` tiles of ``tile`` px: ``default`` narrowed so a
    step costs about what ``default`` costs on ``DEFAULT_BATCH`` tiles of ``DEFAULT_TILE`` px (a
    convolution's cost grows with its pixels and with the square of its width), in multiples of 4,
    never below ``MIN_AUTO_WIDTH`` nor above ``default``. A budget of seconds then trains large tiles
    for about as many steps as small ones, instead of a few slow ones."""
    if tile < 1 or batch < 1:
        raise ValueError(f"tile and batch must be positive, got {tile} and {batch}")
    width = default * math.sqrt(DEFAULT_BATCH * DEFAULT_TILE**2 / (batch * tile**2))
    return int(min(default, max(MIN_AUTO_WIDTH, 4 * round(width / 4))))


def tile_warning(sizes: ParticleSizes, tile: int, scale: float = 1.0) -> str | None:
    """A warning when ``tile`` px holds fewer than two large particles (95th percentile width) across."""
    if sizes.width is None:
        return None
    large = sizes.width["p95"] * scale
    if tile >= 2.0 * large:
        return None
    return (
        f"the training tile ({tile} px) is smaller than twice the large particles' width ({large:.0f} px at scale "
        f"{scale:g}); use --tile auto, or --scale below {min(1.0, tile / (2.0 * sizes.width['p95'])):.2f}"
    )


# a "particle" covering more of its image than this is no particle to count: an inverted mask
# (background drawn, particles left out), or an image of one particle too close to count
MAX_IMAGE_SHARE = 0.5


def check_particles_fit(sizes: ParticleSizes, where: str) -> None:
    """Refuse masks without particles, and masks with a particle larger than half its image."""
    _check_has_particles(sizes, where)
    if sizes.largest_image_share > MAX_IMAGE_SHARE:
        raise SkipnasError(
            f"{where}: a particle covers {sizes.largest_image_share:.0%} of its image, more than the image's "
            "background; is the mask inverted? Draw each particle non-zero on a background of 0"
        )


MIN_AREA_FRACTIONS: tuple[float, ...] = (0.02, 0.05, 0.1, 0.2, 0.35)


def min_area_grid(sizes: ParticleSizes, scale: float = 1.0, fractions: tuple[float, ...] = MIN_AREA_FRACTIONS) -> tuple[int, ...]:
    """Minimum areas for calibration, as fractions of the training particles' median area at the
    input ``scale`` (counting works on the network's maps): never 0 (every speck counted) and never
    near a real particle's size."""
    _check_has_particles(sizes, "the training masks")
    assert sizes.area is not None
    median = sizes.area["p50"] * scale**2
    return tuple(sorted({max(1, int(round(fraction * median))) for fraction in fractions}))


# zoom augmentation never goes beyond this factor either way: particles much smaller or larger than
# any in the training images are better met with --scale
MAX_ZOOM = 1.5


def zoom_range(sizes: ParticleSizes) -> tuple[float, float] | None:
    """A zoom augmentation range covering how much the images' median particle widths differ
    (5th to 95th percentile over images), or None when they differ by less than 2.5x (noise from few particles per image)."""
    spread_of = sizes.image_median_width
    if spread_of is None or spread_of["p5"] <= 0:
        return None
    spread = spread_of["p95"] / spread_of["p5"]
    if spread < 2.5:
        return None
    half = min(math.sqrt(spread), MAX_ZOOM)
    return round(1.0 / half, 2), round(half, 2)
