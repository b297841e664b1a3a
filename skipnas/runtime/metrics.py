"""Segmentation, count and object metrics: pure functions over numpy arrays (no torch).

Pixel metrics pool the confusion counts over every pixel of every image (micro average), so a
large image weighs more than a small one. A ratio whose denominator is zero (``0 / 0``) is 1.0 when
the prediction and the truth are both empty (``tp = fp = fn = 0``: nothing to find, nothing found)
and 0.0 otherwise; e.g. an empty prediction on an image holding particles has precision 0.0.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


def _ratio(numerator: float, denominator: float, nothing_at_all: bool) -> float:
    if denominator == 0:
        return 1.0 if nothing_at_all else 0.0
    return float(numerator) / float(denominator)


def _same_shape(pred: np.ndarray, true: np.ndarray, what: str) -> None:
    if pred.shape != true.shape:
        raise ValueError(f"{what}: prediction is {pred.shape} but truth is {true.shape}")


def pixel_confusion(pred: np.ndarray, true: np.ndarray) -> tuple[int, int, int, int]:
    """(tp, fp, fn, tn) pixel counts of two foreground masks (anything non-zero is foreground).

    Counts add up over images: sum them, then call :meth:`PixelMetrics.from_counts`.
    """
    pred = np.asarray(pred) != 0
    true = np.asarray(true) != 0
    _same_shape(pred, true, "pixel_confusion")
    tp = int(np.count_nonzero(pred & true))
    fp = int(np.count_nonzero(pred)) - tp
    fn = int(np.count_nonzero(true)) - tp
    return tp, fp, fn, int(pred.size) - tp - fp - fn


@dataclass(frozen=True)
class PixelMetrics:
    dice: float
    precision: float
    recall: float
    iou: float

    @classmethod
    def from_counts(cls, tp: int, fp: int, fn: int) -> PixelMetrics:
        """Dice ``2tp / (2tp + fp + fn)``, precision, recall and IoU ``tp / (tp + fp + fn)`` (0/0: see the module)."""
        empty = tp == 0 and fp == 0 and fn == 0
        return cls(
            dice=_ratio(2 * tp, 2 * tp + fp + fn, empty),
            precision=_ratio(tp, tp + fp, empty),
            recall=_ratio(tp, tp + fn, empty),
            iou=_ratio(tp, tp + fp + fn, empty),
        )

    def to_dict(self) -> dict[str, float]:
        return {"dice": self.dice, "precision": self.precision, "recall": self.recall, "iou": self.iou}


def count_metrics(pred_counts: Sequence[int], true_counts: Sequence[int]) -> dict[str, Any]:
    """Counting errors over images.

    ``count_mae`` / ``count_mse``: mean absolute / squared difference; ``count_bias``: mean of
    ``pred - true`` (positive = over-counting); ``exact_count_accuracy``: share of images counted
    exactly; ``relative_count_error``: ``sum |pred - true| / sum true`` (the denominator is at least
    1, so images without particles do not divide by zero). Per-image lists come along.
    """
    pred = np.asarray(pred_counts, dtype=np.int64).ravel()
    true = np.asarray(true_counts, dtype=np.int64).ravel()
    if pred.shape != true.shape:
        raise ValueError(f"count_metrics: {pred.size} predicted counts but {true.size} true counts")
    if pred.size == 0:
        raise ValueError("count_metrics needs at least one image")
    errors = pred - true
    return {
        "images": int(pred.size),
        "count_mae": float(np.mean(np.abs(errors))),
        "count_mse": float(np.mean(errors.astype(np.float64) ** 2)),
        "count_bias": float(np.mean(errors)),
        "exact_count_accuracy": float(np.mean(errors == 0)),
        "relative_count_error": float(np.sum(np.abs(errors)) / max(int(np.sum(true)), 1)),
        "pred_counts": [int(v) for v in pred],
        "true_counts": [int(v) for v in true],
        "count_errors": [int(v) for v in errors],
    }


def overlap_pairs(pred_labels: np.ndarray, true_instances: np.ndarray) -> np.ndarray:
    """The (predicted ID, true ID) pairs that share pixels, as an ``(n, 2)`` array in the order
    :func:`match_objects` takes them: largest overlap first (ties: lower predicted ID, then lower true ID)."""
    pred = np.asarray(pred_labels).astype(np.int64, copy=False)
    true = np.asarray(true_instances).astype(np.int64, copy=False)
    _same_shape(pred, true, "overlap_pairs")
    both = (pred != 0) & (true != 0)
    base = int(true.max(initial=0)) + 1
    keys, overlaps = np.unique(pred[both] * base + true[both], return_counts=True)
    pairs = np.stack([keys // base, keys % base], axis=1)
    if not len(pairs):
        return pairs
    return pairs[np.lexsort((pairs[:, 1], pairs[:, 0], -overlaps))]


def matched_count(ordered_pairs: np.ndarray, kept: np.ndarray | None = None) -> int:
    """How many one-to-one matches the greedy takes from :func:`overlap_pairs`' pairs; ``kept``: a
    boolean per predicted ID (index = ID), the particles left after a filter (None: all)."""
    if kept is not None and len(ordered_pairs):
        ordered_pairs = ordered_pairs[kept[ordered_pairs[:, 0]]]
    matched_pred: set[int] = set()
    matched_true: set[int] = set()
    for p, t in ordered_pairs.tolist():
        if p not in matched_pred and t not in matched_true:
            matched_pred.add(p)
            matched_true.add(t)
    return len(matched_pred)


def match_objects(pred_labels: np.ndarray, true_instances: np.ndarray) -> tuple[int, int, int]:
    """(tp, fp, fn) of a one-to-one matching of predicted particles to true particles.

    Rule: a predicted particle and a true particle can match when they share at least one pixel.
    Candidate pairs are taken greedily by overlap area, largest first (ties: lower predicted ID,
    then lower true ID), and a pair is kept only while neither side is matched yet. So one blob
    covering two particles matches only the one it overlaps most; the other is a miss (fn). A true
    particle in several pieces (one ID) is one particle. IDs need not be consecutive.
    """
    pred = np.asarray(pred_labels)
    true = np.asarray(true_instances)
    tp = matched_count(overlap_pairs(pred, true))
    return tp, len(np.unique(pred[pred != 0])) - tp, len(np.unique(true[true != 0])) - tp


def object_metrics(matches: Iterable[tuple[int, int, int]]) -> dict[str, float]:
    """Object precision, recall and F1 from per-image :func:`match_objects` results, pooled (0/0: see the module)."""
    tp = fp = fn = 0
    for image_tp, image_fp, image_fn in matches:
        tp, fp, fn = tp + image_tp, fp + image_fp, fn + image_fn
    empty = tp == 0 and fp == 0 and fn == 0
    return {
        "object_precision": _ratio(tp, tp + fp, empty),
        "object_recall": _ratio(tp, tp + fn, empty),
        "object_f1": _ratio(2 * tp, 2 * tp + fp + fn, empty),
        "object_tp": tp,
        "object_fp": fp,
        "object_fn": fn,
    }
