from __future__ import annotations

import numpy as np
import pytest

from skipnas.counting.evaluation import Evaluation
from skipnas.counting.postprocess import PostprocessConfig


def test_evaluation_pools_pixels_and_counts_over_images() -> None:
    true_a = np.zeros((10, 10), np.int32)
    true_a[1:4, 1:4] = 1  # 9 px
    true_a[6:9, 6:9] = 2  # 9 px
    prob_a = np.zeros((10, 10), np.float32)
    prob_a[1:4, 1:4] = 0.9  # finds particle 1 exactly, misses particle 2
    true_b = np.zeros((10, 10), np.int32)
    prob_b = np.zeros((10, 10), np.float32)
    prob_b[0:2, 0:2] = 0.8  # a 4 px false particle on an empty image
    evaluation = Evaluation(PostprocessConfig(min_area=1))
    row = evaluation.add(prob_a, true_a, stem="a")
    assert row == {
        "stem": "a",
        "true_count": 2,
        "pred_count": 1,
        "dice": pytest.approx(18 / 27),
        "object_tp": 1,
        "object_fp": 0,
        "object_fn": 1,
    }
    evaluation.add(prob_b, true_b, stem="b")
    summary = evaluation.summary()
    # pooled pixels: tp 9, fp 4, fn 9
    assert summary["dice"] == pytest.approx(18 / 31)
    assert summary["precision"] == pytest.approx(9 / 13)
    assert summary["recall"] == pytest.approx(9 / 18)
    assert summary["iou"] == pytest.approx(9 / 22)
    # counts: (1 vs 2), (1 vs 0)
    assert summary["count_mae"] == pytest.approx(1.0)
    assert summary["count_mse"] == pytest.approx(1.0)
    assert summary["exact_count_accuracy"] == 0.0
    assert summary["relative_count_error"] == pytest.approx(2 / 2)
    assert summary["object_precision"] == pytest.approx(1 / 2)
    assert summary["object_recall"] == pytest.approx(1 / 2)
    assert summary["images"] == 2
    assert [(r["stem"], r["true_count"], r["pred_count"]) for r in summary["rows"]] == [("a", 2, 1), ("b", 0, 1)]


def test_evaluation_uses_the_config_given_to_add() -> None:
    true = np.zeros((10, 10), np.int32)
    true[2:4, 2:4] = 1
    prob = (true > 0).astype(np.float32)
    evaluation = Evaluation(PostprocessConfig(min_area=10))
    assert evaluation.add(prob, true)["pred_count"] == 0
    assert evaluation.add(prob, true, PostprocessConfig(min_area=1))["pred_count"] == 1


def test_summary_needs_images() -> None:
    with pytest.raises(ValueError):
        Evaluation().summary()


def test_a_map_at_half_scale_is_counted_and_matched_at_the_masks_size():
    import cv2

    from skipnas.counting.evaluation import Evaluation

    truth = np.zeros((80, 80), np.int32)
    for index in range(4):
        cv2.circle(truth, (12 + 18 * index, 40), 6, index + 1, -1)
    prob = cv2.resize((truth > 0).astype(np.float32), (40, 40), interpolation=cv2.INTER_AREA)
    evaluation = Evaluation()
    row = evaluation.add(prob, truth)
    assert row["pred_count"] == 4 and row["object_tp"] == 4 and row["object_fp"] == 0
    assert row["dice"] > 0.8
