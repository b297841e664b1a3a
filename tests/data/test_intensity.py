"""Per-image contrast and the particles' polarity (data/intensity.py)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from skipnas.data.intensity import mixed_polarity, particle_contrast, polarity


def _discs(inside: int, outside: int, channels: int = 1) -> tuple[np.ndarray, np.ndarray]:
    ids = np.zeros((80, 80), np.int32)
    cv2.circle(ids, (20, 20), 8, 1, -1)
    cv2.circle(ids, (55, 50), 10, 2, -1)
    image = np.where(ids > 0, inside, outside).astype(np.uint8)
    return (image if channels == 1 else np.repeat(image[:, :, None], channels, axis=2)), ids


@pytest.mark.parametrize("channels", [1, 3])
def test_bright_particles_have_a_positive_contrast_and_dark_ones_a_negative(channels: int) -> None:
    bright = particle_contrast(*_discs(200, 50, channels))
    dark = particle_contrast(*_discs(50, 200, channels))
    assert bright is not None and dark is not None
    assert bright > 1.0 and dark == pytest.approx(-bright)
    assert (polarity(bright), polarity(dark)) == ("brighter", "darker")


def test_particles_like_their_surroundings_are_unclear() -> None:
    image, ids = _discs(100, 100)
    image[::2] = 110  # texture everywhere, the same inside the particles and around them
    assert polarity(particle_contrast(image, ids)) == "unclear"
    assert particle_contrast(image, np.zeros_like(ids)) is None  # no particle
    assert particle_contrast(np.full((80, 80), 7, np.uint8), ids) is None  # a flat image
    assert polarity(None) == "unclear"


def test_polarity_is_mixed_only_when_each_kind_is_common() -> None:
    assert mixed_polarity({"brighter": 19, "darker": 7, "unclear": 6})  # the beads' training split
    assert not mixed_polarity({"brighter": 64, "darker": 0, "unclear": 0})
    assert not mixed_polarity({"brighter": 30, "darker": 2, "unclear": 40})  # 2 of 32 clear images: too few
    assert not mixed_polarity({"brighter": 0, "darker": 0, "unclear": 5})
    assert mixed_polarity({"brighter": 1, "darker": 1, "unclear": 0})
