from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from skipnas.counting.postprocess import (
    Detections,
    PostprocessConfig,
    PostprocessConfigError,
    count_particles,
    count_per_class,
    describe,
    detections_from_labels,
    mask_from_probabilities,
    read_postprocess_config,
    write_postprocess_config,
)
from skipnas.errors import SkipnasError


def _discs(shape: tuple[int, int], *discs: tuple[int, int, int]) -> np.ndarray:
    image = np.zeros(shape, np.uint8)
    for x, y, radius in discs:
        cv2.circle(image, (x, y), radius, 1, -1)
    return image.astype(np.float32)


def _strand(width: int, gap: int = 0) -> np.ndarray:
    """A curved strand across a 48x96 image, optionally cut by a gap of ``gap`` columns at x = 48."""
    image = np.zeros((48, 96), np.uint8)
    points = np.array([[4, 10], [30, 36], [60, 14], [92, 38]], np.int32)
    cv2.polylines(image, [points], False, 1, thickness=width)
    if gap:
        image[:, 48 : 48 + gap] = 0
    return image.astype(np.float32)


@pytest.mark.parametrize("method", ["blobs", "watershed"])
def test_two_separate_blobs_count_two(method: str) -> None:
    prob = _discs((48, 64), (14, 20, 6), (44, 28, 8))
    detections = count_particles(prob, PostprocessConfig(method=method))
    assert detections.count == 2
    assert sorted(np.unique(detections.labels)) == [0, 1, 2]


def test_touching_discs_are_one_blob_and_two_after_watershed() -> None:
    prob = _discs((64, 80), (26, 32, 12), (48, 32, 12))  # centres 22 px apart: they overlap
    assert count_particles(prob, PostprocessConfig(method="blobs")).count == 1
    split = count_particles(prob, PostprocessConfig(method="watershed"))
    assert split.count == 2
    # the split keeps every pixel and cuts at the neck: each half is about one disc
    assert split.area.sum() == int(prob.sum())
    assert split.area.min() > 0.4 * prob.sum()
    assert sorted(split.centroid[:, 0].round()) == pytest.approx([24, 50], abs=3)


def test_watershed_keeps_an_even_strand_whole() -> None:
    assert count_particles(_strand(width=5), PostprocessConfig(method="watershed")).count == 1


def test_thin_strand_survives_without_erosion_and_vanishes_with_it() -> None:
    strand = _strand(width=2)
    assert count_particles(strand, PostprocessConfig(erode=0, min_area=10)).count == 1
    assert count_particles(strand, PostprocessConfig(erode=5, min_area=10)).count == 0


def test_dilation_reconnects_a_strand_broken_by_one_pixel() -> None:
    broken = _strand(width=3, gap=1)
    assert count_particles(broken, PostprocessConfig(dilate=0)).count == 2
    assert count_particles(broken, PostprocessConfig(dilate=3)).count == 1


def test_erosion_then_dilation_restores_a_disc() -> None:
    disc = _discs((40, 40), (20, 20, 10))
    mask = mask_from_probabilities(disc, PostprocessConfig(erode=3, dilate=3))
    assert mask.dtype == np.uint8 and set(np.unique(mask)) == {0, 1}
    assert abs(int(mask.sum()) - int(disc.sum())) < 0.05 * disc.sum()


def test_specks_below_min_area_are_dropped() -> None:
    prob = np.zeros((32, 32), np.float32)
    prob[2:4, 2:4] = 1.0  # 4 px
    prob[10:13, 10:13] = 1.0  # 9 px
    prob[20:25, 20:24] = 1.0  # 20 px
    assert count_particles(prob, PostprocessConfig(min_area=21)).count == 0
    kept = count_particles(prob, PostprocessConfig(min_area=9))
    assert kept.count == 2 and sorted(kept.area) == [9, 20]  # min_area itself is kept
    assert set(np.unique(kept.labels)) == {0, 1, 2}  # relabelled 1..N
    assert count_particles(prob, PostprocessConfig(min_area=0)).count == 3


@pytest.mark.parametrize("method", ["blobs", "watershed"])
def test_boxes_areas_and_centroids_are_exact_on_rectangles(method: str) -> None:
    prob = np.zeros((40, 50), np.float32)
    prob[5:9, 3:20] = 0.8  # x 3..19, y 5..8
    prob[20:30, 30:33] = 0.6  # x 30..32, y 20..29
    detections = count_particles(prob, PostprocessConfig(min_area=1, method=method))
    order = np.argsort(detections.bbox[:, 0])
    assert detections.bbox[order].tolist() == [[3, 5, 17, 4], [30, 20, 3, 10]]
    assert detections.area[order].tolist() == [68, 30]
    assert detections.centroid[order] == pytest.approx(np.array([[11.0, 6.5], [31.0, 24.5]]))
    for index in range(detections.count):  # labels agree with the per-particle rows
        assert int((detections.labels == index + 1).sum()) == detections.area[index]


