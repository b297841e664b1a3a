"""Per-image contrast: how much images differ in brightness, a stretch that evens it out, and whether
particles are brighter or darker than their surroundings. No torch.

Microscope images of one dataset can differ far more between images than within one: bright and
dark field side by side, lamp and exposure changed between sessions, particles darker than the
membrane in one image and brighter in the next. Dataset-wide statistics then leave some images
nearly flat. :func:`stretch_contrast` maps each image's own 0.5th to 99.5th percentile to [0, 1]
(as Cellpose normalises every image), so every image reaches the network with full contrast.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from skipnas.data.io import image_range

LOW_PERCENTILE = 0.5
HIGH_PERCENTILE = 99.5
# the percentiles are estimated on at most this many pixels of an image (an even grid of them)
PERCENTILE_SAMPLES = 1_000_000
# per-image stretching by default where the images' mean brightness differs by more than this many
# pooled standard deviations (5th to 95th percentile over images)
PER_IMAGE_SPREAD = 2.0
# particles are compared with a ring this many px wide around them (at the image's own scale)
RING_WIDTH = 5
# particles are "brighter" or "darker" than their ring when their means differ by at least this many
# of the image's standard deviations; nearer, "unclear"
POLARITY_MARGIN = 0.25
# images of each polarity, as a share of the images with a clear one, from which training inverts
# images at random: bright and dark field side by side teach one task, not two
MIXED_POLARITY_SHARE = 0.2
POLARITIES: tuple[str, ...] = ("brighter", "darker", "unclear")


def stretch_contrast(image: np.ndarray) -> np.ndarray:
    """``image`` (H x W or H x W x C, any dtype) as float32 with each channel's 0.5th and 99.5th
    percentile mapped to 0 and 1, clipped to [0, 1]; a flat channel becomes 0."""
    values = image.astype(np.float32, copy=False)
    flat = values.reshape(-1, 1 if values.ndim == 2 else values.shape[2])
    step = max(1, flat.shape[0] // PERCENTILE_SAMPLES)
    low, high = np.percentile(flat[::step], (LOW_PERCENTILE, HIGH_PERCENTILE), axis=0)
    span = np.where(high - low > 0, high - low, np.inf)
    stretched = (flat - low) / span
    return np.clip(stretched, 0.0, 1.0).reshape(values.shape).astype(np.float32, copy=False)


def image_means(image: np.ndarray) -> list[float]:
    """Each channel's mean in [0, 1] units of the image's dtype."""
    flat = image.reshape(-1, 1 if image.ndim == 2 else image.shape[2])
    return [float(v) for v in flat.mean(axis=0, dtype=np.float64) / image_range(image.dtype)]


def brightness_spread(means: Sequence[Sequence[float]], pooled_std: Sequence[float]) -> float | None:
    """How far the images' mean brightness ranges (5th to 95th percentile over images), in pooled
    standard deviations, the largest over channels; None with fewer than two images."""
    if len(means) < 2 or not pooled_std:
        return None
    array = np.asarray(means, dtype=np.float64)
    spread = np.percentile(array, 95, axis=0) - np.percentile(array, 5, axis=0)
    std = np.maximum(np.asarray(pooled_std, dtype=np.float64), 1e-12)
    return float(np.max(spread / std))


def particle_contrast(image: np.ndarray, instances: np.ndarray) -> float | None:
    """How much brighter the particles of ``instances`` are than a ring of ``RING_WIDTH`` px around
    them, in standard deviations of ``image`` (grey: the channels' mean); None without particles or
    ring, or on a flat image."""
    grey = image.astype(np.float64, copy=False)
    if grey.ndim == 3:
        grey = grey.mean(axis=2)
    inside = np.asarray(instances) > 0
    if not inside.any():
        return None
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * RING_WIDTH + 1, 2 * RING_WIDTH + 1))
    ring = cv2.dilate(inside.astype(np.uint8), kernel).astype(bool) & ~inside
    spread = float(grey.std())
    if not ring.any() or spread == 0:
        return None
    return float((grey[inside].mean() - grey[ring].mean()) / spread)


def polarity(contrast: float | None) -> str:
    """``"brighter"``, ``"darker"`` or ``"unclear"``: one image's :func:`particle_contrast` in words."""
    if contrast is None or abs(contrast) < POLARITY_MARGIN:
        return "unclear"
    return "brighter" if contrast > 0 else "darker"


def mixed_polarity(counts: dict[str, int]) -> bool:
    """Whether images of both polarities are common: each at least ``MIXED_POLARITY_SHARE`` of the
    images whose particles are clearly brighter or darker (``counts`` by :func:`polarity`)."""
    brighter, darker = counts.get("brighter", 0), counts.get("darker", 0)
    return min(brighter, darker) >= max(1.0, MIXED_POLARITY_SHARE * (brighter + darker))
