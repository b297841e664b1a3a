"""Resizing images, masks and probability maps by an input scale. No torch.

A model trained at input scale ``s`` sees every image resized by ``s``; its probability maps are
resized back, so counting, overlays and metrics stay in the image's own pixels.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

import cv2
import numpy as np

from skipnas.errors import SkipnasError

if TYPE_CHECKING:  # the dataset module measures particles, which check scales here
    from skipnas.data.loading import LabeledImage


def check_scale(scale: float, where: str = "--scale") -> float:
    """``scale`` as a float, refused unless it is finite and above 0."""
    try:
        value = float(scale)
    except (TypeError, ValueError):
        raise SkipnasError(f"{where} must be a number above 0 (e.g. 0.5) or auto, got {scale!r}") from None
    if not math.isfinite(value) or value <= 0 or value > 8:
        raise SkipnasError(f"{where} must be above 0 and at most 8 (e.g. 0.5: half size), got {scale!r}")
    return value


def scaled_shape(height: int, width: int, scale: float) -> tuple[int, int]:
    """The (height, width) of an image resized by ``scale``: at least one pixel each way."""
    return max(1, int(round(height * scale))), max(1, int(round(width * scale)))


def resize_image(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """An H x W[x C] image resized to ``shape`` (height, width): area averaging down, bilinear up."""
    if image.shape[:2] == shape:
        return image
    shrinking = shape[0] * shape[1] < image.shape[0] * image.shape[1]
    resized = cv2.resize(image, (shape[1], shape[0]), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    if image.ndim == 3 and resized.ndim == 2:  # OpenCV drops a single channel axis
        resized = resized[:, :, None]
    return resized


def resize_instances(instances: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """An instance mask resized to ``shape`` by nearest neighbour, so IDs stay IDs."""
    if instances.shape == shape:
        return instances
    return cv2.resize(instances.astype(np.int32), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)


def resize_maps(maps: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(K, h, w) float maps resized bilinearly to (K, *shape)."""
    if maps.shape[1:] == shape:
        return maps
    return np.stack([cv2.resize(m, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR) for m in maps.astype(np.float32)])


def rescale_labeled(item: LabeledImage, scale: float) -> LabeledImage:
    """An image and its mask resized by ``scale`` (the same object at scale 1)."""
    if scale == 1.0:
        return item
    shape = scaled_shape(*item.instances.shape, scale)
    return dataclasses.replace(item, image=resize_image(item.image, shape), instances=resize_instances(item.instances, shape))
