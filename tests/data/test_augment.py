from __future__ import annotations

from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import pytest

from skipnas.data.augment import (
    AugmentConfig,
    AugmentError,
    NegateNormalised,
    apply_transform,
    build_eval_transform,
    build_train_transform,
    seed_transform,
)
from skipnas.data.io import image_range
from skipnas.errors import SkipnasError

GEOMETRIC = AugmentConfig(hflip=True, vflip=True, rotate90=True, p=0.5)


def _asymmetric_instances(size: int = 32) -> np.ndarray:
    """Instance IDs in a pattern whose 8 flips/rotations all differ, including IDs above 255."""
    instances = np.zeros((size, size), dtype=np.int32)
    instances[2:6, 3:12] = 1
    instances[10:20, 20:23] = 2
    instances[25:30, 5:7] = 300
    instances[0, size - 1] = 7
    return instances


@pytest.mark.parametrize("channels", [None, 3])
def test_flips_and_rot90_keep_image_and_mask_aligned(channels: int | None) -> None:
    instances = _asymmetric_instances() % 20  # image = 10 * id fits in uint8
    grey = (instances * 10).astype(np.uint8)
    image = grey if channels is None else np.dstack([grey] * channels)
    transform = build_train_transform(GEOMETRIC, [0.0] * (channels or 1), [1.0] * (channels or 1), 255.0, seed=0)
    outcomes = set()
    for _ in range(60):
        out_image, out_mask = apply_transform(transform, image, instances)
        assert out_image.shape == (32, 32, channels or 1) and out_image.dtype == np.float32
        assert out_mask.dtype == np.int32
        # normalise with mean 0, std 1 is x / 255: invert it and the relation must hold exactly
        for channel in range(channels or 1):
            assert np.array_equal(np.rint(out_image[:, :, channel] * 255.0), out_mask * 10)
        outcomes.add(out_mask.tobytes())
    assert len(outcomes) == 8  # all flip/rotation combinations occurred


def test_instance_ids_above_255_survive_augmentation() -> None:
    instances = _asymmetric_instances()
    instances[instances == 300] = 70_000
    image = np.zeros((32, 32), dtype=np.uint16)
    transform = build_train_transform(GEOMETRIC, [0.5], [0.2], 65535.0, seed=1)
    for _ in range(10):
        _, out_mask = apply_transform(transform, image, instances)
        ids, sizes = np.unique(out_mask, return_counts=True)
        assert ids.tolist() == [0, 1, 2, 7, 70_000]
        assert sizes.tolist() == np.unique(instances, return_counts=True)[1].tolist()


def test_normalisation_gives_the_expected_values_per_channel() -> None:
    image = np.random.default_rng(0).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    mean, std = [0.2, 0.4, 0.6], [0.1, 0.2, 0.4]
    out_image, _ = apply_transform(build_eval_transform(mean, std, 255.0), image, np.zeros((16, 24), np.int32))
    expected = (image / 255.0 - np.array(mean)) / np.array(std)
    np.testing.assert_allclose(out_image, expected, rtol=1e-5, atol=1e-5)
    # a known pixel: 51 / 255 = 0.2 is the mean of channel 0, so it maps to 0
    known = np.full((4, 4, 3), (51, 102, 204), dtype=np.uint8)
    out_known, _ = apply_transform(build_eval_transform(mean, std, 255.0), known, np.zeros((4, 4), np.int32))
    np.testing.assert_allclose(out_known[0, 0], [0.0, 0.0, 0.5], atol=1e-6)


def test_uint16_images_are_scaled_by_65535_before_normalising() -> None:
    image = np.array([[0, 65535], [32768, 13107]], dtype=np.uint16)
    transform = build_eval_transform([0.5], [0.25], image_range(image.dtype))
    out_image, out_mask = apply_transform(transform, image, np.array([[0, 1], [2, 3]], dtype=np.uint16))
    np.testing.assert_allclose(out_image[:, :, 0], (image / 65535.0 - 0.5) / 0.25, atol=1e-5)
    assert out_mask.dtype == np.int32 and out_mask.tolist() == [[0, 1], [2, 3]]


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
def test_photometric_transforms_stay_in_range_for_every_dtype(dtype: type) -> None:
    white = image_range(dtype)
    rng = np.random.default_rng(3)
    image = (rng.random((32, 32, 3)) * white).astype(dtype)
    config = AugmentConfig(brightness_contrast=True, blur=True, p=1.0)
    transform = build_train_transform(config, [0.5] * 3, [0.25] * 3, white, seed=2)
    plain = build_eval_transform([0.5] * 3, [0.25] * 3, white)
    instances = _asymmetric_instances()
    reference, _ = apply_transform(plain, image, instances)
    changed = False
    for _ in range(5):
        out_image, _ = apply_transform(transform, image, instances)
        # [0, 1] after ToFloat and clipping, so (x - 0.5) / 0.25 is in [-2, 2]
        assert np.isfinite(out_image).all()
        assert out_image.min() >= -2.0 - 1e-5 and out_image.max() <= 2.0 + 1e-5
        changed |= not np.allclose(np.sort(out_image.ravel()), np.sort(reference.ravel()), atol=1e-3)
    assert changed


def test_a_seed_makes_training_augmentation_reproducible() -> None:
    instances = _asymmetric_instances()
    image = (instances % 256).astype(np.uint8)
    config = AugmentConfig(brightness_contrast=True, p=0.5)

    def run(seed: int) -> list[bytes]:
        transform = build_train_transform(config, [0.5], [0.25], 255.0, seed=seed)
        return [apply_transform(transform, image, instances)[0].tobytes() for _ in range(6)]

    assert run(5) == run(5)
    assert run(5) != run(6)


