"""How a candidate trains: the budgets of its two phases and every training setting, checked."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from skipnas.auxiliary import check_auxiliary
from skipnas.counting.calibrate import DEFAULT_SELECTION, CalibrationGrid, check_selection
from skipnas.data.augment import AugmentConfig
from skipnas.data.rescale import check_scale
from skipnas.data.synth import SynthConfig
from skipnas.data.tiling import INFERENCE_OVERLAP, INFERENCE_TILE, TileConfig
from skipnas.errors import SkipnasError
from skipnas.train.average import check_ema_decay
from skipnas.train.losses import LossConfig, check_loss_weight
from skipnas.tta import check_tta

OPTIMIZERS = ("adam", "sgd")


SCHEDULERS = ("plateau", "step", "cosine", "none")


KEEP_BEST_BY = ("dice", "count")


NORMALISE_MODES = ("dataset", "image")


CALIBRATE_ON = ("val", "val+train", "auto")


def split_steps(steps: int, pretrain_share: float) -> tuple[int, int]:
    """A step budget split into (pretraining, fine-tuning) steps, pretraining ``pretrain_share`` of it, rounded."""
    pretrain = round(steps * pretrain_share)
    return pretrain, steps - pretrain


@dataclass(frozen=True)
class PhaseConfig:
    """One phase's budget (the first of epochs, steps, seconds to run out ends it) and learning rate.

    A phase with no budget at all, or a zero budget, is skipped.
    """

    epochs: int | None = None
    steps: int | None = None
    seconds: float | None = None
    lr: float = 1e-3

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise SkipnasError(f"a phase's learning rate must be above 0, got {self.lr}")
        for name in ("epochs", "steps", "seconds"):
            budget = getattr(self, name)
            if budget is not None and not budget >= 0:  # NaN fails too
                raise SkipnasError(f"a phase's {name} budget must be 0 (skip the phase) or more, got {budget}")

    @property
    def enabled(self) -> bool:
        budgets = [b for b in (self.epochs, self.steps, self.seconds) if b is not None]
        return bool(budgets) and all(b > 0 for b in budgets)


@dataclass(frozen=True)
class TrainConfig:
    # no pretraining by default: validation preferred its seconds spent fine-tuning on the three real
    # datasets measured, by margins within the runs' noise (docs/RESULTS.md); --pretrain-seconds turns it on
    pretrain: PhaseConfig = field(default_factory=lambda: PhaseConfig(seconds=0, lr=1e-3))
    finetune: PhaseConfig = field(default_factory=lambda: PhaseConfig(seconds=180, lr=5e-4))
    synthetic_images: int = 64  # semi-synthetic images generated from the training split for pretraining
    synth: SynthConfig = field(default_factory=SynthConfig)
    batch_size: int = 8
    tile: TileConfig = field(default_factory=TileConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optimizer: str = "adam"
    momentum: float = 0.9  # SGD only
    weight_decay: float = 0.0
    # validate, keep and save an exponential moving average of the weights, of this decay
    # (skipnas.train.average, with its warm-up); 0: the weights themselves
    ema_decay: float = 0.0
    # ReduceLROnPlateau on validation Dice, StepLR, or a half cosine over the phase's budget down to
    # min_lr_fraction: stepped by a noisy Dice, the plateau schedule can reach its floor long before a
    # long budget ends, where the cosine spends the whole budget
    scheduler: str = "plateau"
    plateau_patience: int = 2  # validations without a better Dice before the learning rate falls
    plateau_factor: float = 0.5
    # the plateau and cosine schedules never take the learning rate below this fraction of the phase's own:
    # on a long run the noisy validation Dice stalls again and again, and halving without a floor
    # left 1e-8 (nothing learnt in the second half of a 10-minute run)
    min_lr_fraction: float = 0.05
    step_size: int = 10  # StepLR, in validations
    step_gamma: float = 0.5
    early_stopping: int | None = 8  # validations without a better Dice before a phase stops; None: never
    # validate every this many steps, within an epoch or across several (and at the end of the
    # budget); None: after every epoch. On small datasets an epoch is a few steps, and validating
    # (so stepping the plateau scheduler) after each one cut the learning rate to nothing within
    # the first minute
    validation_steps: int | None = 100
    # on a wall-clock budget, a validation waits (past validation_steps) while validating has taken
    # more than this share of the phase's time: large validation images would otherwise eat the budget
    max_validation_share: float = 0.2
    # images are resized by this before the network (training, validation and counting alike), so
    # particles of any size reach the sizes a U-Net resolves; counting works on the maps at that
    # scale and gives the particles back in the image's own pixels
    scale: float = 1.0
    # "dataset": every image normalised by the training split's statistics; "image": each stretched
    # by its own percentiles first (images whose brightness differs a lot between them)
    normalise: str = "dataset"
    val_tile: int = INFERENCE_TILE  # validation (and later inference) predicts full images in tiles of this size
    val_overlap: int = INFERENCE_OVERLAP  # px of overlap between those tiles
    val_batch: int = 8  # tiles per forward pass while validating
    device: str = "auto"
    precision: str = "auto"
    channels_last: str = "auto"
    seed: int = 0
    auxiliary: str | None = None  # a second head trained on this target from the instance masks ("distance")
    auxiliary_weight: float = 1.0  # its BCE's weight next to the segmentation loss
    # which fine-tuning validation's weights are kept: the highest pixel Dice, or the lowest count MAE
    # with the counting calibrated on val (on ``count_grid``; None: the default grid): Dice may peak
    # before the auxiliary head's cores are sharp enough to split touching particles
    keep_best_by: str = "dice"
    count_grid: CalibrationGrid | None = None
    # how calibration picks among the grid's settings (skipnas.counting.calibrate.SELECTIONS)
    calibration_selection: str = DEFAULT_SELECTION
    # the labelled images that choose the counting setting (CALIBRATE_ON): val; val and train; or auto,
    # val and train when val holds fewer than FEW_PARTICLES particles, which cannot support a setting
    calibrate_on: str = "val"
    # test-time augmentation of the final calibration's val predictions (skipnas.tta), recorded in the
    # model folder so counting predicts the same way; validations during training predict plainly
    tta: str = "none"

    def __post_init__(self) -> None:
        check_auxiliary(self.auxiliary)
        check_tta(self.tta)
        check_scale(self.scale, "scale")
        check_selection(self.calibration_selection, "calibration_selection")
        if self.calibrate_on not in CALIBRATE_ON:
            raise SkipnasError(f"calibrate_on must be one of {', '.join(CALIBRATE_ON)}, got {self.calibrate_on!r}")
        if self.normalise not in NORMALISE_MODES:
            raise SkipnasError(f"normalise must be one of {', '.join(NORMALISE_MODES)}, got {self.normalise!r}")
        if self.keep_best_by not in KEEP_BEST_BY:
            raise SkipnasError(f"keep_best_by must be one of {', '.join(KEEP_BEST_BY)}, got {self.keep_best_by!r}")
        check_loss_weight("auxiliary_weight", self.auxiliary_weight)
        if self.optimizer not in OPTIMIZERS:
            raise SkipnasError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.scheduler not in SCHEDULERS:
            raise SkipnasError(f"scheduler must be one of {', '.join(SCHEDULERS)}, got {self.scheduler!r}")
        for name in ("batch_size", "val_batch", "val_tile"):
            if getattr(self, name) < 1:
                raise SkipnasError(f"{name} must be at least 1, got {getattr(self, name)}")
        check_ema_decay(self.ema_decay)
        if not self.weight_decay >= 0:
            raise SkipnasError(f"weight_decay must be 0 or more, got {self.weight_decay}")
        if not 0.0 <= self.momentum < 1.0:
            raise SkipnasError(f"momentum must be from 0 to below 1, got {self.momentum}")
        if not 0.0 <= self.min_lr_fraction <= 1.0:
            raise SkipnasError(f"min_lr_fraction must be from 0 to 1, got {self.min_lr_fraction}")
        if not 0.0 < self.max_validation_share <= 1.0:
            raise SkipnasError(f"max_validation_share must be above 0 and at most 1, got {self.max_validation_share}")
        if self.validation_steps is not None and self.validation_steps < 1:
            raise SkipnasError(f"validation_steps must be at least 1 (or None: every epoch), got {self.validation_steps}")