def test_confidence_is_the_mean_probability_inside_the_particle() -> None:
    prob = np.zeros((20, 20), np.float32)
    prob[2:6, 2:6] = 0.6
    prob[2:4, 2:6] = 1.0  # half of the square at 1.0, half at 0.6
    detections = count_particles(prob, PostprocessConfig(min_area=1))
    assert detections.confidence.tolist() == pytest.approx([0.8])
    row = detections.rows()[0]
    assert json.loads(json.dumps(row)) == row
    assert row == {"id": 1, "bbox": [2, 2, 4, 4], "area": 16, "centroid": [3.5, 3.5], "confidence": pytest.approx(0.8)}


@pytest.mark.parametrize("method", ["blobs", "watershed", "seeded"])
def test_particles_whose_peak_falls_short_are_dropped_whole(method: str) -> None:
    # a particle with a sure core (0.99) in a faint rim (0.45), and an even 0.65 smudge: the smudge has the
    # higher mean probability, the particle the higher peak
    prob = 0.45 * _discs((40, 60), (14, 20, 7))
    prob[18:23, 12:17] = 0.99
    prob[_discs((40, 60), (44, 20, 7)) > 0] = 0.65
    auxiliary = _discs((40, 60), (14, 20, 3), (44, 20, 3))
    every = count_particles(prob, PostprocessConfig(threshold=0.3, min_area=1, method=method), auxiliary)
    assert every.count == 2
    sure = PostprocessConfig(threshold=0.3, min_area=1, min_peak_probability=0.9, method=method)
    kept = count_particles(prob, sure, auxiliary)
    assert kept.count == 1 and kept.centroid[0] == pytest.approx([14.0, 20.0], abs=0.5)
    assert kept.area.tolist() == [int((prob[:, :30] > 0.3).sum())]  # the particle is kept whole, rim and all
    assert kept.confidence[0] < float(prob[prob == 0.65].mean())
    assert set(np.unique(kept.labels)) == {0, 1}
    # a peak at the limit itself is kept, as an area of min_area is
    assert count_particles(prob, sure.replace(min_peak_probability=0.65), auxiliary).count == 2
    assert count_particles(prob, sure.replace(min_peak_probability=0.66), auxiliary).count == 1
    assert "peak probability at least 0.9" in describe(sure)
    assert "peak" not in describe(PostprocessConfig())


def test_threshold_is_strict() -> None:
    prob = np.full((8, 8), 0.5, np.float32)
    assert count_particles(prob, PostprocessConfig(threshold=0.5, min_area=1)).count == 0
    assert count_particles(prob, PostprocessConfig(threshold=0.49, min_area=1)).count == 1


def test_empty_map_gives_no_detections() -> None:
    detections = count_particles(np.zeros((16, 16), np.float32), PostprocessConfig(method="watershed"))
    assert detections.count == 0 and detections.labels.shape == (16, 16) and not detections.labels.any()
    assert detections.bbox.shape == (0, 4) and detections.rows() == []


def test_detections_from_labels_drops_small_ids_and_relabels() -> None:
    labels = np.zeros((10, 10), np.int32)
    labels[0:2, 0:2] = 7
    labels[5:9, 5:8] = 3
    detections = detections_from_labels(labels, np.ones((10, 10), np.float32), min_area=5)
    assert isinstance(detections, Detections)
    assert detections.count == 1 and detections.bbox.tolist() == [[5, 5, 3, 4]]
    assert set(np.unique(detections.labels)) == {0, 1}
    prob = np.where(labels == 7, 0.9, 0.4).astype(np.float32)
    sure = detections_from_labels(labels, prob, min_area=1, min_peak_probability=0.5)
    assert sure.count == 1 and sure.bbox.tolist() == [[0, 0, 2, 2]] and sure.confidence.tolist() == pytest.approx([0.9])


def test_count_per_class_counts_each_channel() -> None:
    stack = np.zeros((3, 32, 32), np.float32)
    stack[0, 2:8, 2:8] = 0.9
    stack[0, 20:26, 20:26] = 0.9
    stack[1, 2:8, 20:28] = 0.8
    counts = count_per_class(stack, PostprocessConfig(min_area=5), names=["fibre", "fragment", "film"])
    assert {name: d.count for name, d in counts.items()} == {"fibre": 2, "fragment": 1, "film": 0}
    assert list(count_per_class(stack, PostprocessConfig(min_area=5))) == ["0", "1", "2"]


