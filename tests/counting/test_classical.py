from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from skipnas.counting.classical import (
    ClassicalConfig,
    classical_probabilities,
    evaluate_classical,
    guess_polarity,
    to_grey,
)
from skipnas.counting.postprocess import PostprocessConfig, count_particles
from skipnas.data.scan import resolve_dataset
from skipnas.errors import SkipnasError

SUMMARY_KEYS = {
    "dice",
    "precision",
    "recall",
    "iou",
    "count_mae",
    "count_mse",
    "exact_count_accuracy",
    "relative_count_error",
    "object_precision",
    "object_recall",
    "images",
    "rows",
}


def _scene(
    rng: np.random.Generator, particles: int, size: int = 64, bright: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Noisy grey background with a brightness ramp, and ``particles`` discs 60 grey levels off it."""
    truth = np.zeros((size, size), np.int32)
    centres = [(x, y) for y in (14, 32, 50) for x in (14, 32, 50)]
    for index, position in enumerate(rng.permutation(len(centres))[:particles]):
        cv2.circle(truth, centres[position], int(rng.integers(4, 7)), index + 1, -1)
    ramp = np.linspace(70, 110, size, dtype=np.float32)[None, :]
    image = ramp + rng.normal(0, 4, (size, size)).astype(np.float32)
    image[truth > 0] += 60 if bright else -60
    return np.clip(image, 0, 255).astype(np.uint8), truth


def _write_split(folder: Path, rng: np.random.Generator, counts: list[int], unlabelled: int = 0) -> None:
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir(parents=True)
    for index, particles in enumerate(counts):
        image, truth = _scene(rng, particles)
        assert cv2.imwrite(str(folder / "images" / f"{folder.name}{index}-1.png"), image)
        assert cv2.imwrite(str(folder / "masks" / f"{folder.name}{index}-1.png"), truth.astype(np.uint16))
    for index in range(unlabelled):
        image, _ = _scene(rng, 2)
        assert cv2.imwrite(str(folder / "images" / f"unlabelled{index}-1.png"), image)


def _dataset(root: Path) -> Path:
    rng = np.random.default_rng(0)
    _write_split(root / "train", rng, [2, 3])
    _write_split(root / "val", rng, [1, 3, 4, 2])
    _write_split(root / "test", rng, [2, 5, 3], unlabelled=1)
    return root


def test_bright_particles_are_above_one_half_and_background_below() -> None:
    image, truth = _scene(np.random.default_rng(1), particles=4)
    prob = classical_probabilities(image, ClassicalConfig(polarity="bright"))
    assert prob.dtype == np.float32 and prob.shape == image.shape
    assert 0.0 <= prob.min() and prob.max() <= 1.0
    assert np.mean(prob[truth > 0] > 0.5) > 0.9
    assert np.mean(prob[truth == 0] > 0.5) < 0.05
    assert count_particles(prob, PostprocessConfig(min_area=10)).count == 4


@pytest.mark.parametrize("method", ["adaptive", "otsu"])
def test_dark_particles_need_dark_polarity_and_auto_finds_it(method: str) -> None:
    image, truth = _scene(np.random.default_rng(2), particles=3, bright=False)
    assert guess_polarity(to_grey(image)) == "dark"
    dark = classical_probabilities(image, ClassicalConfig(threshold_method=method, polarity="dark"))
    auto = classical_probabilities(image, ClassicalConfig(threshold_method=method, polarity="auto"))
    bright = classical_probabilities(image, ClassicalConfig(threshold_method=method, polarity="bright"))
    assert np.array_equal(auto, dark)
    assert np.mean(dark[truth > 0] > 0.5) > 0.9
    assert np.mean(bright[truth > 0] > 0.5) < 0.05
    if method == "adaptive":  # Otsu's single level also takes in the dark end of the brightness ramp
        assert count_particles(dark, PostprocessConfig(min_area=10)).count == 3


def test_offset_and_softness_shape_the_map() -> None:
    image = np.full((32, 32), 100, np.uint8)
    image[8:24, 8:24] = 120  # 20 grey levels above the flat background
    config = ClassicalConfig(threshold_method="otsu", polarity="bright", blur=0, offset=10.0, softness=8.0)
    prob = classical_probabilities(image, config)
    # Otsu puts the level at the background (100): the square stands 20 - 10 = 10 grey levels above
    assert prob[16, 16] == pytest.approx(1 / (1 + np.exp(-10 / 8)), abs=1e-5)
    assert prob[0, 0] == pytest.approx(1 / (1 + np.exp(10 / 8)), abs=1e-5)


def test_sixteen_bit_and_rgb_images_match_eight_bit() -> None:
    image, _ = _scene(np.random.default_rng(3), particles=3)
    reference = classical_probabilities(image)
    wide = classical_probabilities(image.astype(np.uint16) * 257)
    rgb = classical_probabilities(np.repeat(image[:, :, None], 3, axis=2))
    assert np.allclose(wide, reference, atol=1e-4)
    assert np.allclose(rgb, reference, atol=1e-3)


@pytest.mark.parametrize(
    "changes",
    [
        {"block_size": 50},
        {"block_size": 1},
        {"polarity": "up"},
        {"threshold_method": "triangle"},
        {"blur": 2},
        {"softness": 0},
    ],
)
def test_bad_classical_settings_are_user_errors(changes: dict[str, object]) -> None:
    with pytest.raises(SkipnasError, match=next(iter(changes))):
        ClassicalConfig(**changes)  # type: ignore[arg-type]


def test_evaluate_on_a_tiny_dataset(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    root = _dataset(tmp_path / "ds")
    result = evaluate_classical(root, "test", calibrate_on="val", progress=lambda done, total: calls.append((done, total)))
    assert SUMMARY_KEYS <= set(result)
    assert result["images"] == 3 and result["skipped_unlabelled"] == 1
    assert [row["true_count"] for row in result["rows"]] == [2, 5, 3]
    assert result["count_mae"] == 0.0 and result["dice"] > 0.8
    assert result["calibrated_on"] == "val" and result["calibration_images"] == 4
    assert result["polarity"] == "bright" and result["notes"] == []
    assert PostprocessConfig.from_dict(result["postprocess"]).threshold == result["calibration"]["threshold"]
    assert calls[-1] == (7, 7)


def test_auto_adds_the_training_images_when_val_holds_few_particles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _dataset(tmp_path / "ds")  # val: 4 images, 10 particles; train: 2 images, 5 particles
    result = evaluate_classical(root, "test")
    assert result["calibrated_on"] == "val+train" and result["calibration_images"] == 6
    assert result["notes"] == ["calibrated on val and 2 training image(s): val holds 10 particles, fewer than 100"]
    monkeypatch.setattr("skipnas.counting.classical.FEW_PARTICLES", 10)  # enough in val: val alone, as with "val"
    again = evaluate_classical(root, "test")
    assert again["calibrated_on"] == "val" and again["calibration_images"] == 4 and again["notes"] == []
    assert again["postprocess"] == evaluate_classical(root, "test", calibrate_on="val")["postprocess"]


def test_without_calibration_the_config_postprocess_is_used(tmp_path: Path) -> None:
    base = PostprocessConfig(threshold=0.55, min_area=12)
    result = evaluate_classical(_dataset(tmp_path / "ds"), "test", ClassicalConfig(postprocess=base), calibrate_on=None)
    assert result["calibrated_on"] is None and result["calibration"] is None
    assert PostprocessConfig.from_dict(result["postprocess"]) == base


def test_a_calibration_split_without_masks_is_noted(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "ds")
    result = evaluate_classical(root, "test", calibrate_on="train2")
    assert result["calibrated_on"] is None and "'train2'" in result["notes"][0]


def test_dataset_problems_are_one_line_user_errors(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "ds")
    with pytest.raises(SkipnasError, match="no 'holdout' split"):
        evaluate_classical(root, "holdout")
    with pytest.raises(SkipnasError, match="dataset folder not found"):
        evaluate_classical(tmp_path / "missing")
    for mask in (root / "test" / "masks").iterdir():
        mask.unlink()
    with pytest.raises(SkipnasError, match="no images with masks"):
        evaluate_classical(root, "test")
    bad = root / "val" / "masks" / "val0-1.png"
    assert cv2.imwrite(str(bad), np.zeros((40, 64), np.uint16))
    with pytest.raises(SkipnasError, match="val0-1.png: mask is 40x64"):
        evaluate_classical(root, "train")


def test_evaluate_on_the_demo_dataset() -> None:
    result = evaluate_classical(resolve_dataset("demo"), "test")
    assert SUMMARY_KEYS <= set(result)
    # the demo's val split holds 79 particles: training images join the calibration
    assert result["images"] == 8 and result["calibrated_on"] == "val+train"
    assert 0.0 < result["dice"] < 1.0 and result["count_mae"] >= 0.0


def test_classical_baseline_on_the_real_sem_test_split(sem_fibres_dir: Path) -> None:
    result = evaluate_classical(sem_fibres_dir, "test")
    numbers = (
        f"Dice {result['dice']:.3f}, relative count error {result['relative_count_error']:.3f}, "
        f"count MAE {result['count_mae']:.2f}, object F1 {result['object_f1']:.3f} on {result['images']} images"
    )
    assert result["images"] == 11 and result["skipped_unlabelled"] == 10, numbers
    assert 0.2 < result["dice"] < 0.9, numbers
    assert result["relative_count_error"] < 0.8, numbers
