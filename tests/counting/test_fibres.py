"""Fibre-aware counting on drawn strands whose answer is known."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from skipnas.counting.fibres import fibre_labels, follow_strands, skeleton_graph, skeleton_of
from skipnas.counting.postprocess import PostprocessConfig, count_particles

FIBRES = PostprocessConfig(method="fibres", min_area=20)


def _canvas(size: int = 96) -> np.ndarray:
    return np.zeros((size, size), np.uint8)


def _line(mask: np.ndarray, start: tuple[int, int], end: tuple[int, int], width: int = 5) -> np.ndarray:
    cv2.line(mask, start, end, 1, width)
    return mask


def _star(lines: int, size: int = 96, radius: int = 42) -> np.ndarray:
    """``lines`` straight strands through the centre at equal angles."""
    mask, centre = _canvas(size), size // 2
    for k in range(lines):
        angle = math.pi * k / lines + 0.2
        dx, dy = round(radius * math.cos(angle)), round(radius * math.sin(angle))
        _line(mask, (centre - dx, centre - dy), (centre + dx, centre + dy))
    return mask


def _curled_fibre() -> np.ndarray:
    """One strand that loops round and crosses itself (a prolate cycloid), then goes on."""
    mask = _canvas(128)
    t = np.linspace(-7, 7, 400)
    x, y = (t - 2.2 * np.sin(t)) * 6 + 64, -2.2 * np.cos(t) * 8 + 64
    cv2.polylines(mask, [np.stack([x, y], 1).astype(np.int32)], False, 1, 5)
    return mask


def _count(mask: np.ndarray, config: PostprocessConfig = FIBRES) -> int:
    return count_particles(mask.astype(np.float32), config).count


def test_two_crossing_lines_count_two_where_blobs_count_one() -> None:
    mask = _line(_line(_canvas(), (5, 10), (90, 85)), (5, 85), (90, 10))
    assert _count(mask, PostprocessConfig(min_area=20)) == 1
    assert _count(mask) == 2


@pytest.mark.parametrize("lines", [2, 3, 4])
def test_lines_crossing_at_one_point_count_one_each(lines: int) -> None:
    assert _count(_star(lines)) == lines


def test_t_junction_is_a_fibre_ending_on_another() -> None:
    mask = _line(_line(_canvas(), (5, 30), (90, 30)), (48, 30), (48, 90))
    assert _count(mask) == 2


def test_shallow_crossing_of_thick_fibres_counts_two() -> None:
    # the skeleton forks twice with a short bridge between: one crossing, not three strands
    mask = _line(_line(_canvas(), (5, 40), (90, 48), 7), (5, 55), (90, 46), 7)
    assert _count(mask) == 2


def test_curled_fibre_with_a_loop_counts_one() -> None:
    mask = _curled_fibre()
    labels = fibre_labels(mask)
    graph = skeleton_graph(skeleton_of(mask), cv2.distanceTransform(mask, cv2.DIST_L2, 5), 1.5)
    assert graph.junction_count >= 1  # it does cross itself
    assert _count(mask) == 1
    assert set(np.unique(labels[mask > 0])) == {1}


def test_single_strands_and_a_closed_ring_count_one_each() -> None:
    mask = _line(_canvas(), (10, 10), (85, 60))
    cv2.circle(mask, (40, 70), 15, 1, 3)
    assert _count(mask) == 2


def test_specks_below_min_area_count_zero() -> None:
    mask = _canvas()
    mask[10, 10] = 1
    mask[50:53, 50:53] = 1
    assert _count(mask) == 0
    assert _count(mask, FIBRES.replace(min_area=1)) == 2


def test_every_mask_pixel_gets_a_strand_and_nothing_else_does() -> None:
    mask = _star(3)
    cv2.circle(mask, (10, 85), 4, 1, -1)  # a blob with no strand of its own
    labels = fibre_labels(mask)
    assert np.array_equal(labels > 0, mask > 0)
    assert len(np.unique(labels[labels > 0])) == 4
    # each strand keeps to one connected blob
    _, blobs = cv2.connectedComponents(mask)
    for strand in np.unique(labels[labels > 0]):
        assert len(np.unique(blobs[labels == strand])) == 1


def test_max_turn_decides_whether_a_bend_at_a_junction_continues() -> None:
    # a crossing whose two strands both bend by about 60 degrees there
    mask = _canvas()
    for start, end in (((5, 48), (48, 48)), ((48, 48), (72, 90)), ((48, 5), (48, 48)), ((48, 48), (90, 72))):
        _line(mask, start, end)
    graph = skeleton_graph(skeleton_of(mask), cv2.distanceTransform(mask, cv2.DIST_L2, 5), 1.5)
    assert follow_strands(graph, 80.0).max() == 2
    assert follow_strands(graph, 20.0).max() == 4


def test_empty_mask_has_no_strands() -> None:
    assert not fibre_labels(_canvas()).any()
    assert _count(_canvas()) == 0


def test_a_one_pixel_stub_beside_a_crossing_is_not_a_loop() -> None:
    # a one-pixel-wide plus with a diagonal one-pixel stub at the centre: still two strands
    skeleton = np.zeros((61, 61), bool)
    skeleton[30, 5:56] = True
    skeleton[5:56, 30] = True
    half_width = np.full(skeleton.shape, 1.0, np.float32)
    plain = follow_strands(skeleton_graph(skeleton, half_width, 1.5), 45.0)
    assert plain.max() == 2
    for junction_scale in (1.5, 2.0, 2.5, 3.0):
        for length in (1, 2, 3, 4):
            stubbed = skeleton.copy()
            for step in range(1, length + 1):  # a diagonal stub out of the crossing point
                stubbed[30 - step, 30 - step] = True
            graph = skeleton_graph(stubbed, half_width, junction_scale)
            assert follow_strands(graph, 45.0).max() == 2, (junction_scale, length)
