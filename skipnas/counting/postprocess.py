"""From a probability map to counted particles, the paper's pipeline done with OpenCV.

1. threshold the probability map (``prob > threshold``);
2. erode (removes thin artefacts and specks), then dilate (restores the particles and reconnects
   strands broken by a pixel or two), each with an elliptical kernel, 0 skipping the step;
3. label, by ``method``:
   - ``"blobs"``: the 8-connected components (the paper's counting);
   - ``"watershed"``: also splits touching round particles, seeding a watershed at the peaks of the
     distance transform;
   - ``"fibres"``: follows each strand of the mask's skeleton through junctions by direction
     continuity, so crossing fibres count one each (:mod:`skipnas.counting.fibres`);
   - ``"seeded"``: one particle per core marked by the network's auxiliary head
     (:mod:`skipnas.counting.seeded`);
4. drop particles smaller than ``min_area`` pixels, and those whose most probable pixel is below
   ``min_peak_probability`` (a hysteresis threshold: the threshold draws a particle, its peak confirms it).

Several classes (fibre / fragment / film): :func:`count_per_class` runs the same pipeline on each
class channel of a ``(K, H, W)`` probability stack.
"""

from __future__ import annotations

import dataclasses
import json
import numbers
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from skipnas.counting.fibres import fibre_labels
from skipnas.counting.seeded import Relief
from skipnas.data.rescale import resize_instances, resize_maps
from skipnas.errors import SkipnasError
from skipnas.fileio import write_json_atomic

METHODS: tuple[str, ...] = ("blobs", "watershed", "fibres", "seeded")
# methods that need the network's auxiliary map
AUXILIARY_METHODS: tuple[str, ...] = ("seeded",)
# the key of postprocess.json that records how its setting was chosen
CALIBRATION_KEY = "calibration"


class PostprocessConfigError(SkipnasError, ValueError):
    """A post-processing setting that cannot work: a negative kernel, an unknown method, ..."""


