from __future__ import annotations

import cv2
import numpy as np
import pytest

from skipnas.data.particles import (
    LARGE_WIDTH_TARGET,
    MIN_AUTO_BATCH,
    MIN_AUTO_WIDTH,
    ParticleSizes,
    check_particles_fit,
    choose_batch,
    choose_scale,
    choose_tile,
    choose_width,
    measure_particles,
    min_area_grid,
    tile_warning,
    zoom_range,
)
from skipnas.errors import SkipnasError


def _discs(size: int, discs: list[tuple[int, int, int]]) -> np.ndarray:
    """An instance mask with one disc (x, y, radius) per ID, drawn in order."""
    mask = np.zeros((size, size), np.int32)
    for index, (x, y, radius) in enumerate(discs):
        cv2.circle(mask, (x, y), radius, index + 1, -1)
    return mask


def test_discs_measure_their_diameter_width_and_touching():
    # two touching discs of radius 10 and one apart of radius 5
    mask = _discs(100, [(20, 20, 10), (41, 20, 10), (70, 70, 5)])
    measures = measure_particles(mask)
    assert np.allclose(measures.diameters[:2], 21, atol=1.0)
    assert np.allclose(measures.widths[:2], 21, atol=1.5)
    assert measures.diameters[2] == pytest.approx(11, abs=1.0)
    assert measures.touching.tolist() == [True, True, False]
    assert measures.smallest_image_side == 100
    assert measures.largest_extent == 21


def test_a_fibre_is_as_wide_as_it_is_thick_and_as_large_as_its_area():
    mask = np.zeros((200, 200), np.int32)
    mask[100:108, 10:190] = 1  # 8 px thick, 180 px long
    measures = measure_particles(mask)
    assert measures.widths[0] == pytest.approx(8, abs=1.5)
    assert measures.diameters[0] == pytest.approx(np.sqrt(4 * 8 * 180 / np.pi), rel=0.01)


def test_an_empty_mask_has_no_particles_and_is_refused_for_training():
    sizes = ParticleSizes.of_masks([np.zeros((32, 32), np.int32)])
    assert sizes.particles == 0 and sizes.width is None
    with pytest.raises(SkipnasError, match="hold no particle"):
        choose_scale(sizes, "train masks")
    with pytest.raises(SkipnasError, match="train masks: the masks hold no particle"):
        check_particles_fit(sizes, "train masks")


def test_sizes_round_trip_through_json():
    sizes = ParticleSizes.of_masks([_discs(64, [(20, 20, 6), (40, 40, 8)])])
    again = ParticleSizes.from_dict(sizes.to_dict())
    assert again == sizes
    assert sizes.to_dict()["touching_share"] == 0.0


def _sizes_with_widths(widths: list[float]) -> ParticleSizes:
    size = 2000
    discs = [(60 + (i % 8) * 230, 60 + (i // 8) * 230, int(round(w / 2))) for i, w in enumerate(widths)]
    return ParticleSizes.of_masks([_discs(size, discs)])


def test_small_particles_keep_scale_one_and_the_default_tile():
    sizes = _sizes_with_widths([10, 12, 14, 16] * 5)
    assert choose_scale(sizes) == 1.0
    assert choose_tile(sizes, 1.0, 16) == 64


def test_large_particles_are_shrunk_until_the_large_ones_fit_the_network():
    sizes = _sizes_with_widths([40] * 16 + [150] * 4)
    scale = choose_scale(sizes)
    assert scale < 1.0
    assert sizes.width["p95"] * scale == pytest.approx(LARGE_WIDTH_TARGET, rel=0.05)
    tile = choose_tile(sizes, scale, 16)
    assert tile % 16 == 0 and tile >= 2 * sizes.width["p95"] * scale
    assert tile_warning(sizes, tile, scale) is None
    assert "smaller than twice" in tile_warning(sizes, 64, 1.0)


def test_batch_keeps_enough_tiles_for_batchnorm_and_grows_for_small_tiles():
    # large tiles make slower steps, never batches of two or four tiles
    assert [choose_batch(tile) for tile in (64, 144, 256)] == [MIN_AUTO_BATCH] * 3
    # tiles under 64 px (images smaller than the default tile) keep a step's pixels
    assert choose_batch(32) == 32 and choose_batch(48) > MIN_AUTO_BATCH


def test_width_narrows_where_a_step_holds_more_pixels_than_eight_64_px_tiles():
    # the default tiles and the batches that keep their pixels: the default width
    assert [choose_width(tile, choose_batch(tile)) for tile in (32, 48, 64)] == [16, 16, 16]
    # a step's cost grows with its pixels and the width squared: 2.25x the tile side, about 1/2.25 the width
    assert choose_width(144, 8) == 8 and choose_width(96, 8) == 12 and choose_width(80, 8) == 12
    # never below the floor, never above the width narrowed from, which need not be 16
    assert choose_width(256, 8) == MIN_AUTO_WIDTH and choose_width(64, 2) == 16
    assert choose_width(128, 8, default=32) == 16
    with pytest.raises(ValueError, match="must be positive"):
        choose_width(0, 8)


def test_scale_never_shrinks_the_median_particle_below_the_floor():
    # a few huge particles must not shrink the many small ones into the background
    sizes = _sizes_with_widths([14] * 15 + [200] * 5)
    assert sizes.width["p50"] * choose_scale(sizes) >= 12.0 - 0.5


def test_tile_never_exceeds_the_scaled_image():
    sizes = ParticleSizes.of_masks([_discs(100, [(50, 50, 45)])])
    tile = choose_tile(sizes, 1.0, 16)
    assert tile <= 100 and tile % 16 == 0


def test_a_particle_larger_than_half_its_image_is_refused():
    inverted = np.ones((40, 40), np.int32)
    inverted[10:14, 10:14] = 0
    sizes = ParticleSizes.of_masks([inverted])
    with pytest.raises(SkipnasError, match="data/train masks: a particle covers 99% of its image.*inverted"):
        check_particles_fit(sizes, "data/train masks")
    check_particles_fit(ParticleSizes.of_masks([_discs(40, [(20, 20, 8)])]), "fine")


def test_min_areas_follow_the_median_particle_and_never_reach_it():
    sizes = _sizes_with_widths([40] * 10)
    areas = min_area_grid(sizes)
    assert areas[0] >= 1 and 0 not in areas
    assert max(areas) < sizes.area["p50"] * 0.5 and list(areas) == sorted(areas)


def test_zoom_augmentation_only_where_images_differ_in_particle_size():
    same = ParticleSizes.of_masks([_discs(200, [(50, 50, 10)]), _discs(200, [(50, 50, 11)])])
    assert zoom_range(same) is None
    differ = ParticleSizes.of_masks([_discs(400, [(100, 100, 8)]), _discs(400, [(200, 200, 60)])])
    low, high = zoom_range(differ)
    assert low < 1 < high and high <= 1.5
