from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

import skipnas.data.demo as demo
from skipnas.data.demo import (
    DEMO_CLASSES,
    DEMO_SIZE,
    DEMO_SPLITS,
    class_instances,
    demo_classes,
    demo_dataset_path,
    make_demo_image,
    write_demo_dataset,
)
from skipnas.data.io import read_image, read_mask
from skipnas.data.validate import check_dataset
from skipnas.errors import SkipnasError
from skipnas.paths import cache_dir

SAMPLES = 24  # images drawn for the content tests: a few per test, all tiny


def _images(count: int = SAMPLES, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray, dict[int, str]]]:
    return [make_demo_image(np.random.default_rng([seed, index])) for index in range(count)]


def _dilated(mask: np.ndarray) -> np.ndarray:
    return cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)


def _touching_pairs(instances: np.ndarray, classes: dict[int, str], name: str) -> int:
    """Pairs of ``name`` instances whose 3x3-dilated masks meet the other's pixels."""
    ids = [i for i, c in classes.items() if c == name]
    pairs = 0
    for position, first in enumerate(ids):
        grown = _dilated(instances == first)
        pairs += sum(bool(np.any(grown & (instances == second))) for second in ids[position + 1 :])
    return pairs


def _otsu_dice(image: np.ndarray, foreground: np.ndarray, bright: bool) -> tuple[int, int]:
    """(overlap, total) of Otsu's threshold against the labelled foreground, for pooled Dice."""
    mode = cv2.THRESH_BINARY if bright else cv2.THRESH_BINARY_INV
    _, thresholded = cv2.threshold(image, 0, 1, mode | cv2.THRESH_OTSU)
    predicted = thresholded.astype(bool)
    return int(np.sum(predicted & foreground)), int(predicted.sum() + foreground.sum())


def test_make_demo_image_is_deterministic_for_a_seed() -> None:
    first = make_demo_image(np.random.default_rng(5))
    again = make_demo_image(np.random.default_rng(5))
    other = make_demo_image(np.random.default_rng(6))
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert first[2] == again[2]
    assert not np.array_equal(first[0], other[0])


def test_demo_images_are_small_grey_and_fully_classified() -> None:
    seen: set[str] = set()
    for image, instances, classes in _images():
        assert image.shape == (DEMO_SIZE, DEMO_SIZE) and image.dtype == np.uint8
        assert instances.dtype == np.int32
        ids = [int(v) for v in np.unique(instances) if v]
        assert ids == list(range(1, len(ids) + 1)) == sorted(classes)
        assert set(classes.values()) <= set(DEMO_CLASSES)
        for instance_id in ids:
            assert np.count_nonzero(instances == instance_id) >= demo.MIN_VISIBLE_PIXELS
        seen |= set(classes.values())
    assert seen == set(DEMO_CLASSES)


def test_demo_has_crossing_fibres_and_touching_beads() -> None:
    images = _images()
    crossing = sum(_touching_pairs(instances, classes, "fibre") > 0 for _, instances, classes in images)
    touching = sum(_touching_pairs(instances, classes, "bead") > 0 for _, instances, classes in images)
    assert crossing >= len(images) // 2
    assert touching >= len(images) // 2


def test_cluster_beads_touch_one_bead_and_overlap_none() -> None:
    rng = np.random.default_rng(3)
    for _ in range(50):
        centres, radii = [np.array([48.0, 48.0])], [4.0]
        for _ in range(5):
            placed = demo._touching_bead(rng, centres, radii)
            if placed is None:
                continue
            centre, radius = placed
            gaps = [np.hypot(*(centre - other)) - (r + radius) for other, r in zip(centres, radii)]
            assert min(gaps) >= -demo.TOUCH_OVERLAP_PX - 1e-6  # no bead stacked on another
            assert min(gaps) <= -demo.TOUCH_OVERLAP_PX + 1e-6  # and one it touches
            centres.append(centre)
            radii.append(radius)


def test_plain_thresholding_does_poorly_on_the_demo() -> None:
    images = _images()
    dice = {}
    for bright in (True, False):
        overlap = total = 0
        for image, instances, _ in images:
            o, t = _otsu_dice(image, instances > 0, bright)
            overlap, total = overlap + o, total + t
        dice[bright] = 2 * overlap / total
    # measured at about 0.46-0.52 (bright) and 0.09 (dark) over seeds 0-2
    assert max(dice.values()) < 0.7


def test_demo_dataset_is_cached_with_the_dataset_layout() -> None:
    path = demo_dataset_path()
    assert path == cache_dir() / f"demo-v{demo.DEMO_VERSION}-seed0"
    index = check_dataset(path)
    assert index.presplit
    assert {split: len(samples) for split, samples in index.splits.items()} == DEMO_SPLITS
    sample = index.splits["train"][0]
    assert read_image(sample.image_path).shape == (DEMO_SIZE, DEMO_SIZE)
    assert sample.mask_path is not None
    mask = read_mask(sample.mask_path)
    assert mask.kind == "instance" and mask.count == len(demo_classes(path)["train"][sample.stem])
    stamp = sample.image_path.stat().st_mtime_ns
    assert demo_dataset_path() == path
    assert sample.image_path.stat().st_mtime_ns == stamp  # reused, not regenerated


def test_demo_dataset_is_the_same_each_time(tmp_path: Path) -> None:
    cached = demo_dataset_path()
    fresh = write_demo_dataset(tmp_path / "demo")
    for split in DEMO_SPLITS:
        names = sorted(p.name for p in (cached / split / "images").iterdir())
        assert names == sorted(p.name for p in (fresh / split / "images").iterdir())
        for name in names:
            np.testing.assert_array_equal(read_image(cached / split / "images" / name), read_image(fresh / split / "images" / name))
            np.testing.assert_array_equal(
                read_mask(cached / split / "masks" / name).instances, read_mask(fresh / split / "masks" / name).instances
            )
    assert demo_classes(cached) == demo_classes(fresh)


def test_interrupted_generation_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = 0
    real_write = demo.write_image

    def failing_write(path: Path, array: np.ndarray) -> None:
        nonlocal calls
        calls += 1
        if calls > 5:
            raise KeyboardInterrupt
        real_write(path, array)

    monkeypatch.setattr(demo, "write_image", failing_write)
    with pytest.raises(KeyboardInterrupt):
        write_demo_dataset(tmp_path / "demo")
    assert list(tmp_path.iterdir()) == []


def test_write_demo_dataset_refuses_a_foreign_folder(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(SkipnasError, match="not an empty folder"):
        write_demo_dataset(out)
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_write_demo_dataset_fills_an_empty_folder_and_keeps_an_existing_demo(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    out.mkdir()
    assert write_demo_dataset(out, seed=3) == out
    image = out / "test" / "images" / "test-000.tif"
    stamp = image.stat().st_mtime_ns
    write_demo_dataset(out, seed=3)
    assert image.stat().st_mtime_ns == stamp
    with pytest.raises(SkipnasError):
        write_demo_dataset(out, seed=4)  # another seed's demo is not silently mixed in


def test_class_instances_keeps_one_class_and_its_ids() -> None:
    instances = np.array([[0, 1, 1], [2, 2, 3], [3, 4, 0]], np.uint16)
    classes = {1: "bead", 2: "fibre", 3: "bead", 4: "film", 9: "bead"}  # 9: an ID the mask no longer holds
    beads = class_instances(instances, classes, "bead")
    assert beads.dtype == np.int32
    assert beads.tolist() == [[0, 1, 1], [0, 0, 3], [3, 0, 0]]
    assert not class_instances(instances, classes, "fragment").any()
