"""Sizes of counted particles: the equivalent diameter of every particle, the length of fibres.

Sizes are in the image's pixels; the caller converts to micrometres with its own pixel size.
"""

from __future__ import annotations

import math

import numpy as np

from skipnas.counting.fibres import skeleton_of


def equivalent_diameter(area: float) -> float:
    """The diameter of the disk with the particle's area (px)."""
    return math.sqrt(4.0 * max(float(area), 0.0) / math.pi)


def skeleton_length(mask: np.ndarray) -> float:
    """Length (px) along the one-pixel skeleton of a 0/1 mask: each step between 4-neighbours counts 1,
    a diagonal step sqrt(2) (only where no 4-connected path joins the two pixels, so a corner is
    not counted twice). A particle whose skeleton is one pixel has length 0."""
    skeleton = skeleton_of(mask)
    across = np.count_nonzero(skeleton[:, :-1] & skeleton[:, 1:]) + np.count_nonzero(skeleton[:-1] & skeleton[1:])
    top_left, top_right = skeleton[:-1, :-1], skeleton[:-1, 1:]
    bottom_left, bottom_right = skeleton[1:, :-1], skeleton[1:, 1:]
    falling = top_left & bottom_right & ~top_right & ~bottom_left
    rising = top_right & bottom_left & ~top_left & ~bottom_right
    return float(across + math.sqrt(2.0) * (np.count_nonzero(falling) + np.count_nonzero(rising)))


def particle_length(labels: np.ndarray, particle_id: int, bbox: tuple[int, int, int, int]) -> float:
    """:func:`skeleton_length` of particle ``particle_id`` of an instance map, measured inside its box (x, y, w, h)."""
    x, y, w, h = bbox
    # a one-pixel margin keeps the thinning from treating the box edge as the particle's edge
    top, left = max(y - 1, 0), max(x - 1, 0)
    crop = labels[top : y + h + 1, left : x + w + 1] == particle_id
    return skeleton_length(crop)
