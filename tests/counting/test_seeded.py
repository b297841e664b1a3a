"""The auxiliary targets and counting from the cores they mark."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from skipnas.counting.postprocess import PostprocessConfig, PostprocessConfigError, count_particles
from skipnas.auxiliary import AUXILIARY_TARGETS
from skipnas.counting.seeded import (
    Relief,
    auxiliary_target,
    flood_from_seeds,
    instance_centre_map,
    instance_distance_map,
    seeded_labels,
)


def _touching_discs() -> np.ndarray:
    truth = np.zeros((48, 64), np.int32)
    cv2.circle(truth, (20, 24), 10, 1, -1)
    cv2.circle(truth, (39, 24), 10, 2, -1)  # overlaps the first: they touch along a chord
    return truth


def test_distance_target_peaks_once_per_particle_with_a_valley_where_they_touch() -> None:
    truth = _touching_discs()
    target = instance_distance_map(truth)
    assert target.dtype == np.float32 and target.min() == 0.0 and target.max() == pytest.approx(1.0)
    assert not target[truth == 0].any()
    for particle in (1, 2):
        assert target[truth == particle].max() == pytest.approx(1.0)
    # along the line through both centres: high, down to 0 at the contact, high again
    row = target[24]
    contact = [x for x in range(21, 39) if truth[24, x] != truth[24, x + 1]][0]
    assert row[contact] == 0.0 and row[20] > 0.8 and row[39] > 0.8
    # the plain distance transform of the merged blob has no such valley
    merged = cv2.distanceTransform((truth > 0).astype(np.uint8), cv2.DIST_L2, 5)
    assert merged[24, contact] > 5


def test_touching_discs_split_by_their_cores() -> None:
    truth = _touching_discs()
    prob = (truth > 0).astype(np.float32)
    auxiliary = instance_distance_map(truth)
    assert count_particles(prob, PostprocessConfig(method="blobs")).count == 1
    detections = count_particles(prob, PostprocessConfig(method="seeded", seed_threshold=0.5), auxiliary)
    assert detections.count == 2
    # each true disc is mostly one detection
    for particle in (1, 2):
        values, counts = np.unique(detections.labels[truth == particle], return_counts=True)
        assert counts.max() / counts.sum() > 0.9


def test_centre_target_peaks_at_each_particles_deepest_point_and_is_low_where_they_touch() -> None:
    truth = _touching_discs()
    target = instance_centre_map(truth)
    assert target.dtype == np.float32 and target.shape == truth.shape and target.max() == pytest.approx(1.0)
    distance = cv2.distanceTransform((instance_distance_map(truth) > 0).astype(np.uint8), cv2.DIST_L2, 5)
    for particle, drawn_centre in ((1, (24, 20)), (2, (24, 39))):
        inside = np.where(truth == particle, target, 0)
        peak = np.unravel_index(np.argmax(inside), inside.shape)
        assert inside[peak] == pytest.approx(1.0)
        assert distance[peak] == distance[truth == particle].max()  # the deepest point, not the centre of the box
        assert abs(peak[0] - drawn_centre[0]) <= 1 and abs(peak[1] - drawn_centre[1]) <= 2
    contact = [x for x in range(21, 39) if truth[24, x] != truth[24, x + 1]][0]
    assert target[24, contact] < 0.2  # about exp(-2): one depth from each peak, sigma half a depth


def test_a_centre_peak_is_as_wide_as_its_particle_is_deep() -> None:
    truth = np.zeros((40, 80), np.int32)
    cv2.circle(truth, (15, 20), 10, 1, -1)
    cv2.circle(truth, (60, 20), 4, 2, -1)
    target = instance_centre_map(truth)
    # three pixels from each centre: still high on the big disc, low on the small one
    assert target[20, 18] > 0.8 and target[20, 63] < 0.4
    assert instance_centre_map(truth, sigma_per_depth=1.0)[20, 63] > target[20, 63]
    with pytest.raises(ValueError, match="sigma_per_depth must be a number > 0"):
        instance_centre_map(truth, sigma_per_depth=0)
    with pytest.raises(ValueError, match="HxW instance map"):
        instance_centre_map(np.zeros((2, 4, 4), np.int32))
    assert not instance_centre_map(np.zeros((8, 8), np.int32)).any()


def test_a_partly_hidden_particle_keeps_one_centre_peak_where_its_distance_map_has_two() -> None:
    # a fibre drawn across a bead to past its middle leaves two lobes joined on one side
    truth = np.zeros((48, 48), np.int32)
    cv2.circle(truth, (24, 24), 10, 1, -1)
    truth[22:26, 13:29] = 0
    prob = (truth > 0).astype(np.float32)
    by_peaks = PostprocessConfig(method="seeded", min_area=1, watershed_min_distance=4, seed_threshold=0.5, seed_peak_fraction=0.8)
    assert count_particles(prob, by_peaks, instance_distance_map(truth)).count > 1
    for threshold in (0.3, 0.5, 0.7):
        for fraction in (0.0, 0.8):
            config = by_peaks.replace(seed_threshold=threshold, seed_peak_fraction=fraction)
            assert count_particles(prob, config, instance_centre_map(truth)).count == 1


@pytest.mark.parametrize("name", AUXILIARY_TARGETS)
def test_every_auxiliary_target_splits_touching_discs(name: str) -> None:
    truth = _touching_discs()
    target = auxiliary_target(name, truth)
    assert target.dtype == np.float32 and target.shape == truth.shape and 0 <= target.min() and target.max() <= 1
    assert count_particles((truth > 0).astype(np.float32), PostprocessConfig(method="seeded"), target).count == 2


def test_seeded_needs_the_auxiliary_map() -> None:
    with pytest.raises(PostprocessConfigError, match="auxiliary"):
        count_particles(np.ones((8, 8), np.float32), PostprocessConfig(method="seeded"))
    # a map of another size is named, by either way in
    with pytest.raises(ValueError, match=r"map is \(8, 9\) but the mask is \(8, 8\)"):
        seeded_labels(np.ones((8, 8), np.uint8), np.ones((8, 9), np.float32), 0.5)
    with pytest.raises(ValueError, match=r"map is \(8, 9\) but the mask is \(8, 8\)"):
        count_particles(np.ones((8, 8), np.float32), PostprocessConfig(method="seeded"), np.ones((8, 9), np.float32))


def test_a_blob_without_a_seed_is_one_particle_and_nothing_leaks_between_blobs() -> None:
    mask = np.zeros((32, 32), np.uint8)
    mask[2:10, 2:10] = 1
    mask[20:30, 20:30] = 1
    seeds = np.zeros((32, 32), np.int32)
    seeds[5, 5] = 7
    labels = flood_from_seeds(mask, seeds)
    assert set(np.unique(labels[2:10, 2:10])) == {7}
    assert len(set(np.unique(labels[20:30, 20:30]))) == 1 and labels[25, 25] not in (0, 7)
    assert not labels[mask == 0].any()
    # auxiliary cores low everywhere: each blob is one particle
    assert count_particles(mask.astype(np.float32), PostprocessConfig(method="seeded", min_area=1), np.zeros((32, 32))).count == 2


def test_one_relief_serves_every_setting_as_a_fresh_one_would() -> None:
    # calibration keeps one Relief per mask and map while it tries each window, fraction and floor
    rng = np.random.default_rng(0)
    truth = _touching_discs()
    mask = (truth > 0).astype(np.uint8)
    relief_map = cv2.GaussianBlur(instance_distance_map(truth), (0, 0), 2) + rng.normal(0, 0.05, truth.shape)
    relief_map[:, :8] -= 0.5  # negative relief too: a fraction of 0 keeps only pixels >= 0
    shared = Relief(relief_map, mask)
    settings = [(window, fraction, floor) for window in (3, 10, 3) for fraction in (0.0, 0.8) for floor in (-np.inf, 0.3)]
    cores = set()
    for window, fraction, floor in settings:
        fresh = Relief(relief_map, mask)
        seeds = shared.seeds(window, fraction, floor)
        assert np.array_equal(seeds, fresh.seeds(window, fraction, floor))
        assert np.array_equal(shared.flood(seeds), flood_from_seeds(mask, seeds))
        cores.add(int(seeds.max()))
    assert len(cores) > 2  # the settings do find different cores
    with pytest.raises(ValueError, match="relief map"):
        Relief(np.zeros((4, 5)), np.ones((4, 4), np.uint8))


def test_local_peaks_split_touching_particles_on_a_blurred_map() -> None:
    # a learned map is blurred: between touching particles it dips but stays above any useful threshold
    truth = _touching_discs()
    blurred = cv2.GaussianBlur(instance_distance_map(truth), (0, 0), 3)
    blurred /= blurred.max()
    contact = blurred[24, 29]
    assert 0.25 < contact < 0.95  # above the threshold below
    prob = (truth > 0).astype(np.float32)
    by_threshold = PostprocessConfig(method="seeded", seed_threshold=0.25, seed_peak_fraction=0.0, watershed_min_distance=6)
    assert count_particles(prob, by_threshold, blurred).count == 1
    by_peaks = by_threshold.replace(seed_peak_fraction=0.95)
    assert count_particles(prob, by_peaks, blurred).count == 2


@pytest.mark.parametrize("method", ["watershed", "seeded"])
def test_particles_in_the_outer_pixel_frame_are_kept(method: str) -> None:
    mask = np.zeros((20, 30), np.float32)
    mask[0, 5:9] = 1  # along the top edge
    mask[10:14, 29] = 1  # along the right edge
    mask[8:12, 10:14] = 1
    config = PostprocessConfig(method=method, min_area=1)
    detections = count_particles(mask, config, np.zeros((20, 30), np.float32))
    assert detections.count == count_particles(mask, PostprocessConfig(min_area=1)).count == 3
    assert np.array_equal(detections.labels > 0, mask > 0)
    one_row = np.ones((1, 12), np.float32)
    assert count_particles(one_row, config, np.zeros((1, 12), np.float32)).count == 1