def _check_int(name: str, value: Any, minimum: int) -> int:
    # bool is an int in Python, but True is no kernel size
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise PostprocessConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_float(name: str, value: Any, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not low <= float(value) <= high:
        raise PostprocessConfigError(f"{name} must be a number from {low} to {high}, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class PostprocessConfig:
    """Settings of :func:`count_particles`.

    ``threshold`` applies to the probability map (``prob > threshold`` is foreground); ``erode``
    and ``dilate`` are elliptical kernel sizes in pixels (0 skips the step); particles below
    ``min_area`` pixels are dropped, and so are those in which no pixel's probability reaches
    ``min_peak_probability`` (0: none): the threshold draws a particle's extent, its peak decides
    whether it is one. A peak, not a mean: a dilated particle's rim pulls its mean probability
    down however sure its core. ``method="watershed"`` seeds one particle per core: the pixels
    whose distance to the background is at least ``watershed_peak_fraction`` of the highest
    distance within ``watershed_min_distance`` px. Set the distance to about the radius of the
    particles to split: a neck narrower than the fraction of the particles' radius is cut.
    ``method="fibres"`` continues a strand through a junction only into a branch that turns by at
    most ``fibre_max_turn`` degrees; a junction spans ``fibre_junction_scale`` times the strands'
    half-width there. ``method="seeded"`` seeds one particle per core of the auxiliary map: pixels
    above ``seed_threshold`` and at least ``seed_peak_fraction`` of the map's highest value within
    ``watershed_min_distance`` px (0: every region above the threshold is one core).
    """

    threshold: float = 0.5
    erode: int = 0
    dilate: int = 0
    erode_iterations: int = 1
    dilate_iterations: int = 1
    min_area: int = 10
    min_peak_probability: float = 0.0
    method: str = "blobs"
    watershed_min_distance: int = 10
    watershed_peak_fraction: float = 0.7
    fibre_max_turn: float = 45.0
    fibre_junction_scale: float = 1.5
    seed_threshold: float = 0.5
    seed_peak_fraction: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "threshold", _check_float("threshold", self.threshold, 0.0, 1.0))
        peak = _check_float("min_peak_probability", self.min_peak_probability, 0.0, 1.0)
        object.__setattr__(self, "min_peak_probability", peak)
        for name in ("erode", "dilate", "min_area"):
            object.__setattr__(self, name, _check_int(name, getattr(self, name), 0))
        for name in ("erode_iterations", "dilate_iterations", "watershed_min_distance"):
            object.__setattr__(self, name, _check_int(name, getattr(self, name), 1))
        fraction = _check_float("watershed_peak_fraction", self.watershed_peak_fraction, 0.0, 1.0)
        object.__setattr__(self, "watershed_peak_fraction", fraction)
        object.__setattr__(self, "fibre_max_turn", _check_float("fibre_max_turn", self.fibre_max_turn, 0.0, 180.0))
        scale = _check_float("fibre_junction_scale", self.fibre_junction_scale, 0.5, 10.0)
        object.__setattr__(self, "fibre_junction_scale", scale)
        object.__setattr__(self, "seed_threshold", _check_float("seed_threshold", self.seed_threshold, 0.0, 1.0))
        peak = _check_float("seed_peak_fraction", self.seed_peak_fraction, 0.0, 1.0)
        object.__setattr__(self, "seed_peak_fraction", peak)
        if self.method not in METHODS:
            raise PostprocessConfigError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")

    def replace(self, **changes: Any) -> PostprocessConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PostprocessConfig:
        """From :meth:`to_dict` output; missing keys take their defaults, unknown keys are an error."""
        if not isinstance(data, Mapping):
            raise PostprocessConfigError(f"a post-processing config is a JSON object, got {type(data).__name__}")
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise PostprocessConfigError(
                f"unknown post-processing field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        return cls(**data)


def read_postprocess_config(path: str | os.PathLike[str]) -> PostprocessConfig:
    """A config from a JSON file (``postprocess.json`` in a model folder)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SkipnasError(f"{path}: file not found; give an existing post-processing JSON file") from None
    except (OSError, UnicodeDecodeError) as exc:
        problem = exc.__class__.__name__
        raise SkipnasError(f"{path}: cannot read it ({problem}); check the path and permissions") from None
    except json.JSONDecodeError as exc:
        raise SkipnasError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}); fix or regenerate it") from None
    if isinstance(data, dict):
        data.pop(CALIBRATION_KEY, None)  # why the setting was chosen: a record, not a setting
    try:
        return PostprocessConfig.from_dict(data)
    except PostprocessConfigError as exc:
        raise PostprocessConfigError(f"{path}: {exc}") from None


def write_postprocess_config(
    path: str | os.PathLike[str], config: PostprocessConfig, calibration: Mapping[str, Any] | None = None
) -> None:
    """``config`` as JSON; ``calibration`` (how and on what it was chosen) goes along under ``"calibration"``."""
    data = config.to_dict()
    if calibration is not None:
        data[CALIBRATION_KEY] = dict(calibration)
    write_json_atomic(path, data)


@dataclass
class Detections:
    """The kept particles of one image. ``labels`` is int32 HxW, 0 background, particle ``i`` is
    ``labels == i + 1`` and row ``i`` of ``bbox`` (x, y, w, h), ``area`` (px), ``centroid``
    (x, y) and ``confidence`` (mean probability inside the particle)."""

    labels: np.ndarray
    bbox: np.ndarray
    area: np.ndarray
    centroid: np.ndarray
    confidence: np.ndarray

    @property
    def count(self) -> int:
        return int(self.area.shape[0])

    def rows(self) -> list[dict[str, Any]]:
        """One JSON-able dict per particle."""
        return [
            {
                "id": index + 1,
                "bbox": [int(v) for v in self.bbox[index]],
                "area": int(self.area[index]),
                "centroid": [float(v) for v in self.centroid[index]],
                "confidence": float(self.confidence[index]),
            }
            for index in range(self.count)
        ]


def as_probabilities(prob: np.ndarray) -> np.ndarray:
    """``prob`` as a finite float32 HxW map (a bool or 0/1 integer map works too)."""
    prob = np.asarray(prob)
    if prob.ndim != 2:
        raise ValueError(f"a probability map is HxW, got shape {prob.shape}")
    prob = prob.astype(np.float32, copy=False)
    if not np.all(np.isfinite(prob)):
        raise ValueError("the probability map holds NaN or infinite values")
    return prob


def _ellipse(size: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))


def threshold_probabilities(prob: np.ndarray, threshold: float) -> np.ndarray:
    """uint8 0/1: pixels whose probability is strictly above ``threshold``."""
    return (as_probabilities(prob) > threshold).astype(np.uint8)


def erode_mask(mask: np.ndarray, size: int, iterations: int = 1) -> np.ndarray:
    if size <= 0:
        return mask
    # OpenCV's default border counts outside pixels as foreground here: particles at the edge keep their edge
    return cv2.erode(mask, _ellipse(size), iterations=iterations)


def dilate_mask(mask: np.ndarray, size: int, iterations: int = 1) -> np.ndarray:
    if size <= 0:
        return mask
    return cv2.dilate(mask, _ellipse(size), iterations=iterations)


def mask_from_probabilities(prob: np.ndarray, config: PostprocessConfig) -> np.ndarray:
    """Threshold, erode, dilate: the binary (uint8 0/1) mask the particles are labelled in."""
    mask = threshold_probabilities(prob, config.threshold)
    mask = erode_mask(mask, config.erode, config.erode_iterations)
    return dilate_mask(mask, config.dilate, config.dilate_iterations)


def _components(mask: np.ndarray) -> tuple[int, np.ndarray]:
    count, labels = cv2.connectedComponents(mask, connectivity=8, ltype=cv2.CV_32S)
    return count - 1, labels


def particle_relief(mask: np.ndarray, config: PostprocessConfig, auxiliary: np.ndarray | None = None) -> Relief | None:
    """The relief ``config.method`` finds its cores on, for :func:`label_particles`: the mask's own
    distance transform for ``watershed``, the auxiliary map for ``seeded``; None for the others."""
    mask = np.ascontiguousarray(mask, dtype=np.uint8)
    if config.method == "watershed":
        return Relief(cv2.distanceTransform(mask, cv2.DIST_L2, 5), mask)
    if config.method == "seeded":
        if auxiliary is None:
            raise PostprocessConfigError(
                "method 'seeded' needs the auxiliary map of a model trained with an auxiliary head; "
                "choose another method or retrain with --auxiliary distance"
            )
        return Relief(auxiliary, mask)  # which checks that the map is the mask's size
    return None


def label_particles(
    mask: np.ndarray, config: PostprocessConfig, auxiliary: np.ndarray | None = None, relief: Relief | None = None
) -> np.ndarray:
    """int32 labels of every particle in ``mask`` by ``config.method``, before the ``min_area`` filter.

    ``auxiliary`` is the network's auxiliary map (HxW), needed by ``method="seeded"`` only.
    ``relief``: :func:`particle_relief` of the same mask, method and map, so that several settings
    of one method share its work (calibration); made here when not given.
    """
    mask = np.ascontiguousarray(mask, dtype=np.uint8)
    if config.method == "fibres":
        return fibre_labels(mask, config.fibre_max_turn, config.fibre_junction_scale)
    if config.method in ("watershed", "seeded"):
        if relief is None:
            relief = particle_relief(mask, config, auxiliary)
        if config.method == "watershed":
            return relief.flood(relief.seeds(config.watershed_min_distance, config.watershed_peak_fraction))
        seeds = relief.seeds(config.watershed_min_distance, config.seed_peak_fraction, floor=config.seed_threshold)
        return relief.flood(seeds)
    return _components(mask)[1]


def _empty_detections(shape: tuple[int, ...]) -> Detections:
    return Detections(
        labels=np.zeros(shape, np.int32),
        bbox=np.zeros((0, 4), np.int64),
        area=np.zeros(0, np.int64),
        centroid=np.zeros((0, 2), np.float64),
        confidence=np.zeros(0, np.float64),
    )


def _keep(labels: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """Labels relabelled 1..K over the ``kept`` old labels (``kept[i]`` for old label ``i``); the rest 0."""
    lookup = np.zeros(kept.shape[0], np.int32)
    lookup[kept] = np.arange(1, int(kept.sum()) + 1, dtype=np.int32)
    return lookup[labels]


def _confidence(labels: np.ndarray, prob: np.ndarray, count: int, area: np.ndarray) -> np.ndarray:
    sums = np.bincount(labels.ravel(), weights=prob.ravel(), minlength=count + 1)[1:]
    return sums / np.maximum(area, 1)


def particle_peaks(labels: np.ndarray, prob: np.ndarray, labels_count: int) -> np.ndarray:
    """The highest ``prob`` of each label ``0..labels_count - 1`` of ``labels`` (0 where a label has no pixel)."""
    peaks = np.zeros(labels_count, np.float32)
    np.maximum.at(peaks, labels.ravel(), prob.ravel())
    return peaks


def _kept(area: np.ndarray, labels: np.ndarray, prob: np.ndarray, min_area: int, min_peak_probability: float) -> np.ndarray:
    """Which labels ``0..len(area) - 1`` stay (label 0, the background, never): at least ``min_area`` px and
    a pixel of at least ``min_peak_probability``."""
    kept = area >= max(min_area, 1)
    if min_peak_probability > 0:
        kept &= particle_peaks(labels, prob, len(area)) >= min_peak_probability
    kept[0] = False
    return kept


def _blob_detections(mask: np.ndarray, prob: np.ndarray, min_area: int, min_peak_probability: float = 0.0) -> Detections:
    _, labels, stats, centroids = cv2.connectedComponentsWithStats(mask, connectivity=8, ltype=cv2.CV_32S)
    kept = _kept(stats[:, cv2.CC_STAT_AREA], labels, prob, min_area, min_peak_probability)
    labels = _keep(labels, kept)
    area = stats[kept, cv2.CC_STAT_AREA].astype(np.int64)
    bbox = stats[kept][:, [cv2.CC_STAT_LEFT, cv2.CC_STAT_TOP, cv2.CC_STAT_WIDTH, cv2.CC_STAT_HEIGHT]]
    return Detections(
        labels=labels,
        bbox=bbox.astype(np.int64),
        area=area,
        centroid=centroids[kept].astype(np.float64),
        confidence=_confidence(labels, prob, len(area), area),
    )


def detections_from_labels(labels: np.ndarray, prob: np.ndarray, min_area: int = 0, min_peak_probability: float = 0.0) -> Detections:
    """Detections of an instance map (any IDs): particles below ``min_area`` px, or with no pixel of
    ``prob`` at ``min_peak_probability``, dropped; the rest relabelled 1..K."""
    labels = np.asarray(labels)
    area_all = np.bincount(labels.ravel())
    kept = _kept(area_all, labels, prob, min_area, min_peak_probability)
    if not kept.any():
        return _empty_detections(labels.shape)
    labels = _keep(labels, kept)
    count = int(kept.sum())
    area = area_all[kept].astype(np.int64)
    ys, xs = np.nonzero(labels)
    ids = labels[ys, xs]
    low_x = np.full(count + 1, np.iinfo(np.int64).max)
    low_y = low_x.copy()
    high_x = np.full(count + 1, -1)
    high_y = high_x.copy()
    np.minimum.at(low_x, ids, xs)
    np.minimum.at(low_y, ids, ys)
    np.maximum.at(high_x, ids, xs)
    np.maximum.at(high_y, ids, ys)
    bbox = np.stack([low_x, low_y, high_x - low_x + 1, high_y - low_y + 1], axis=1)[1:]
    centroid = np.stack(
        [np.bincount(ids, weights=xs, minlength=count + 1), np.bincount(ids, weights=ys, minlength=count + 1)], axis=1
    )[1:] / area[:, None]
    return Detections(labels, bbox.astype(np.int64), area, centroid, _confidence(labels, prob, count, area))


def count_particles(
    prob: np.ndarray,
    config: PostprocessConfig | None = None,
    auxiliary: np.ndarray | None = None,
    shape: tuple[int, int] | None = None,
) -> Detections:
    """The particles of one probability map (HxW, values in [0, 1]; a 0/1 map works too).

    ``auxiliary``: the network's auxiliary map of the same size, used by ``method="seeded"``.
    ``shape``: the image's own (height, width) when the map is at a model's input scale: the
    particles are found on the map (``config``'s pixel sizes are the map's) and given back at ``shape``.
    """
    config = config or PostprocessConfig()
    prob = as_probabilities(prob)
    mask = mask_from_probabilities(prob, config)
    if config.method == "blobs":
        found = _blob_detections(mask, prob, config.min_area, config.min_peak_probability)
    else:
        labels = label_particles(mask, config, auxiliary)
        found = detections_from_labels(labels, prob, config.min_area, config.min_peak_probability)
    if shape is None or tuple(shape) == prob.shape:
        return found
    return resize_detections(found, prob, tuple(shape))


def resize_detections(detections: Detections, prob: np.ndarray, shape: tuple[int, int]) -> Detections:
    """``detections`` found on ``prob`` given back at ``shape``: labels by nearest neighbour, boxes,
    areas, centroids and confidences measured there (on ``prob`` resized bilinearly)."""
    if detections.count == 0:
        return _empty_detections(shape)
    labels = resize_instances(detections.labels, shape)
    return detections_from_labels(labels, resize_maps(prob[None], shape)[0])


def count_per_class(
    prob_per_class: np.ndarray,
    config: PostprocessConfig | Sequence[PostprocessConfig] | None = None,
    names: Sequence[str] | None = None,
    *,
    exclusive: bool = False,
    auxiliary: np.ndarray | None = None,
    shape: tuple[int, int] | None = None,
) -> dict[str, Detections]:
    """Count each class channel of a ``(K, H, W)`` stack: class name (default ``"0"``, ``"1"``, ...) -> detections.

    Pass only the particle classes (drop a softmax background channel first). ``config`` is one
    config for every class or one per class. Channels are counted independently (sigmoid outputs:
    a pixel may belong to two classes); ``exclusive=True`` first zeroes every channel where it is
    not the most probable class, so each pixel counts in one class at most (softmax outputs).
    ``auxiliary``: the network's auxiliary map (HxW, one for all classes), for ``method="seeded"``.
    ``shape``: the image's own size, as :func:`count_particles` takes it.
    """
    stack = np.asarray(prob_per_class)
    if stack.ndim != 3:
        raise ValueError(f"count_per_class expects a (K, H, W) stack, got shape {stack.shape}")
    classes = stack.shape[0]
    names = [str(index) for index in range(classes)] if names is None else list(names)
    configs = [config or PostprocessConfig()] * classes if not isinstance(config, Sequence) else list(config)
    if len(names) != classes or len(configs) != classes:
        raise ValueError(f"{classes} channels need as many names and configs, got {len(names)} and {len(configs)}")
    if exclusive and classes > 1:
        winner = np.argmax(stack, axis=0)
        stack = np.where(np.arange(classes)[:, None, None] == winner[None], stack, 0)
    return {name: count_particles(stack[index], configs[index], auxiliary, shape) for index, name in enumerate(names)}


def describe(config: PostprocessConfig) -> str:
    """One readable line, e.g. ``threshold 0.5, erode 3, dilate 5, min area 10 px, blobs``."""
    parts = [f"threshold {config.threshold:g}"]
    for name in ("erode", "dilate"):
        size, times = getattr(config, name), getattr(config, f"{name}_iterations")
        if size:
            parts.append(f"{name} {size}" + (f" x{times}" if times > 1 else ""))
    parts.append(f"min area {config.min_area} px")
    if config.min_peak_probability:
        parts.append(f"peak probability at least {config.min_peak_probability:g}")
    if config.method == "watershed":
        parts.append(f"watershed (min distance {config.watershed_min_distance})")
    elif config.method == "fibres":
        parts.append(f"fibres (max turn {config.fibre_max_turn:g} deg, junctions {config.fibre_junction_scale:g}x the half-width)")
    elif config.method == "seeded":
        peaks = (
            f", within {config.seed_peak_fraction:g} of the peak within {config.watershed_min_distance} px"
            if config.seed_peak_fraction
            else ""
        )
        parts.append(f"seeded by the auxiliary head (seeds above {config.seed_threshold:g}{peaks})")
    else:
        parts.append(config.method)
    return ", ".join(parts)


__all__ = [
    "AUXILIARY_METHODS",
    "METHODS",
    "Detections",
    "PostprocessConfig",
    "PostprocessConfigError",
    "count_particles",
    "count_per_class",
    "describe",
    "detections_from_labels",
    "label_particles",
    "particle_relief",
    "mask_from_probabilities",
    "particle_peaks",
]
