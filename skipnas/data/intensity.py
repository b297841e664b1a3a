"""Per-image contrast: how much images differ in brightness, and a stretch that evens it out. No torch.

Microscope images of one dataset can differ far more between images than within one: bright and
dark field side by side, lamp and exposure changed between sessions, particles darker than the
membrane in one image and brighter in the next. Dataset-wide statistics then leave some images
nearly flat. :func:`stretch_contrast` maps each image's own 0.5th to 99.5th percentile to [0, 1]
(as Cellpose normalises every image), so every image reaches the network with full contrast.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from skipnas.data.io import image_range

LOW_PERCENTILE = 0.5
HIGH_PERCENTILE = 99.5
# the percentiles are estimated on at most this many pixels of an image (an even grid of them)
PERCENTILE_SAMPLES = 1_000_000
# per-image stretching by default where the images' mean brightness differs by more than this many
# pooled standard deviations (5th to 95th percentile over images)
PER_IMAGE_SPREAD = 2.0


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
