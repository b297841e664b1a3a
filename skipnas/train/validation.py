"""Validation during a phase: score the val images, keep the best weights, count validations without progress."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from torch import nn

from skipnas.counting.calibrate import DEFAULT_SELECTION, CalibrationGrid, calibrate
from skipnas.data.loading import LabeledImage
from skipnas.data.rescale import resize_maps
from skipnas.predict import Prediction, auxiliary_maps, predict_images
from skipnas.runtime.device import DeviceSetup, StagePeaks
from skipnas.runtime.metrics import PixelMetrics, pixel_confusion
from skipnas.runtime.normalise import Normalisation
from skipnas.train.config import PhaseConfig, TrainConfig


@dataclass(frozen=True)
class EpochResult:
    phase: str  # "pretrain" or "finetune"
    epoch: int  # within the phase, from 1
    step: int  # optimisation steps so far, both phases
    train_loss: float
    val_dice: float
    lr: float
    seconds: float  # since training started
    auxiliary_loss: float | None = None  # the auxiliary head's mean BCE over the epoch (unweighted), when there is one
    # fine-tuning with keep_best_by="count": the val count MAE with the counting calibrated on val
    val_count_mae: float | None = None

    def scores(self) -> str:
        """The validation scores in words: ``val Dice 0.903`` and, when measured, ``count MAE 0.41``."""
        count = "" if self.val_count_mae is None else f", count MAE {self.val_count_mae:.2f}"
        return f"val Dice {self.val_dice:.3f}{count}"


class Callback(Protocol):
    def __call__(self, result: EpochResult) -> None: ...


def prediction_dice(predictions: Sequence[Prediction], images: Sequence[LabeledImage]) -> float:
    """Pixel Dice at threshold 0.5 over full stitched images (all pixels pooled)."""
    tp = fp = fn = 0
    for prediction, item in zip(predictions, images, strict=True):
        # maps at a model's input scale are scored at the mask's size
        foreground = resize_maps(prediction.foreground[None], item.instances.shape)[0]
        counts = pixel_confusion(foreground > 0.5, item.instances > 0)
        tp, fp, fn = tp + counts[0], fp + counts[1], fn + counts[2]
    return PixelMetrics.from_counts(tp, fp, fn).dice


def calibrated_count_mae(
    predictions: Sequence[Prediction], images: Sequence[LabeledImage], grid: CalibrationGrid | None = None,
    selection: str = DEFAULT_SELECTION,
) -> float:
    """The count MAE of the counting setting ``grid`` and ``selection`` choose on these images (see :func:`calibrate`)."""
    _, table = calibrate(
        [p.foreground for p in predictions], [item.instances for item in images], grid=grid,
        auxiliary=auxiliary_maps(predictions), selection=selection,
    )
    return float(table["best"]["count_mae"])


class PhaseValidation:
    """The validations of one phase, with what they must remember between them.

    :meth:`run` predicts the val images with the model as it is, scores them (pixel Dice and, where
    weights are kept by count, the count MAE after calibrating on them), keeps the weights of the best
    validation so far (``keep_best``) and counts the validations since Dice last rose; :meth:`restore_best`
    puts the kept weights back when the phase ends.
    """

    def __init__(
        self,
        model: nn.Module,
        images: Sequence[LabeledImage],
        normalisation: Normalisation,
        setup: DeviceSetup,
        config: TrainConfig,
        memory: StagePeaks,
        keep_best: bool,
    ) -> None:
        self.model, self.images, self.normalisation, self.setup = model, images, normalisation, setup
        self.config, self.memory, self.keep_best = config, memory, keep_best
        self.by_count = keep_best and config.keep_best_by == "count"
        self.best_dice = -math.inf
        self.stale = 0  # validations since Dice last rose
        self.kept: EpochResult | None = None
        self.seconds = 0.0  # spent validating
        self._best_key: tuple[float, ...] | None = None
        self._best_state: dict[str, Any] | None = None

    def affordable(self, phase: PhaseConfig, elapsed: float) -> bool:
        """On a seconds budget: validating so far took at most ``max_validation_share`` of the phase."""
        return phase.seconds is None or self.seconds <= self.config.max_validation_share * elapsed

    def run(self, phase: str, epoch: int, step: int, train_loss: float, auxiliary_loss: float | None, lr: float, training_started: float) -> EpochResult:
        """Validate once; returns the result (``seconds``: since ``training_started``)."""
        started = time.perf_counter()
        self.memory.close("train_step")
        predictions = predict_images(
            self.model, self.images, self.normalisation, self.setup, self.config.val_tile, self.config.val_overlap,
            scale=self.config.scale, batch_size=self.config.val_batch,
        )
        self.memory.close("validation")
        self.model.train()  # a validation may come within an epoch
        val_dice = prediction_dice(predictions, self.images)
        count_mae = (
            calibrated_count_mae(predictions, self.images, self.config.count_grid, self.config.calibration_selection)
            if self.by_count
            else None
        )
        self.seconds += time.perf_counter() - started
        result = EpochResult(
            phase, epoch, step, train_loss, val_dice, lr, time.perf_counter() - training_started, auxiliary_loss, count_mae
        )
        if val_dice > self.best_dice:
            self.best_dice, self.stale = val_dice, 0
        else:
            self.stale += 1
        # the count MAE takes few values on a small val split: ties go to the higher Dice
        key = (-count_mae, val_dice) if count_mae is not None else (val_dice,)
        if self.keep_best and (self._best_key is None or key > self._best_key):
            self._best_key, self.kept = key, result
            self._best_state = copy.deepcopy(self.model.state_dict())
        return result

    def restore_best(self) -> None:
        if self._best_state is not None:
            self.model.load_state_dict(self._best_state)
