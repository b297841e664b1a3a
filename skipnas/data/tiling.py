"""Tiles: slicing large images for training, and stitched tiled inference.

Large micrographs are cut into ``tile`` x ``tile`` windows instead of being downscaled, so
thin fibres keep their width in pixels. Inference runs the model window by window and blends
the overlaps with a smooth positive weight, holding only the output, one weight map of the
image size and one batch of tiles at a time. Numpy only: the ``predict`` callable wraps the
model (and torch).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from skipnas.errors import SkipnasError
from skipnas.progress import progress_bar


class TilingError(SkipnasError, ValueError):
    """Tile settings or arrays that cannot be tiled: overlap >= tile, image and mask of different size."""


class Window(NamedTuple):
    """The image region ``[y : y + h, x : x + w]``; ``h`` or ``w`` is below the tile size only
    where the image itself is smaller than the tile (callers pad the tile up to full size)."""

    y: int
    x: int
    h: int
    w: int

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.y, self.y + self.h), slice(self.x, self.x + self.w)


# full-image prediction (validation, calibration, evaluation, counting): one 512 px tile covers a
# 512 px image, where 256 px tiles with their overlap compute 2.25x its pixels (measured 2.5x slower)
INFERENCE_TILE = 512
INFERENCE_OVERLAP = 32


def _check_tile(tile: int, overlap: int) -> None:
    if int(tile) != tile or tile < 1:
        raise TilingError(f"tile size {tile!r} is not a positive whole number of pixels: choose e.g. 64 or 256")
    if int(overlap) != overlap or not 0 <= overlap < tile:
        raise TilingError(f"tile overlap {overlap!r} is not in [0, tile size {tile}): choose 0 <= overlap < tile")


def _axis_starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    # the last window is shifted back to end at the border, overlapping its neighbour by >= overlap
    starts.append(length - tile)
    return starts


def tile_windows(height: int, width: int, tile: int, overlap: int) -> list[Window]:
    """Row-major windows of ``tile`` px, neighbours overlapping by at least ``overlap`` px, covering
    the ``height`` x ``width`` image exactly (no window crosses the border)."""
    _check_tile(tile, overlap)
    if height < 1 or width < 1:
        raise TilingError(f"cannot tile an empty image of {height}x{width} px: check that the image file has pixels")
    h = min(tile, height)
    w = min(tile, width)
    return [
        Window(y, x, h, w)
        for y in _axis_starts(height, tile, overlap)
        for x in _axis_starts(width, tile, overlap)
    ]


def _pad_to_tile(array: np.ndarray, tile: int, axes: tuple[int, int], mode: str) -> np.ndarray:
    """Pad the two spatial ``axes`` at their end up to ``tile`` (reflect for images, zeros for masks)."""
    pad = [(0, 0)] * array.ndim
    for axis in axes:
        pad[axis] = (0, tile - array.shape[axis])
    if all(after == 0 for _, after in pad):
        return array
    if mode == "reflect":
        return np.pad(array, pad, mode="reflect")
    return np.pad(array, pad, mode="constant", constant_values=0)


@dataclass(frozen=True)
class TileConfig:
    """How training images are sliced. Tiles without particles are kept at ``empty_keep_fraction``."""

    size: int = 64
    overlap: int = 0
    empty_keep_fraction: float = 0.1

    def __post_init__(self) -> None:
        _check_tile(self.size, self.overlap)
        if not 0.0 <= self.empty_keep_fraction <= 1.0:
            raise TilingError(
                f"empty_keep_fraction {self.empty_keep_fraction!r} is not in [0, 1]: "
                "choose 0 to drop tiles without particles, 1 to keep them all"
            )


def _choose_empty(count: int, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of ``count * fraction`` empty tiles, its fractional part rounded at random so
    that an image with 2 empty tiles at 0.1 still keeps one 20 % of the time (plain rounding: never)."""
    expected = count * fraction
    keep = int(np.floor(expected))
    if rng.random() < expected - keep:
        keep += 1
    return np.sort(rng.choice(count, size=keep, replace=False))


