from __future__ import annotations

import numpy as np
import pytest

from skipnas.runtime.metrics import (
    PixelMetrics,
    count_metrics,
    match_objects,
    matched_count,
    object_metrics,
    overlap_pairs,
    pixel_confusion,
)

PRED = np.array(
    [
        [1, 1, 0, 0],
        [1, 1, 0, 0],
        [0, 0, 0, 1],
    ]
)
TRUE = np.array(
    [
        [0, 1, 0, 0],
        [3, 1, 0, 0],
        [2, 2, 0, 0],
    ]
)


def test_pixel_confusion_by_hand() -> None:
    # pred 5 px, truth 5 px, shared 3 (the 2x2 square minus its top-left corner)
    assert pixel_confusion(PRED, TRUE) == (3, 2, 2, 5)
    assert pixel_confusion(PRED.astype(bool), TRUE > 0) == (3, 2, 2, 5)


def test_pixel_confusion_adds_up_over_images() -> None:
    halves = [pixel_confusion(PRED[:, :2], TRUE[:, :2]), pixel_confusion(PRED[:, 2:], TRUE[:, 2:])]
    assert tuple(int(a + b) for a, b in zip(*halves, strict=True)) == pixel_confusion(PRED, TRUE)


def test_pixel_metrics_by_hand() -> None:
    metrics = PixelMetrics.from_counts(3, 2, 2)
    assert metrics.dice == pytest.approx(6 / 10)
    assert metrics.precision == pytest.approx(3 / 5)
    assert metrics.recall == pytest.approx(3 / 5)
    assert metrics.iou == pytest.approx(3 / 7)
    assert PixelMetrics.from_counts(6, 2, 0).to_dict() == pytest.approx(
        {"dice": 12 / 14, "precision": 6 / 8, "recall": 1.0, "iou": 6 / 8}
    )


def test_zero_over_zero_is_one_only_when_both_are_empty() -> None:
    assert PixelMetrics.from_counts(0, 0, 0) == PixelMetrics(1.0, 1.0, 1.0, 1.0)
    missed = PixelMetrics.from_counts(0, 0, 4)  # empty prediction, particles present
    assert (missed.dice, missed.precision, missed.recall, missed.iou) == (0.0, 0.0, 0.0, 0.0)
    invented = PixelMetrics.from_counts(0, 4, 0)  # prediction on an empty image
    assert (invented.dice, invented.precision, invented.recall, invented.iou) == (0.0, 0.0, 0.0, 0.0)


def test_count_metrics_by_hand() -> None:
    metrics = count_metrics([3, 5, 2], [3, 4, 4])  # errors 0, +1, -2
    assert metrics["images"] == 3
    assert metrics["count_mae"] == pytest.approx(1.0)
    assert metrics["count_mse"] == pytest.approx(5 / 3)
    assert metrics["count_bias"] == pytest.approx(-1 / 3)
    assert metrics["exact_count_accuracy"] == pytest.approx(1 / 3)
    assert metrics["relative_count_error"] == pytest.approx(3 / 11)
    assert metrics["count_errors"] == [0, 1, -2]
    assert metrics["pred_counts"] == [3, 5, 2] and metrics["true_counts"] == [3, 4, 4]


def test_count_metrics_without_true_particles_stays_finite() -> None:
    assert count_metrics([0, 2], [0, 0])["relative_count_error"] == 2.0
    assert count_metrics([0], [0])["relative_count_error"] == 0.0


def test_count_metrics_rejects_unequal_or_empty_lists() -> None:
    with pytest.raises(ValueError):
        count_metrics([1, 2], [1])
    with pytest.raises(ValueError):
        count_metrics([], [])


def test_one_blob_over_two_particles_matches_only_one() -> None:
    true = np.zeros((6, 10), np.int32)
    true[1:5, 1:4] = 1
    true[1:5, 6:9] = 2
    blob = np.zeros_like(true)
    blob[0:6, 0:10] = 1
    assert match_objects(blob, true) == (1, 0, 1)


def test_matching_is_greedy_by_overlap_and_one_to_one() -> None:
    true = np.zeros((4, 12), np.int32)
    true[0, 0:3] = 1  # 3 px under blob A
    true[1, 0:5] = 2  # 5 px under blob A ...
    true[2, 0:4] = 2  # ... and 4 px under blob B
    pred = np.zeros_like(true)
    pred[0:2, 0:6] = 10  # blob A: overlaps particle 2 (5 px) more than particle 1 (3 px)
    pred[2, 0:4] = 20  # blob B: overlaps only particle 2, already taken by A
    pred[3, 8:12] = 30  # blob C: overlaps nothing
    # A-2 (5 px) is taken first; B-2 and A-1 are then refused: tp 1, fp B and C, fn particle 1
    assert match_objects(pred, true) == (1, 2, 1)


def test_a_particle_in_pieces_is_one_particle() -> None:
    true = np.zeros((4, 10), np.int32)
    true[1, 0:3] = 5
    true[1, 6:9] = 5  # the same ID, two pieces
    pred = (true > 0).astype(np.int32)
    pred[1, 6:9] = 2  # each piece found as its own blob
    assert match_objects(pred, true) == (1, 1, 0)
    assert match_objects(np.zeros_like(true), true) == (0, 0, 1)
    assert match_objects(np.zeros_like(true), np.zeros_like(true)) == (0, 0, 0)


def test_object_metrics_pool_the_images() -> None:
    metrics = object_metrics([(1, 0, 1), (2, 1, 0)])  # tp 3, fp 1, fn 1
    assert metrics["object_precision"] == pytest.approx(3 / 4)
    assert metrics["object_recall"] == pytest.approx(3 / 4)
    assert metrics["object_f1"] == pytest.approx(6 / 8)
    assert (metrics["object_tp"], metrics["object_fp"], metrics["object_fn"]) == (3, 1, 1)
    assert object_metrics([(0, 0, 0)])["object_precision"] == 1.0


def test_matching_a_filtered_prediction_needs_no_relabelling() -> None:
    # one blob over both true particles, and a small piece of the second: dropping the blob frees the second
    true = np.zeros((8, 8), np.int32)
    true[0:4, 0:4] = 1
    true[4:8, 0:4] = 2
    pred = np.zeros((8, 8), np.int32)
    pred[0:7, 0:4] = 1
    pred[7, 0:4] = 2
    pairs = overlap_pairs(pred, true)
    assert pairs.tolist() == [[1, 1], [1, 2], [2, 2]]  # largest overlap first
    assert matched_count(pairs) == match_objects(pred, true)[0] == 2
    without_blob = np.array([False, False, True])  # kept, by predicted ID
    assert matched_count(pairs, without_blob) == match_objects(np.where(pred == 1, 0, pred), true)[0] == 1
    assert matched_count(pairs, np.array([False, False, False])) == 0
