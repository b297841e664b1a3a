from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from skipnas.data.tiling import (
    TileConfig,
    TilingError,
    Window,
    blend_weights,
    iter_tile_batches,
    predict_tiled,
    tile_windows,
    training_tiles,
)
from skipnas.errors import SkipnasError


def _coverage(height: int, width: int, windows: list[Window]) -> np.ndarray:
    counts = np.zeros((height, width), dtype=np.int32)
    for window in windows:
        counts[window.slices] += 1
    return counts


@pytest.mark.parametrize(
    ("height", "width", "tile", "overlap"),
    [(67, 93, 32, 8), (64, 64, 32, 0), (64, 96, 32, 0), (20, 25, 32, 8), (20, 93, 32, 4), (33, 33, 32, 31)],
)
def test_windows_cover_every_pixel_inside_the_image(height: int, width: int, tile: int, overlap: int) -> None:
    windows = tile_windows(height, width, tile, overlap)
    assert (_coverage(height, width, windows) >= 1).all()
    for window in windows:
        assert 0 <= window.y and window.y + window.h <= height
        assert 0 <= window.x and window.x + window.w <= width
        assert window.h == min(tile, height) and window.w == min(tile, width)


def test_neighbouring_windows_overlap_by_at_least_the_overlap() -> None:
    windows = tile_windows(67, 93, 32, 8)
    xs = sorted({w.x for w in windows})
    ys = sorted({w.y for w in windows})
    assert xs == [0, 24, 48, 61] and ys == [0, 24, 35]
    for starts in (xs, ys):
        assert all(32 - (b - a) >= 8 for a, b in zip(starts, starts[1:]))


def test_exact_multiple_without_overlap_gives_a_plain_grid() -> None:
    windows = tile_windows(64, 96, 32, 0)
    assert len(windows) == 6
    assert (_coverage(64, 96, windows) == 1).all()


def test_image_smaller_than_tile_gets_one_window() -> None:
    assert tile_windows(20, 25, 32, 8) == [Window(0, 0, 20, 25)]


@pytest.mark.parametrize(("tile", "overlap"), [(32, 32), (32, 40), (32, -1), (0, 0), (16, 2.5)])
def test_bad_tile_settings_are_user_errors(tile: int, overlap: int) -> None:
    with pytest.raises(SkipnasError, match="tile"):
        tile_windows(64, 64, tile, overlap)
    with pytest.raises(ValueError):
        tile_windows(64, 64, tile, overlap)


def test_empty_image_cannot_be_tiled() -> None:
    with pytest.raises(TilingError, match="empty image"):
        tile_windows(0, 10, 8, 0)


def test_blend_weights_are_positive_and_partition_unity_across_the_overlap() -> None:
    weights = blend_weights(32, 8)
    assert weights.shape == (32, 32) and weights.dtype == np.float32
    assert (weights > 0).all()
    ramp = weights[16]  # a row through the flat middle
    # a right neighbour starts at stride 24: its ramp plus ours is 1 over the 8 shared columns
    np.testing.assert_allclose(ramp[24:] + ramp[:8], 1.0, rtol=1e-6)
    assert np.array_equal(blend_weights(16, 0), np.ones((16, 16), dtype=np.float32))


def _identity(batch: np.ndarray) -> np.ndarray:
    return batch.copy()


@pytest.mark.parametrize(
    ("channels", "height", "width", "tile", "overlap"),
    [(1, 67, 93, 32, 8), (3, 67, 93, 32, 8), (1, 20, 25, 32, 8), (2, 67, 93, 32, 0), (1, 20, 93, 32, 4)],
)
def test_identity_model_round_trip_reproduces_the_image(
    channels: int, height: int, width: int, tile: int, overlap: int
) -> None:
    image = np.random.default_rng(0).random((channels, height, width), dtype=np.float32)
    stitched = predict_tiled(_identity, image, tile, overlap, batch_size=3)
    assert stitched.shape == image.shape and stitched.dtype == np.float32
    np.testing.assert_allclose(stitched, image, rtol=1e-6, atol=1e-6)