def test_seed_transform_reseeds_an_existing_pipeline() -> None:
    instances = _asymmetric_instances()
    image = (instances % 256).astype(np.uint8)

    def masks(transform: A.Compose) -> list[bytes]:
        return [apply_transform(transform, image, instances)[1].tobytes() for _ in range(12)]

    unseeded = build_train_transform(GEOMETRIC, [0.5], [0.25], 255.0)
    seed_transform(unseeded, 9)
    assert masks(unseeded) == masks(build_train_transform(GEOMETRIC, [0.5], [0.25], 255.0, seed=9))


def test_config_switches_choose_the_transforms() -> None:
    transform = build_train_transform(AugmentConfig(hflip=False, rotate90=False, blur=True), [0.5], [0.25], 255.0)
    kinds = [type(t) for t in transform.transforms]
    assert kinds == [A.ToFloat, A.VerticalFlip, A.GaussianBlur, A.Normalize]
    assert all(t.p == 0.5 for t in transform.transforms[1:3])


def test_inversion_mirrors_each_channel_around_its_mean_and_keeps_the_mask_aligned() -> None:
    mean, std = 0.25, 0.5  # off centre: 1 - x would shift an inverted tile by (1 - 2 mean) / std
    config = AugmentConfig(hflip=True, vflip=False, rotate90=False, invert=True, p=1.0)
    transform = build_train_transform(config, [mean], [std], 255.0)
    image = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    mask = (image > 100).astype(np.int32)
    out, out_mask = apply_transform(transform, image, mask)
    expected = (2 * mean - image[:, ::-1] / 255.0 - mean) / std  # mirrored around the mean, then normalised
    assert np.allclose(out[:, :, 0], expected, atol=1e-5)
    assert np.array_equal(out_mask, mask[:, ::-1])
    kept, _ = apply_transform(build_eval_transform([mean], [std], 255.0), image, mask)
    assert np.allclose(out[:, :, 0], -kept[:, ::-1, 0], atol=1e-5)  # the eval tile's statistics, negated
    assert not any(isinstance(t, NegateNormalised) for t in build_train_transform(AugmentConfig(), [0.5], [0.25], 255.0).transforms)


def test_grey_input_gets_a_channel_axis() -> None:
    image = np.full((8, 8), 255, dtype=np.uint8)
    out_image, _ = apply_transform(build_eval_transform([0.0], [1.0], 255.0), image, np.zeros((8, 8), np.int64))
    assert out_image.shape == (8, 8, 1)
    np.testing.assert_allclose(out_image, 1.0)


def test_wrong_white_level_for_the_dtype_is_refused() -> None:
    transform = build_eval_transform([0.5], [0.25], 65535.0)
    with pytest.raises(ValueError, match="image_range"):
        apply_transform(transform, np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.int32))


def test_channel_count_must_match_the_statistics() -> None:
    transform = build_eval_transform([0.5, 0.5, 0.5], [0.25, 0.25, 0.25], 255.0)
    with pytest.raises(SkipnasError, match="1 channel"):
        apply_transform(transform, np.zeros((8, 8), np.uint8), np.zeros((8, 8), np.int32))


def test_image_and_mask_size_mismatch_is_a_user_error() -> None:
    with pytest.raises(SkipnasError, match="mask of 6x8"):
        apply_transform(build_eval_transform([0.5], [0.25], 255.0), np.zeros((8, 8), np.uint8), np.zeros((6, 8)))


@pytest.mark.parametrize(
    ("mean", "std"), [([0.5], [0.0]), ([0.5, 0.5], [0.25]), ([], []), ([float("nan")], [0.2])]
)
def test_bad_statistics_are_user_errors(mean: list[float], std: list[float]) -> None:
    with pytest.raises(AugmentError):
        build_eval_transform(mean, std, 255.0)


def test_bad_probability_and_dtype_are_user_errors() -> None:
    with pytest.raises(SkipnasError, match="probability"):
        AugmentConfig(p=1.5)
    with pytest.raises(SkipnasError, match="int32"):
        image_range(np.int32)
    assert (image_range(np.uint8), image_range(np.uint16), image_range(np.float32)) == (
        255.0,
        65535.0,
        1.0,
    )


def test_real_sem_image_and_mask_stay_aligned(sem_fibres_dir: Path) -> None:
    image_path = sorted((sem_fibres_dir / "val" / "images").glob("*.png"))[0]
    image = cv2.imread(str(image_path), cv2.IMREAD_UNCHANGED)[:96, :96]
    instances = cv2.imread(str(sem_fibres_dir / "val" / "masks" / image_path.name), cv2.IMREAD_UNCHANGED)[:96, :96]
    # mark the mask as white in a darkened image (<= 127) so that alignment can be read back
    marked = np.where(instances > 0, 255, image // 2).astype(np.uint8)
    transform = build_train_transform(GEOMETRIC, [0.0], [1.0], 255.0, seed=4)
    for _ in range(8):
        out_image, out_mask = apply_transform(transform, marked, instances)
        assert np.array_equal(np.rint(out_image[:, :, 0] * 255.0) == 255, out_mask > 0)
        assert np.array_equal(np.unique(out_mask), np.unique(instances.astype(np.int32)))
