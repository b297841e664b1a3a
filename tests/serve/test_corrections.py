"""One image's particles and the corrections to them (skipnas/serve/corrections.py)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from skipnas.count import PARTICLE_FIELDS
from skipnas.counting.postprocess import PostprocessConfig, count_particles
from skipnas.serve.corrections import CorrectionError, ImageCorrections


def _state(prob: np.ndarray, method: str = "blobs") -> ImageCorrections:
    found = count_particles(prob, PostprocessConfig(threshold=0.5, min_area=4, method=method))
    return ImageCorrections.from_detections({"particle": found}, {"particle": prob}, 0.5, fibres=method == "fibres")


def _disks(*centres: tuple[int, int], radius: int = 6, shape: tuple[int, int] = (64, 96)) -> np.ndarray:
    prob = np.zeros(shape, np.uint8)
    for centre in centres:
        cv2.circle(prob, centre, radius, 1, -1)
    return prob.astype(np.float32)


def test_rows_have_the_columns_of_skipnas_count() -> None:
    state = _state(_disks((20, 20)))
    assert list(state.kept()[0].row("a.png")) == PARTICLE_FIELDS


def test_reject_leaves_the_totals_and_restore_brings_it_back() -> None:
    state = _state(_disks((20, 20), (60, 40)))
    assert state.counts() == {"particle": 2}
    state.toggle("particle", 2)
    assert state.counts() == {"particle": 1} and [p.id for p in state.kept()] == [1]
    assert state.particle_at(60, 40).id == 2  # still in the map, shown struck out
    state.toggle("particle", 2)
    assert state.counts() == {"particle": 2}


def test_split_cuts_two_touching_disks_into_two_pieces_numbered_after_the_highest() -> None:
    state = _state(_disks((30, 30), (40, 30), (80, 50)))  # 1: the touching pair, 2: alone
    pair = state.particle_at(30, 30)
    assert state.counts() == {"particle": 2} and pair.id == 1
    pieces = state.split("particle", 1, [(26, 30), (44, 30)])
    assert [p.id for p in pieces] == [1, 3] and [p.origin for p in pieces] == ["split", "split"]
    assert state.counts() == {"particle": 3}
    assert abs(pieces[0].area - pieces[1].area) <= 0.15 * pieces[0].area
    assert pieces[0].area + pieces[1].area == pair.area  # the cut loses no pixel
    assert state.particle_at(26, 30).id == 1 and state.particle_at(44, 30).id == 3


def test_split_refuses_clicks_outside_the_particle_and_changes_nothing() -> None:
    state = _state(_disks((30, 30)))
    with pytest.raises(CorrectionError, match="inside particle 1"):
        state.split("particle", 1, [(30, 30), (5, 5)])
    with pytest.raises(CorrectionError, match="at least two"):
        state.split("particle", 1, [(30, 30), (30, 30)])
    assert state.version == 0 and state.counts() == {"particle": 1}


def test_merge_joins_two_particles_under_the_lowest_number() -> None:
    state = _state(_disks((20, 20), (60, 40)))
    areas = sum(p.area for p in state.kept())
    merged = state.merge("particle", [2, 1])
    assert merged.id == 1 and merged.area == areas and state.counts() == {"particle": 1}
    assert state.particle_at(60, 40).id == 1


def test_a_drawn_outline_adds_a_particle_on_free_pixels_only() -> None:
    state = _state(_disks((20, 20)))
    added = state.add_polygon([(60, 30), (80, 30), (80, 50), (60, 50)])
    assert added.id == 2 and added.origin == "added" and 400 <= added.area <= 441
    with pytest.raises(CorrectionError, match="mostly a particle already"):
        state.add_polygon([(15, 15), (25, 15), (25, 25), (15, 25)])
    assert state.counts() == {"particle": 2}


def test_a_click_adds_the_region_the_network_half_believes_else_a_typical_disk() -> None:
    prob = _disks((20, 20))
    cv2.circle(prob, (70, 40), 5, 0.35, -1)  # below the threshold, above half of it: missed by the count
    state = _state(prob)
    assert state.counts() == {"particle": 1}
    faint = state.add_seed(70, 40)
    assert faint.area == int(np.count_nonzero(_disks((70, 40), radius=5)))
    empty = state.add_seed(45, 55)  # nothing there: a disk as large as the image's particles
    assert abs(empty.area - state.find("particle", 1).area) <= 0.25 * empty.area
    assert state.counts() == {"particle": 3}


def test_undo_restores_each_earlier_state() -> None:
    state = _state(_disks((20, 20), (60, 40)))
    state.merge("particle", [1, 2])
    state.toggle("particle", 1)
    state.undo()
    assert state.counts() == {"particle": 1}
    state.undo()
    assert state.counts() == {"particle": 2} and {p.id for p in state.kept()} == {1, 2}
    with pytest.raises(CorrectionError, match="nothing to undo"):
        state.undo()


def test_fibres_get_a_length_along_the_skeleton() -> None:
    prob = np.zeros((40, 80), np.float32)
    prob[18:21, 10:70] = 1.0  # a straight fibre 60 px long, 3 px wide
    state = _state(prob, method="fibres")
    (fibre,) = state.kept()
    assert 54 <= fibre.length <= 60
    assert _state(_disks((20, 20))).kept()[0].length is None


def test_outlines_are_closed_rings_in_image_pixels_around_the_particle() -> None:
    state = _state(_disks((40, 30)))
    (ring,) = state.outline(state.kept()[0])
    xs, ys = ring[0::2], ring[1::2]
    assert min(xs) == 34 and max(xs) == 46 and min(ys) == 24 and max(ys) == 36


def test_a_click_on_a_kept_particle_adds_nothing() -> None:
    state = _state(_disks((20, 20)))
    with pytest.raises(CorrectionError, match="already particle 1"):
        state.add_seed(20, 20)
    assert state.version == 0


def test_a_number_goes_on_the_particle_even_where_its_centroid_is_off_it() -> None:
    prob = np.zeros((60, 60), np.float32)
    cv2.ellipse(prob, (30, 30), (20, 20), 0, 180, 360, 1.0, 3)  # an arc: its centroid lies in the empty middle
    state = _state(prob)
    (arc,) = state.kept()
    x, y = state.anchor(arc)
    assert state.labels["particle"][int(arc.centroid[1]), int(arc.centroid[0])] == 0
    assert state.labels["particle"][y, x] == arc.id