def test_constant_model_gives_that_constant_with_its_own_class_count() -> None:
    image = np.zeros((1, 67, 93), dtype=np.float32)

    def constant(batch: np.ndarray) -> np.ndarray:
        logits = np.empty((batch.shape[0], 2, 32, 32), dtype=np.float32)
        logits[:, 0], logits[:, 1] = 2.5, -7.0
        return logits

    stitched = predict_tiled(constant, image, 32, 8)
    assert stitched.shape == (2, 67, 93)
    np.testing.assert_allclose(stitched[0], 2.5, rtol=1e-6)
    np.testing.assert_allclose(stitched[1], -7.0, rtol=1e-6)


@pytest.mark.parametrize("batch_size", [1, 4, 5])
def test_predict_sees_full_tiles_in_batches_of_at_most_batch_size(batch_size: int) -> None:
    seen: list[tuple[int, ...]] = []

    def recording(batch: np.ndarray) -> np.ndarray:
        assert batch.dtype == np.float32
        seen.append(batch.shape)
        return batch[:, :1]

    predict_tiled(recording, np.ones((2, 67, 93), dtype=np.float32), 32, 8, batch_size=batch_size)
    assert all(shape[0] <= batch_size and shape[1:] == (2, 32, 32) for shape in seen)
    assert sum(shape[0] for shape in seen) == len(tile_windows(67, 93, 32, 8)) == 12


def test_small_image_tiles_are_reflect_padded_to_the_tile() -> None:
    image = np.arange(3 * 5, dtype=np.float32).reshape(1, 3, 5)
    [(windows, batch)] = list(iter_tile_batches(image, tile_windows(3, 5, 8, 0), 8, 4))
    assert windows == [Window(0, 0, 3, 5)] and batch.shape == (1, 1, 8, 8)
    assert np.array_equal(batch[0, 0, :3, :5], image[0])
    assert np.array_equal(batch[0, 0, 3, :5], image[0, 1])  # row 3 mirrors row 1


def test_wrong_prediction_shape_is_reported() -> None:
    with pytest.raises(ValueError, match="predict returned shape"):
        predict_tiled(lambda batch: batch[:, :, :16], np.ones((1, 40, 40), dtype=np.float32), 32, 8)


def test_progress_bar_goes_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    image = np.random.default_rng(1).random((1, 40, 40), dtype=np.float32)
    np.testing.assert_allclose(predict_tiled(_identity, image, 32, 8, progress=True), image, rtol=1e-6, atol=1e-6)
    assert capsys.readouterr().out == ""


def _one_particle_per_tile_row(height: int, width: int, size: int) -> np.ndarray:
    """A mask with one small particle in the first tile of every tile row, all other tiles empty."""
    instances = np.zeros((height, width), dtype=np.uint16)
    for label, y in enumerate(range(0, height - size + 1, size), start=1):
        instances[y + 2 : y + 6, 3:7] = label
    return instances


def test_training_tiles_count_shapes_and_alignment() -> None:
    instances = _one_particle_per_tile_row(64, 96, 32)
    image = np.dstack([instances * 10, instances * 20, instances * 30]).astype(np.uint8)
    tiles = training_tiles(image, instances, TileConfig(size=32, overlap=0, empty_keep_fraction=1.0), rng=0)
    assert len(tiles) == 6
    for image_tile, mask_tile in tiles:
        assert image_tile.shape == (32, 32, 3) and image_tile.dtype == np.uint8
        assert mask_tile.shape == (32, 32) and mask_tile.dtype == np.uint16
        assert np.array_equal(image_tile[:, :, 2], mask_tile * 30)
    assert [int(mask.max()) for _, mask in tiles] == [1, 0, 0, 2, 0, 0]  # row-major order


