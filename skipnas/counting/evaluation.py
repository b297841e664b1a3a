"""Scoring counted images against their instance masks: pixel, count and object metrics pooled."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from skipnas.counting.postprocess import Detections, PostprocessConfig, as_probabilities, count_particles
from skipnas.data.io import count_instances
from skipnas.data.rescale import resize_maps
from skipnas.runtime.metrics import PixelMetrics, count_metrics, match_objects, object_metrics, pixel_confusion


@dataclass
class Evaluation:
    """Accumulates whole images; :meth:`summary` gives the pooled metrics.

    Pixel metrics measure the segmentation: the probability map above the post-processing
    threshold against the true foreground (the erosion, dilation and minimum area that make the
    count better are not applied to it). Counts compare the post-processed particles with the true
    instance IDs.
    """

    config: PostprocessConfig = field(default_factory=PostprocessConfig)
    rows: list[dict[str, Any]] = field(default_factory=list)
    _pixels: list[int] = field(default_factory=lambda: [0, 0, 0, 0], repr=False)
    _matches: list[tuple[int, int, int]] = field(default_factory=list, repr=False)

    def add(
        self,
        prob: np.ndarray,
        true_instances: np.ndarray,
        config: PostprocessConfig | None = None,
        stem: str | None = None,
        auxiliary: np.ndarray | None = None,
    ) -> dict[str, Any]:
        """Post-process one probability map (``config``, else the evaluation's) and score it; returns its row.

        ``auxiliary`` is the auxiliary head's map of the same image, which ``method="seeded"`` counts from."""
        config = config or self.config
        prob = as_probabilities(prob)
        shape = np.shape(true_instances)
        detections = count_particles(prob, config, auxiliary=auxiliary, shape=shape)
        # a map at a model's input scale is scored at the mask's size, as its particles are
        foreground = resize_maps(prob[None], shape)[0] > config.threshold
        return self.add_detections(detections, true_instances, stem, foreground=foreground)

    def add_detections(
        self,
        detections: Detections,
        true_instances: np.ndarray,
        stem: str | None = None,
        foreground: np.ndarray | None = None,
    ) -> dict[str, Any]:
        """Score already counted particles of one image; returns its row. Pixel metrics use
        ``foreground`` (the segmentation) when given, else the counted particles."""
        true_instances = np.asarray(true_instances)
        confusion = pixel_confusion(detections.labels if foreground is None else foreground, true_instances)
        self._pixels = [total + value for total, value in zip(self._pixels, confusion, strict=True)]
        match = match_objects(detections.labels, true_instances)
        self._matches.append(match)
        true_count = count_instances(true_instances)
        row = {
            "stem": stem if stem is not None else str(len(self.rows)),
            "true_count": true_count,
            "pred_count": detections.count,
            "dice": PixelMetrics.from_counts(*confusion[:3]).dice,
            "object_tp": match[0],
            "object_fp": match[1],
            "object_fn": match[2],
        }
        self.rows.append(row)
        return row

    @property
    def images(self) -> int:
        return len(self.rows)

    def summary(self) -> dict[str, Any]:
        """``dice``, ``precision``, ``recall``, ``iou`` (pooled pixels), the :func:`count_metrics` keys,
        the :func:`object_metrics` keys, ``images``, ``pixel_tp/fp/fn`` and ``rows`` (one per image)."""
        if not self.rows:
            raise ValueError("Evaluation.summary: no images were added")
        tp, fp, fn, _ = self._pixels
        counts = count_metrics([row["pred_count"] for row in self.rows], [row["true_count"] for row in self.rows])
        return {
            **PixelMetrics.from_counts(tp, fp, fn).to_dict(),
            **{key: value for key, value in counts.items() if not key.endswith("counts") and key != "count_errors"},
            **object_metrics(self._matches),
            "pixel_tp": tp,
            "pixel_fp": fp,
            "pixel_fn": fn,
            "rows": [dict(row) for row in self.rows],
        }
