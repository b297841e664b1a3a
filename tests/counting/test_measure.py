"""Particle sizes (skipnas/counting/measure.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from skipnas.counting.measure import equivalent_diameter, particle_length, skeleton_length


def test_equivalent_diameter_is_that_of_the_disk_of_the_same_area() -> None:
    assert equivalent_diameter(math.pi * 25) == pytest.approx(10.0)
    assert equivalent_diameter(0) == 0.0


def test_a_straight_bar_is_about_as_long_as_it_is() -> None:
    mask = np.zeros((20, 60), np.uint8)
    mask[9:12, 5:55] = 1
    assert 44 <= skeleton_length(mask) <= 50


def test_a_diagonal_line_counts_its_steps_as_root_two() -> None:
    mask = np.eye(30, dtype=np.uint8)
    assert skeleton_length(mask) == pytest.approx(29 * math.sqrt(2), rel=0.02)


def test_a_single_pixel_has_no_length() -> None:
    mask = np.zeros((5, 5), np.uint8)
    mask[2, 2] = 1
    assert skeleton_length(mask) == 0.0


def test_particle_length_measures_one_particle_of_an_instance_map() -> None:
    labels = np.zeros((30, 60), np.int32)
    labels[5:8, 5:45] = 1
    labels[20:23, 5:25] = 2
    assert particle_length(labels, 2, (5, 20, 20, 3)) < particle_length(labels, 1, (5, 5, 40, 3))