@pytest.mark.parametrize(("fraction", "allowed_empty"), [(0.0, {0}), (0.25, {22, 23}), (1.0, {90})])
def test_empty_tiles_are_kept_at_the_configured_fraction(fraction: float, allowed_empty: set[int]) -> None:
    instances = _one_particle_per_tile_row(320, 320, 32)  # 100 tiles, 10 with a particle, 90 empty
    config = TileConfig(size=32, overlap=0, empty_keep_fraction=fraction)
    tiles = training_tiles(instances.astype(np.uint8), instances, config, rng=np.random.default_rng(7))
    empty = sum(1 for _, mask in tiles if not mask.any())
    assert len(tiles) - empty == 10
    assert empty in allowed_empty  # 0.25 * 90 = 22.5: the half is rounded at random


def test_kept_empty_share_matches_the_fraction_over_many_images() -> None:
    # 2 empty tiles per image at 0.1 would round to 0 every time; random rounding keeps 0.2 on average
    instances = _one_particle_per_tile_row(64, 64, 32)
    config = TileConfig(size=32, empty_keep_fraction=0.1)
    rng = np.random.default_rng(11)
    kept = [len(training_tiles(instances, instances, config, rng)) - 2 for _ in range(1000)]
    assert abs(np.mean(kept) - 0.2) < 0.05


def test_empty_tile_choice_is_deterministic_for_a_seed_and_varies_between_seeds() -> None:
    instances = _one_particle_per_tile_row(320, 320, 32)
    image = np.random.default_rng(0).integers(0, 255, (320, 320), dtype=np.uint8)
    config = TileConfig(size=32, empty_keep_fraction=0.3)

    def chosen(seed: int) -> list[bytes]:
        return [tile.tobytes() for tile, _ in training_tiles(image, instances, config, rng=seed)]

    assert chosen(3) == chosen(3)
    assert chosen(3) != chosen(4)


def test_small_training_image_is_padded_reflect_for_image_and_zero_for_mask() -> None:
    image = np.random.default_rng(2).integers(1, 255, (20, 25), dtype=np.uint8)
    instances = np.ones((20, 25), dtype=np.int32)
    [(image_tile, mask_tile)] = training_tiles(image, instances, TileConfig(size=32), rng=0)
    assert image_tile.shape == mask_tile.shape == (32, 32)
    assert np.array_equal(image_tile[:20, :25], image)
    assert np.array_equal(image_tile[20, :25], image[18])
    assert mask_tile[:20, :25].all() and not mask_tile[20:].any() and not mask_tile[:, 25:].any()


def test_image_and_mask_of_different_size_is_a_user_error() -> None:
    with pytest.raises(SkipnasError, match="mask of 30x40"):
        training_tiles(np.zeros((40, 40), np.uint8), np.zeros((30, 40), np.int32), TileConfig(size=16))


@pytest.mark.parametrize(
    "kwargs", [{"size": 0}, {"size": 16, "overlap": 16}, {"empty_keep_fraction": 1.5}, {"empty_keep_fraction": -0.1}]
)
def test_bad_tile_config_is_a_user_error(kwargs: dict[str, float]) -> None:
    with pytest.raises(SkipnasError):
        TileConfig(**kwargs)  # type: ignore[arg-type]


def test_real_sem_image_tiles_and_stitches(sem_fibres_dir: Path) -> None:
    image_path = sorted((sem_fibres_dir / "train" / "images").glob("*.png"))[0]
    image = cv2.imread(str(image_path), cv2.IMREAD_UNCHANGED)
    instances = cv2.imread(str(sem_fibres_dir / "train" / "masks" / image_path.name), cv2.IMREAD_UNCHANGED)
    assert image.shape == instances.shape == (512, 512)
    tiles = training_tiles(image, instances, TileConfig(size=96, overlap=16, empty_keep_fraction=0.0), rng=0)
    assert tiles and all(mask.any() and tile.shape == (96, 96) for tile, mask in tiles)
    # every instance appears in some kept tile
    assert set(np.unique(instances)) - {0} <= set(np.unique(np.concatenate([m.ravel() for _, m in tiles])))
    as_float = (image.astype(np.float32) / 255.0)[np.newaxis]
    np.testing.assert_allclose(predict_tiled(_identity, as_float, 96, 16, batch_size=8), as_float, atol=1e-6)
