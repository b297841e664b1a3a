"""Image normalisation: the statistics a model was trained with, applied to any image before the network."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from skipnas.data.augment import apply_transform, build_eval_transform
from skipnas.data.intensity import stretch_contrast
from skipnas.data.io import image_range
from skipnas.errors import SkipnasError


@dataclass(frozen=True)
class Normalisation:
    """Per-channel statistics in [0, 1] units and the white level of the images' dtype.

    With ``per_image``, every image is first stretched to [0, 1] by its own percentiles
    (:func:`~skipnas.data.intensity.stretch_contrast`); the statistics then apply to stretched
    images and the white level is 1, whatever the files' bit depth.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    max_pixel_value: float = 255.0
    per_image: bool = False

    @classmethod
    def stretched(cls, channels: int) -> Normalisation:
        """Per-image stretching: centred on a stretched image's middle grey."""
        return cls((0.5,) * channels, (0.25,) * channels, 1.0, per_image=True)

    def apply_to(self, image: np.ndarray) -> np.ndarray:
        """``image`` as the statistics expect it: stretched by its own percentiles, or as it is."""
        return stretch_contrast(image) if self.per_image else image

    def to_dict(self) -> dict[str, object]:
        return {"mean": list(self.mean), "std": list(self.std), "max_pixel_value": self.max_pixel_value, "per_image": self.per_image}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> Normalisation:
        return cls(
            tuple(data["mean"]), tuple(data["std"]), float(data["max_pixel_value"]),  # type: ignore[arg-type]
            per_image=bool(data.get("per_image", False)),
        )


def to_tensor_image(image: np.ndarray) -> torch.Tensor:
    """H x W x C float32 -> C x H x W tensor."""
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


def prepare_image(image: np.ndarray, normalisation: Normalisation) -> np.ndarray:
    """A full image normalised for the network, as a (C, H, W) float32 array."""
    image = normalisation.apply_to(image)
    if image_range(image.dtype) != normalisation.max_pixel_value and image.dtype != np.float32:
        raise SkipnasError(
            f"image is {image.dtype} but the model was trained on images with white level "
            f"{normalisation.max_pixel_value:g}; convert it to the training images' bit depth"
        )
    channels = 1 if image.ndim == 2 else image.shape[2]
    if channels != len(normalisation.mean):
        raise SkipnasError(
            f"image has {channels} channel(s) but the model was trained on {len(normalisation.mean)}; "
            "convert it to grey or RGB like the training images"
        )
    transform = build_eval_transform(normalisation.mean, normalisation.std, normalisation.max_pixel_value)
    dummy = np.zeros(image.shape[:2], dtype=np.int32)
    normalised, _ = apply_transform(transform, image, dummy)
    return np.ascontiguousarray(normalised.transpose(2, 0, 1))