def test_count_per_class_exclusive_keeps_each_pixel_in_its_most_probable_class() -> None:
    stack = np.zeros((2, 16, 16), np.float32)
    stack[0, 2:10, 2:10] = 0.9
    stack[1, 2:10, 2:10] = 0.7  # the same pixels, less probable in class 1
    independent = count_per_class(stack, PostprocessConfig(min_area=1))
    exclusive = count_per_class(stack, PostprocessConfig(min_area=1), exclusive=True)
    assert [d.count for d in independent.values()] == [1, 1]
    assert [d.count for d in exclusive.values()] == [1, 0]


def test_count_per_class_takes_one_config_per_class() -> None:
    stack = np.zeros((2, 16, 16), np.float32)
    stack[:, 4:7, 4:7] = 0.9  # 9 px in both channels
    counts = count_per_class(stack, [PostprocessConfig(min_area=5), PostprocessConfig(min_area=10)])
    assert [d.count for d in counts.values()] == [1, 0]
    with pytest.raises(ValueError):
        count_per_class(stack, [PostprocessConfig()])


def test_config_round_trips_through_json(tmp_path: Path) -> None:
    config = PostprocessConfig(threshold=0.35, erode=3, dilate=5, dilate_iterations=2, min_area=25, method="watershed")
    assert PostprocessConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert PostprocessConfig.from_dict({}) == PostprocessConfig()
    path = tmp_path / "model" / "postprocess.json"
    write_postprocess_config(path, config)
    assert read_postprocess_config(path) == config
    assert "threshold 0.35, erode 3, dilate 5 x2, min area 25 px, watershed" in describe(config)


@pytest.mark.parametrize(
    "changes",
    [
        {"threshold": 1.5},
        {"threshold": "0.5"},
        {"erode": -1},
        {"dilate": 2.5},
        {"min_area": True},
        {"erode_iterations": 0},
        {"method": "hough"},
        {"watershed_peak_fraction": 2.0},
        {"min_peak_probability": 1.2},
        {"colour": "red"},
    ],
)
def test_bad_settings_are_one_line_user_errors(changes: dict[str, object]) -> None:
    with pytest.raises(SkipnasError) as info:
        PostprocessConfig.from_dict(changes)
    assert isinstance(info.value, PostprocessConfigError)
    assert "\n" not in str(info.value) and next(iter(changes)) in str(info.value)


def test_reading_a_bad_config_file_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.json"
    with pytest.raises(SkipnasError, match="missing.json: file not found"):
        read_postprocess_config(missing)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(SkipnasError, match="broken.json: not valid JSON"):
        read_postprocess_config(broken)
    wrong = tmp_path / "wrong.json"
    wrong.write_text('{"threshold": 7}')
    with pytest.raises(SkipnasError, match="wrong.json: threshold"):
        read_postprocess_config(wrong)


def test_a_postprocess_file_from_before_the_newer_methods_loads_with_their_defaults(tmp_path) -> None:
    from skipnas.counting.postprocess import read_postprocess_config

    old = {
        "threshold": 0.7, "erode": 3, "dilate": 0, "erode_iterations": 1, "dilate_iterations": 1, "min_area": 300,
        "method": "watershed", "watershed_min_distance": 10, "watershed_peak_fraction": 0.7,
    }
    path = tmp_path / "postprocess.json"
    path.write_text(json.dumps(old))
    config = read_postprocess_config(path)
    assert config.method == "watershed" and config.min_area == 300
    assert (config.fibre_max_turn, config.seed_threshold, config.seed_peak_fraction) == (45.0, 0.5, 0.0)


def test_particles_found_on_a_small_map_come_back_at_the_image_size():
    import cv2

    from skipnas.counting.postprocess import count_particles

    prob = np.zeros((50, 50), np.float32)
    cv2.circle(prob, (10, 10), 4, 1.0, -1)
    cv2.circle(prob, (35, 30), 6, 1.0, -1)
    small = count_particles(prob, PostprocessConfig(min_area=1))
    full = count_particles(prob, PostprocessConfig(min_area=1), shape=(100, 100))
    assert full.count == small.count == 2
    assert full.labels.shape == (100, 100)
    assert np.allclose(full.area, small.area * 4, rtol=0.15)
    assert np.allclose(full.centroid, small.centroid * 2 + 0.5, atol=1.0)
