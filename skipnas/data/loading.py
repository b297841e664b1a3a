"""Reading a split's labelled images into memory. No torch."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from skipnas.data.io import read_image, read_mask
from skipnas.data.scan import Sample
from skipnas.errors import SkipnasError


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