def training_tiles(
    image: np.ndarray,
    instances: np.ndarray,
    config: TileConfig,
    rng: np.random.Generator | int | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Image tiles (``size x size`` or ``size x size x C``) with their instance-mask tiles.

    ``image`` is channel-last (H x W or H x W x C, as read from disk and fed to augmentation);
    ``instances`` is H x W. Images smaller than the tile are padded by reflection and their masks
    by 0. Tiles whose mask is all 0 are kept at ``config.empty_keep_fraction``, chosen by ``rng``.
    """
    if image.ndim not in (2, 3) or instances.ndim != 2:
        raise ValueError(f"expected an H x W[x C] image and an H x W mask, got {image.shape} and {instances.shape}")
    if image.shape[:2] != instances.shape:
        raise TilingError(
            f"image of {image.shape[0]}x{image.shape[1]} px has a mask of {instances.shape[0]}x{instances.shape[1]} px: "
            "give each image the mask drawn on it, at the same size"
        )
    generator = np.random.default_rng(rng)
    tile = config.size
    particle_tiles: list[tuple[int, tuple[np.ndarray, np.ndarray]]] = []
    empty_tiles: list[tuple[int, tuple[np.ndarray, np.ndarray]]] = []
    for index, window in enumerate(tile_windows(*instances.shape, tile, config.overlap)):
        rows, cols = window.slices
        mask_tile = _pad_to_tile(instances[rows, cols], tile, (0, 1), "constant").copy()
        image_tile = _pad_to_tile(image[rows, cols], tile, (0, 1), "reflect").copy()
        target = particle_tiles if mask_tile.any() else empty_tiles
        target.append((index, (image_tile, mask_tile)))
    kept = [empty_tiles[i] for i in _choose_empty(len(empty_tiles), config.empty_keep_fraction, generator)]
    # back in row-major order, so the result reads like the image
    return [pair for _, pair in sorted(particle_tiles + kept, key=lambda item: item[0])]


def blend_weights(tile: int, overlap: int) -> np.ndarray:
    """A ``tile`` x ``tile`` separable ramp, > 0 everywhere, rising over ``overlap`` px at each edge.

    Two neighbours that overlap by exactly ``overlap`` px have weights summing to 1 across the
    overlap, so predictions cross-fade linearly instead of showing a seam.
    """
    _check_tile(tile, overlap)
    position = np.arange(tile, dtype=np.float32)
    ramp = np.minimum(position + 1, tile - position) / np.float32(overlap + 1)
    ramp = np.minimum(ramp, np.float32(1.0))
    return np.outer(ramp, ramp).astype(np.float32)


def iter_tile_batches(
    image: np.ndarray, windows: Sequence[Window], tile: int, batch_size: int
) -> Iterator[tuple[list[Window], np.ndarray]]:
    """Windows of a (C, H, W) image in batches of at most ``batch_size``, with their tiles as one
    (N, C, tile, tile) float32 array (reflect-padded where the image is smaller than the tile)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    for start in range(0, len(windows), batch_size):
        chunk = list(windows[start : start + batch_size])
        batch = np.empty((len(chunk), image.shape[0], tile, tile), dtype=np.float32)
        for slot, window in enumerate(chunk):
            rows, cols = window.slices
            batch[slot] = _pad_to_tile(image[:, rows, cols], tile, (1, 2), "reflect")
        yield chunk, batch


def predict_tiled(
    predict: Callable[[np.ndarray], np.ndarray],
    image: np.ndarray,
    tile: int,
    overlap: int,
    batch_size: int = 4,
    progress: bool = False,
) -> np.ndarray:
    """Stitched (K, H, W) float32 logits of a (C, H, W) image.

    ``predict`` maps a (N, C, tile, tile) float32 batch to (N, K, tile, tile) logits. Overlaps are
    blended with :func:`blend_weights`: the output accumulates ``sum(w * logits)`` and one H x W
    map ``sum(w)``, then divides.
    """
    if image.ndim != 3:
        raise ValueError(f"predict_tiled expects a (C, H, W) image, got shape {image.shape}")
    _, height, width = image.shape
    windows = tile_windows(height, width, tile, overlap)
    weights = blend_weights(tile, overlap)
    weight_sum = np.zeros((height, width), dtype=np.float32)
    output: np.ndarray | None = None
    with progress_bar("tiled inference", total=len(windows), enabled=progress) as bar:
        for chunk, batch in iter_tile_batches(image, windows, tile, batch_size):
            logits = np.asarray(predict(batch), dtype=np.float32)
            if logits.ndim != 4 or logits.shape[0] != len(chunk) or logits.shape[2:] != (tile, tile):
                raise ValueError(
                    f"predict returned shape {logits.shape} for a batch of shape {batch.shape}: "
                    f"expected ({len(chunk)}, K, {tile}, {tile})"
                )
            if output is None:
                output = np.zeros((logits.shape[1], height, width), dtype=np.float32)
            for window, tile_logits in zip(chunk, logits):
                rows, cols = window.slices
                w = weights[: window.h, : window.w]
                output[:, rows, cols] += tile_logits[:, : window.h, : window.w] * w
                weight_sum[rows, cols] += w
            bar.advance(len(chunk))
    assert output is not None  # tile_windows always yields at least one window
    output /= weight_sum
    return output

