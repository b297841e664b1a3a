"""Augmentation and normalisation pipelines (albumentations 2.x).

Every pipeline starts with ``ToFloat(max_pixel_value)`` so 8- and 16-bit images go through the
same float32 [0, 1] path (albumentations' photometric transforms clip float images to [0, 1]),
and ends with ``Normalize`` by the dataset's per-channel mean and std in [0, 1] units.
Instance masks are passed as ``mask=``: flips and 90-degree rotations move pixels without
interpolating, so instance IDs stay intact; ``mask_interpolation`` is nearest for any warp added later.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import albumentations as A
import cv2
import numpy as np

from skipnas.data.io import image_range
from skipnas.errors import SkipnasError


class AugmentError(SkipnasError, ValueError):
    """Augmentation settings or statistics that cannot be used: p outside [0, 1], std <= 0, ..."""


@dataclass(frozen=True)
class AugmentConfig:
    """Which training transforms run, each with probability ``p``. Flips and rot90 are exact."""

    hflip: bool = True
    vflip: bool = True
    rotate90: bool = True
    brightness_contrast: bool = False
    blur: bool = False
    # zoom each tile by a factor drawn from this range (None: never), so a network meets particles
    # over the range of sizes the images hold
    scale_range: tuple[float, float] | None = None
    # invert each channel around its normalisation mean (colours complemented): particles brighter
    # than the background in some images and darker in others become one appearance to learn
    invert: bool = False
    p: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.p <= 1.0:
            raise AugmentError(f"augmentation probability p={self.p!r} is not in [0, 1]: choose e.g. 0.5")
        if self.scale_range is not None:
            low, high = self.scale_range
            if not 0 < low <= high:
                raise AugmentError(f"scale_range {self.scale_range!r} must be (low, high) with 0 < low <= high")


def _normalize(mean: Sequence[float], std: Sequence[float]) -> A.Normalize:
    if len(mean) == 0 or len(mean) != len(std):
        raise AugmentError(
            f"normalisation mean {list(mean)} and std {list(std)} must have one value per channel: "
            "recompute the dataset statistics"
        )
    if not all(math.isfinite(s) and s > 0 for s in std) or not all(math.isfinite(m) for m in mean):
        raise AugmentError(
            f"normalisation std {list(std)} must be finite and > 0 (mean {list(mean)} finite): "
            "recompute the dataset statistics on images that are not blank"
        )
    # the image is already in [0, 1] after ToFloat, so the statistics apply at max_pixel_value 1
    return A.Normalize(mean=tuple(float(m) for m in mean), std=tuple(float(s) for s in std), max_pixel_value=1.0)


def _compose(transforms: list[A.BasicTransform], max_pixel_value: float, seed: int | None) -> A.Compose:
    if not max_pixel_value > 0:
        raise AugmentError(f"max_pixel_value {max_pixel_value!r} must be > 0: use image_range(image.dtype)")
    compose = A.Compose(
        [A.ToFloat(max_value=float(max_pixel_value)), *transforms],
        mask_interpolation=cv2.INTER_NEAREST,
    )
    if seed is not None:
        seed_transform(compose, seed)
    return compose


def seed_transform(transform: A.Compose, seed: int) -> None:
    """Make ``transform`` draw from one generator seeded with ``seed`` (e.g. per DataLoader worker).

    ``A.Compose(seed=...)`` in albumentations 2.0.8 gives every child transform its own generator
    with the same seed, so HorizontalFlip and VerticalFlip always fire together and no mirror
    image is ever produced. One shared generator keeps the decisions independent.
    """
    transform.set_random_state(np.random.default_rng(seed), random.Random(seed))


class NegateNormalised(A.ImageOnlyTransform):
    """z -> -z on a normalised image: each channel mirrored around its normalisation mean (x -> 2 mean - x),
    so an inverted tile keeps the mean and spread of the images the network meets at inference
    (``1 - x`` would shift it by ``(1 - 2 mean) / std``)."""

    def apply(self, img: np.ndarray, **params: object) -> np.ndarray:
        return -img


def build_train_transform(
    config: AugmentConfig,
    mean: Sequence[float],
    std: Sequence[float],
    max_pixel_value: float,
    seed: int | None = None,
) -> A.Compose:
    """Random flips / rot90 (and optionally zoom, brightness-contrast, blur and inversion), then normalisation.

    ``seed`` makes the random sequence reproducible; ``None`` draws a fresh one.
    """
    transforms: list[A.BasicTransform] = []
    if config.hflip:
        transforms.append(A.HorizontalFlip(p=config.p))
    if config.vflip:
        transforms.append(A.VerticalFlip(p=config.p))
    if config.rotate90:
        transforms.append(A.RandomRotate90(p=config.p))
    if config.scale_range is not None:
        # the tile keeps its size; zooming out mirrors the image and its mask alike at the border
        transforms.append(A.Affine(scale=tuple(config.scale_range), keep_ratio=True, border_mode=cv2.BORDER_REFLECT_101, p=config.p))
    if config.brightness_contrast:
        transforms.append(A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=config.p))
    if config.blur:
        # small kernels: fibres are only ~6-17 px wide
        transforms.append(A.GaussianBlur(blur_limit=(3, 5), sigma_limit=(0.1, 1.0), p=config.p))
    transforms.append(_normalize(mean, std))
    if config.invert:
        transforms.append(NegateNormalised(p=config.p))
    return _compose(transforms, max_pixel_value, seed)


def build_eval_transform(mean: Sequence[float], std: Sequence[float], max_pixel_value: float) -> A.Compose:
    """Normalisation only, for validation, test and inference."""
    return _compose([_normalize(mean, std)], max_pixel_value, None)


def _find(transform: A.Compose, kind: type[A.BasicTransform]) -> A.BasicTransform | None:
    return next((t for t in transform.transforms if isinstance(t, kind)), None)


def apply_transform(
    transform: A.Compose, image: np.ndarray, instances: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Run ``transform`` on an image and its instance mask.

    ``image`` is H x W (grey) or H x W x C, uint8, uint16 or float in [0, 1]; ``instances`` is
    H x W integer IDs. Returns the float32 H x W x C image (C = 1 for grey) and the int32 mask.
    """
    if image.ndim == 2:
        image = image[:, :, np.newaxis]
    if image.ndim != 3 or instances.ndim != 2:
        raise ValueError(f"expected an H x W[x C] image and an H x W mask, got {image.shape} and {instances.shape}")
    if image.shape[:2] != instances.shape:
        raise AugmentError(
            f"image of {image.shape[0]}x{image.shape[1]} px has a mask of {instances.shape[0]}x{instances.shape[1]} px: "
            "give each image the mask drawn on it, at the same size"
        )
    white = image_range(image.dtype)
    if image.dtype == np.float64:
        image = image.astype(np.float32)
    to_float = _find(transform, A.ToFloat)
    if image.dtype != np.float32 and to_float is not None and to_float.max_value != white:
        # ToFloat passes float images through, so only integer images can meet the wrong scale
        raise ValueError(
            f"a {image.dtype} image (white = {white:g}) reached a transform built for max_pixel_value "
            f"{to_float.max_value:g}: build it with image_range(image.dtype)"
        )
    normalize = _find(transform, A.Normalize)
    if normalize is not None and len(normalize.mean) != image.shape[2]:
        raise AugmentError(
            f"the image has {image.shape[2]} channel(s) but the normalisation statistics have {len(normalize.mean)}: "
            "recompute the dataset statistics for these images"
        )
    result = transform(image=image, mask=np.asarray(instances, dtype=np.int32))
    out_image = np.asarray(result["image"], dtype=np.float32)
    if out_image.ndim == 2:
        # some OpenCV kernels drop a single channel axis
        out_image = out_image[:, :, np.newaxis]
    return np.ascontiguousarray(out_image), np.ascontiguousarray(result["mask"], dtype=np.int32)
