"""A counting baseline with no network: threshold the image, then the same post-processing.

The image (scaled to 0..255 grey) becomes a contrast map: with ``threshold_method="adaptive"`` the
difference to the local mean over ``block_size`` px (like ``cv2.adaptiveThreshold`` with
``ADAPTIVE_THRESH_MEAN_C``), with ``"otsu"`` the difference to Otsu's global threshold; minus
``offset`` grey levels; the sign set by the polarity (bright particles on a dark background, or
dark on bright). A logistic step of width ``softness`` grey levels turns it into a map in [0, 1]
where 0.5 is exactly the threshold, so :func:`skipnas.counting.postprocess.count_particles` and
:func:`skipnas.counting.calibrate.calibrate` work on it as on a network's probabilities: a
calibrated threshold of 0.6 means "``softness * ln(1.5)`` grey levels more contrast".
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from skipnas.counting.calibrate import FEW_PARTICLES, CalibrationGrid, calibrate, draw_until_enough
from skipnas.counting.evaluation import Evaluation
from skipnas.counting.postprocess import PostprocessConfig, PostprocessConfigError, describe
from skipnas.data.io import count_instances, image_range, read_image, read_mask
from skipnas.data.scan import Sample, resolve_dataset, scan_dataset
from skipnas.errors import SkipnasError

THRESHOLD_METHODS: tuple[str, ...] = ("adaptive", "otsu")
POLARITIES: tuple[str, ...] = ("auto", "bright", "dark")

Progress = Callable[[int, int], None]  # (done, total)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class ClassicalConfig:
    """``block_size``: odd window of the local mean (px); ``offset``: how many grey levels (of 255)
    a particle pixel must stand out from the local mean or Otsu's level; ``blur``: odd Gaussian
    kernel smoothing the image first (0 = none); ``softness``: grey levels from probability 0.5
    to 0.73; ``polarity="auto"`` decides bright or dark from the image (:func:`guess_polarity`);
    ``postprocess``: used as is when there is nothing to calibrate on, else the calibration's base.
    """

    threshold_method: str = "adaptive"
    block_size: int = 51
    offset: float = 10.0
    polarity: str = "auto"
    blur: int = 3
    softness: float = 8.0
    postprocess: PostprocessConfig = field(default_factory=lambda: PostprocessConfig(min_area=30))

    def __post_init__(self) -> None:
        if self.threshold_method not in THRESHOLD_METHODS:
            raise PostprocessConfigError(
                f"threshold_method must be one of {', '.join(THRESHOLD_METHODS)}, got {self.threshold_method!r}"
            )
        if self.polarity not in POLARITIES:
            raise PostprocessConfigError(f"polarity must be one of {', '.join(POLARITIES)}, got {self.polarity!r}")
        if not _is_int(self.block_size) or self.block_size < 3 or self.block_size % 2 == 0:
            raise PostprocessConfigError(f"block_size must be an odd integer >= 3, got {self.block_size!r}")
        if not _is_int(self.blur) or self.blur < 0 or (self.blur and self.blur % 2 == 0):
            raise PostprocessConfigError(f"blur must be 0 or an odd integer, got {self.blur!r}")
        if not isinstance(self.softness, (int, float)) or isinstance(self.softness, bool) or not self.softness > 0:
            raise PostprocessConfigError(f"softness must be a positive number of grey levels, got {self.softness!r}")
        if not isinstance(self.offset, (int, float)) or isinstance(self.offset, bool) or not np.isfinite(self.offset):
            raise PostprocessConfigError(f"offset must be a number of grey levels, got {self.offset!r}")
        if not isinstance(self.postprocess, PostprocessConfig):
            raise PostprocessConfigError("postprocess must be a PostprocessConfig")

    def replace(self, **changes: Any) -> ClassicalConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["postprocess"] = self.postprocess.to_dict()
        return data


def to_grey(image: np.ndarray) -> np.ndarray:
    """float32 HxW grey scaled to 0..255 (8-bit /1, 16-bit /257, float images taken as 0..1)."""
    image = np.asarray(image)
    scale = 255.0 / image_range(image.dtype)
    if image.ndim == 3:
        channels = image.shape[2]
        if channels == 1:
            image = image[:, :, 0]
        elif channels in (3, 4):
            image = cv2.cvtColor(image[:, :, :3].astype(np.float32), cv2.COLOR_RGB2GRAY)
        else:
            raise SkipnasError(f"images with {channels} channels are not supported; convert them to grey or RGB")
    return image.astype(np.float32) * np.float32(scale)


def guess_polarity(grey: np.ndarray) -> str:
    """``"bright"`` when the bright tail (99th percentile minus the median) is at least as long as the
    dark tail (median minus the 1st percentile): particles are the minority, the background the bulk."""
    low, median, high = np.percentile(grey, [1, 50, 99])
    return "bright" if high - median >= median - low else "dark"


def _contrast(grey: np.ndarray, config: ClassicalConfig, polarity: str) -> np.ndarray:
    if config.blur:
        grey = cv2.GaussianBlur(grey, (config.blur, config.blur), 0)
    if config.threshold_method == "adaptive":
        reference = cv2.blur(grey, (config.block_size, config.block_size), borderType=cv2.BORDER_REPLICATE)
    else:
        eight_bit = np.clip(np.rint(grey), 0, 255).astype(np.uint8)
        level, _ = cv2.threshold(eight_bit, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
        reference = np.float32(level)
    sign = 1.0 if polarity == "bright" else -1.0
    return (sign * (grey - reference) - config.offset).astype(np.float32)


def _grey_probabilities(grey: np.ndarray, config: ClassicalConfig, polarity: str) -> np.ndarray:
    if polarity == "auto":
        polarity = guess_polarity(grey)
    elif polarity not in POLARITIES:
        raise PostprocessConfigError(f"polarity must be one of {', '.join(POLARITIES)}, got {polarity!r}")
    contrast = _contrast(grey, config, polarity)
    # the logistic step, written with tanh so that large contrasts do not overflow exp
    return (0.5 + 0.5 * np.tanh(contrast / (2.0 * config.softness))).astype(np.float32)


def classical_probabilities(
    image: np.ndarray, config: ClassicalConfig | None = None, polarity: str | None = None
) -> np.ndarray:
    """A float32 map in [0, 1] (0.5 = the threshold) for :func:`count_particles`; ``polarity``
    overrides the config's."""
    config = config or ClassicalConfig()
    return _grey_probabilities(to_grey(image), config, polarity or config.polarity)


def _load_pair(sample: Sample) -> tuple[np.ndarray, np.ndarray]:
    assert sample.mask_path is not None
    grey = to_grey(read_image(sample.image_path))
    instances = read_mask(sample.mask_path).instances
    if instances.shape != grey.shape:
        raise SkipnasError(
            f"{sample.mask_path}: mask is {instances.shape[0]}x{instances.shape[1]} but its image "
            f"{sample.image_path.name} is {grey.shape[0]}x{grey.shape[1]}; make them the same size"
        )
    return grey, instances


def _labelled(samples: Sequence[Sample]) -> list[Sample]:
    return [sample for sample in samples if sample.mask_path is not None]


def evaluate_classical(
    dataset_root: str | Path,
    split: str = "test",
    config: ClassicalConfig | None = None,
    calibrate_on: str | None = "auto",
    grid: CalibrationGrid | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """The baseline's metrics on a split's labelled images (the keys of ``Evaluation.summary()``).

    The post-processing is calibrated on the ``calibrate_on`` split (:func:`calibrate`, the same
    grid as for a network) unless it is None or has no labelled images (then ``calibrated_on`` is
    None and ``config.postprocess`` is used as is); ``"auto"``, as ``skipnas train`` calibrates a
    network: val, and training images too (:func:`~skipnas.counting.calibrate.draw_until_enough`)
    when val holds fewer than ``FEW_PARTICLES`` particles. ``polarity="auto"`` is decided once, by a
    majority of :func:`guess_polarity` over the calibration images (else the evaluated ones).
    Extra keys: ``split``, ``root``, ``skipped_unlabelled``, ``polarity``, ``calibrated_on``,
    ``calibration_images``, ``calibration`` (the best row), ``postprocess``, ``postprocess_text``,
    ``classical`` (the config, polarity resolved) and ``notes`` (lines worth telling the user).
    """
    config = config or ClassicalConfig()
    root = resolve_dataset(dataset_root)
    index = scan_dataset(root)
    if split not in index.splits:
        have = ", ".join(index.splits) or "none"
        raise SkipnasError(f"{root}: has no {split!r} split (it has: {have}); pick one of those")
    samples = index.samples(split)
    targets = _labelled(samples)
    if not targets:
        raise SkipnasError(
            f"{root}: the {split!r} split has no images with masks to score; add masks or pick another split"
        )
    automatic = calibrate_on == "auto"
    if automatic:
        calibrate_on = "val"
    tuning = _labelled(index.samples(calibrate_on)) if calibrate_on else []
    notes = []
    if calibrate_on and not tuning and not automatic:
        notes.append(f"the {calibrate_on!r} split has no labelled images: post-processing not calibrated (defaults)")
    elif calibrate_on == split:
        notes.append(f"calibrated and scored on the same split ({split!r}): the scores are optimistic")
    total = len(tuning) + len(targets)
    done = 0

    def load(batch: list[Sample]) -> list[tuple[np.ndarray, np.ndarray]]:
        nonlocal done
        pairs = []
        for sample in batch:
            pairs.append(_load_pair(sample))
            done += 1
            if progress is not None:
                progress(done, total)
        return pairs

    tuning_pairs = load(tuning)
    held = sum(count_instances(truth) for _, truth in tuning_pairs)
    if automatic and held < FEW_PARTICLES and split != "train":
        extra = draw_until_enough(_labelled(index.samples("train")), lambda sample: [_load_pair(sample)], lambda pair: count_instances(pair[1]), held)
        if extra:
            notes.append(f"calibrated on val and {len(extra)} training image(s): val holds {held} particles, fewer than {FEW_PARTICLES}")
            tuning_pairs += extra
            calibrate_on = "val+train"
    if automatic and not tuning_pairs:
        notes.append("neither val nor train has labelled images: post-processing not calibrated (defaults)")
    target_pairs = load(targets)
    polarity = config.polarity
    if polarity == "auto":
        votes = [guess_polarity(grey) for grey, _ in (tuning_pairs or target_pairs)]
        polarity = "bright" if votes.count("bright") >= votes.count("dark") else "dark"
    resolved = config.replace(polarity=polarity)
    postprocess = config.postprocess
    best_row: dict[str, Any] | None = None
    if tuning_pairs:
        probs = [_grey_probabilities(grey, resolved, polarity) for grey, _ in tuning_pairs]
        postprocess, table = calibrate(probs, [truth for _, truth in tuning_pairs], config.postprocess, grid)
        best_row = table["best"]
    evaluation = Evaluation(postprocess)
    for sample, (grey, truth) in zip(targets, target_pairs, strict=True):
        prob = _grey_probabilities(grey, resolved, polarity)
        evaluation.add(prob, truth, stem=sample.stem)
    return {
        **evaluation.summary(),
        "root": str(root),
        "split": split,
        "skipped_unlabelled": len(samples) - len(targets),
        "polarity": polarity,
        "calibrated_on": calibrate_on if tuning_pairs else None,
        "calibration_images": len(tuning_pairs),
        "calibration": best_row,
        "postprocess": postprocess.to_dict(),
        "postprocess_text": describe(postprocess),
        "classical": resolved.to_dict(),
        "notes": notes,
    }
