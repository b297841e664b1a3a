"""Two-phase training: pretrain on semi-synthetic images, then fine-tune on real ones.

The trainer knows nothing of Optuna: after every validation (every ``validation_steps`` steps,
within or across epochs, or after each epoch) it calls the callbacks with an :class:`EpochResult`;
a search prunes a trial by raising from its callback. Budgets are per phase, in epochs, steps or
wall-clock seconds (whichever ends first), since widths change step time by 10x or more and a
search needs comparable wall-clock budgets. Fine-tuning ends on the weights of its best
validation: the highest pixel Dice, or with ``keep_best_by="count"`` the lowest count MAE after
calibrating the counting on the validation images (the learning-rate schedule and early stopping
follow Dice either way).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from skipnas.auxiliary import check_auxiliary
from skipnas.counting.calibrate import SELECTIONS, CalibrationGrid, calibrate
from skipnas.data.augment import AugmentConfig
from skipnas.data.synth import SynthConfig
from skipnas.data.tiling import INFERENCE_OVERLAP, INFERENCE_TILE, TileConfig
from skipnas.errors import SkipnasError
from skipnas.predict import Prediction, auxiliary_maps, predict_images
from skipnas.progress import progress_bar
from skipnas.data.dataset import LabeledImage
from skipnas.data.rescale import check_scale, resize_maps
from skipnas.train.data import Normalisation, TileDataset
from skipnas.train.device import DeviceSetup, StagePeaks, place_model, select_device
from skipnas.train.losses import AuxiliaryLoss, LossConfig, ParticleLoss, build_loss, check_loss_weight
from skipnas.train.metrics import PixelMetrics, pixel_confusion
from skipnas.train.step import LossFn, make_optimizer, train_step
from skipnas.tta import check_tta

OPTIMIZERS = ("adam", "sgd")
SCHEDULERS = ("plateau", "step", "cosine", "none")
KEEP_BEST_BY = ("dice", "count")
NORMALISE_MODES = ("dataset", "image")


class TrainingDiverged(SkipnasError):
    """The loss became NaN or infinite: the learning rate is usually too high."""


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
    pretrain: PhaseConfig = field(default_factory=lambda: PhaseConfig(seconds=60, lr=1e-3))
    finetune: PhaseConfig = field(default_factory=lambda: PhaseConfig(seconds=120, lr=5e-4))
    synthetic_images: int = 64  # semi-synthetic images generated from the training split for pretraining
    synth: SynthConfig = field(default_factory=SynthConfig)
    batch_size: int = 8
    tile: TileConfig = field(default_factory=TileConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optimizer: str = "adam"
    momentum: float = 0.9  # SGD only
    weight_decay: float = 0.0
    # ReduceLROnPlateau on validation Dice, StepLR, or a half cosine over the phase's budget down to
    # min_lr_fraction: on a long run the plateau schedule, stepped by a noisy Dice, reached its floor
    # within about half the budget (the demo beads at width 24: by steps 4,024 and 4,131 of 7,600)
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
    calibration_selection: str = "stable"
    # test-time augmentation of the final calibration's val predictions (skipnas.tta), recorded in the
    # model folder so counting predicts the same way; validations during training predict plainly
    tta: str = "none"

    def __post_init__(self) -> None:
        check_auxiliary(self.auxiliary)
        check_tta(self.tta)
        check_scale(self.scale, "scale")
        if self.calibration_selection not in SELECTIONS:
            raise SkipnasError(f"calibration_selection must be one of {', '.join(SELECTIONS)}, got {self.calibration_selection!r}")
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


def cosine_lr(lr: float, floor_fraction: float, spent: float) -> float:
    """The learning rate after ``spent`` (0 to 1) of a phase's budget: a half cosine from ``lr`` down
    to ``floor_fraction * lr``. Budget-based, not step-based, so a wall-clock budget decays too."""
    floor = lr * floor_fraction
    return floor + (lr - floor) * 0.5 * (1.0 + math.cos(math.pi * min(max(spent, 0.0), 1.0)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


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


@dataclass
class TrainResult:
    model: nn.Module
    history: list[EpochResult]
    best_val_dice: float
    stop_reasons: dict[str, str]  # phase -> why it ended
    phase_seconds: dict[str, float]
    steps: int
    setup: DeviceSetup
    kept: EpochResult | None = None  # the fine-tuning validation whose weights the model holds
    validation_seconds: dict[str, float] = field(default_factory=dict)  # phase -> seconds of its validations
    # on CUDA: peak bytes allocated in training steps and in validation (StagePeaks), else empty
    measured_peak_bytes: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "best_val_dice": self.best_val_dice,
            "kept": None if self.kept is None else vars(self.kept),
            "stop_reasons": self.stop_reasons,
            "phase_seconds": self.phase_seconds,
            "validation_seconds": self.validation_seconds,
            "measured_peak_bytes": self.measured_peak_bytes,
            "steps": self.steps,
            "device": self.setup.describe(),
            "history": [vars(h) for h in self.history],
        }


def training_loss(config: TrainConfig, record_auxiliary: Callable[[torch.Tensor], object] | None = None) -> LossFn:
    """The loss a model trains with under ``config``: the segmentation loss, plus the auxiliary term
    when the config has an auxiliary head (each step's term goes to ``record_auxiliary``), plus the
    per-particle term when the loss has a particle weight (the targets then end with the instance IDs)."""
    loss = build_loss(config.loss)
    if config.auxiliary is not None:
        loss = AuxiliaryLoss(loss, config.auxiliary_weight, record=record_auxiliary)
    if config.loss.needs_instances:
        loss = ParticleLoss(loss, config.loss.particle_weight)
    return loss


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
    selection: str = "stable",
) -> float:
    """The count MAE of the counting setting ``grid`` and ``selection`` choose on these images (see :func:`calibrate`)."""
    _, table = calibrate(
        [p.foreground for p in predictions], [item.instances for item in images], grid=grid,
        auxiliary=auxiliary_maps(predictions), selection=selection,
    )
    return float(table["best"]["count_mae"])


class Trainer:
    """Trains one model through the configured phases; see :meth:`fit`."""

    def __init__(
        self,
        model: nn.Module,
        config: TrainConfig,
        normalisation: Normalisation,
        callbacks: Sequence[Callback] = (),
        progress: bool = True,
    ) -> None:
        self.config = config
        self.normalisation = normalisation
        self.callbacks = list(callbacks)
        self.progress = progress
        if getattr(model, "auxiliary", None) != config.auxiliary:
            raise ValueError(
                f"the model's auxiliary head ({getattr(model, 'auxiliary', None)}) differs from the config's "
                f"({config.auxiliary}): build it with build_model(..., auxiliary=config.auxiliary)"
            )
        self.setup = select_device(config.device, config.precision, config.channels_last)
        self.memory = StagePeaks(self.setup.device)  # before the model arrives: the trial's own bytes
        self.model = place_model(model, self.setup)
        self.history: list[EpochResult] = []
        self.steps = 0
        self._started = 0.0

    # one phase ------------------------------------------------------------------------------
    def _optimizer(self, lr: float) -> torch.optim.Optimizer:
        return make_optimizer(
            self.config.optimizer, self.model.parameters(), lr, weight_decay=self.config.weight_decay, momentum=self.config.momentum
        )

    def _scheduler(self, optimizer: torch.optim.Optimizer, lr: float) -> Any:
        if self.config.scheduler == "plateau":
            return torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer,
                mode="max",
                factor=self.config.plateau_factor,
                patience=self.config.plateau_patience,
                min_lr=lr * self.config.min_lr_fraction,
            )
        if self.config.scheduler == "step":
            return torch.optim.lr_scheduler.StepLR(optimizer, step_size=self.config.step_size, gamma=self.config.step_gamma)
        return None

    def _loader(self, images: Sequence[LabeledImage], seed: int) -> DataLoader:
        dataset = TileDataset(
            images, self.normalisation, self.config.tile, self.config.augment, seed=seed, auxiliary=self.config.auxiliary,
            instance_channel=self.config.loss.needs_instances,
        )
        generator = torch.Generator().manual_seed(seed)
        return DataLoader(
            dataset,
            batch_size=self.config.batch_size,
            shuffle=True,
            drop_last=len(dataset) >= self.config.batch_size,
            generator=generator,
            num_workers=0,  # tiles live in memory; workers would only add start-up time
        )

    def _run_phase(
        self, name: str, phase: PhaseConfig, train_images: Sequence[LabeledImage], val_images: Sequence[LabeledImage], keep_best: bool
    ) -> tuple[str, float, float, EpochResult | None, float]:
        """Returns (why it stopped, best validation Dice, seconds, the validation whose weights were
        kept, seconds spent validating); with ``keep_best`` the model ends on the weights of its best
        validation by ``keep_best_by``."""
        started = time.perf_counter()
        loader = self._loader(train_images, seed=self.config.seed + (0 if name == "pretrain" else 1))
        optimizer = self._optimizer(phase.lr)
        scheduler = self._scheduler(optimizer, phase.lr)
        memory_format = torch.channels_last if self.setup.channels_last else torch.contiguous_format
        best_dice, best_state, stale = -math.inf, None, 0
        best_key: tuple[float, ...] | None = None
        kept: EpochResult | None = None
        by_count = keep_best and self.config.keep_best_by == "count"
        phase_steps, epoch, reason = 0, 0, ""
        deadline = started + phase.seconds if phase.seconds is not None else math.inf

        def budget_spent(batch: int) -> float:
            """The largest fraction of the phase's budgets (steps, seconds, epochs) used so far."""
            spent = [phase_steps / phase.steps] if phase.steps else []
            if phase.seconds:
                spent.append((time.perf_counter() - started) / phase.seconds)
            if phase.epochs:
                spent.append((epoch - 1 + batch / max(len(loader), 1)) / phase.epochs)
            return max(spent, default=0.0)  # cosine_lr holds it at the floor past 1

        def out_of_budget() -> str:
            if phase.steps is not None and phase_steps >= phase.steps:
                return f"{phase.steps} steps"
            if time.perf_counter() >= deadline:
                return f"{phase.seconds:g} s"
            return ""

        # the auxiliary term is summed on the device like the loss, so recording it costs no sync
        auxiliary_sum = torch.zeros((), device=self.setup.device)
        loss_fn = training_loss(self.config, record_auxiliary=auxiliary_sum.add_)

        by_steps = phase.steps is not None and phase.seconds is None
        interval = self.config.validation_steps or 0
        loss_sum = torch.zeros((), device=self.setup.device)
        batches = 0

        validating = 0.0  # seconds spent validating in this phase

        def validation_affordable() -> bool:
            """On a seconds budget: validating so far took at most ``max_validation_share`` of the phase."""
            if phase.seconds is None:
                return True
            return validating <= self.config.max_validation_share * (time.perf_counter() - started)

        def validate() -> str:
            """Validate, keep the best weights, call the callbacks and step the schedule; returns
            why the phase stops early, or ""."""
            nonlocal batches, best_dice, stale, best_key, kept, best_state, validating
            validation_started = time.perf_counter()
            self.memory.close("train_step")
            self._check_finite(loss_sum, name, phase_steps)
            train_loss = float(loss_sum) / max(batches, 1)
            auxiliary_mean = float(auxiliary_sum) / max(batches, 1) if self.config.auxiliary is not None else None
            loss_sum.zero_()
            auxiliary_sum.zero_()
            batches = 0
            predictions = predict_images(
                self.model, val_images, self.normalisation, self.setup, self.config.val_tile, self.config.val_overlap,
                scale=self.config.scale, batch_size=self.config.val_batch,
            )
            self.memory.close("validation")
            self.model.train()  # a validation may come within an epoch
            val_dice = prediction_dice(predictions, val_images)
            count_mae = (
                calibrated_count_mae(predictions, val_images, self.config.count_grid, self.config.calibration_selection)
                if by_count
                else None
            )
            validating += time.perf_counter() - validation_started
            lr = optimizer.param_groups[0]["lr"]
            result = EpochResult(
                name, epoch, self.steps, train_loss, val_dice, lr, time.perf_counter() - self._started, auxiliary_mean,
                count_mae,
            )
            self.history.append(result)
            bar.update(detail=f"step {phase_steps}, {result.scores()}")
            if val_dice > best_dice:
                best_dice, stale = val_dice, 0
            else:
                stale += 1
            # the count MAE takes few values on a small val split: ties go to the higher Dice
            key = (-count_mae, val_dice) if count_mae is not None else (val_dice,)
            if keep_best and (best_key is None or key > best_key):
                best_key, kept = key, result
                best_state = copy.deepcopy(self.model.state_dict())
            for callback in self.callbacks:
                callback(result)
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.step(val_dice)
            elif scheduler is not None:
                scheduler.step()
            if self.config.early_stopping is not None and stale >= self.config.early_stopping:
                return f"early stop: no better validation Dice in {stale} validations"
            return ""

        with progress_bar(name, total=phase.steps if by_steps else phase.seconds, enabled=self.progress, transient=False) as bar:
            while not reason:
                epoch += 1
                self.model.train()
                for batch, (images, targets) in enumerate(loader):
                    if self.config.scheduler == "cosine":
                        set_lr(optimizer, cosine_lr(phase.lr, self.config.min_lr_fraction, budget_spent(batch)))
                    images = images.to(self.setup.device, non_blocking=True).contiguous(memory_format=memory_format)
                    targets = targets.to(self.setup.device, non_blocking=True)
                    loss = train_step(self.model, optimizer, images, targets, loss_fn, self.setup.amp_dtype)
                    loss_sum += loss
                    batches += 1
                    phase_steps += 1
                    self.steps += 1
                    # checking every step would sync a GPU each step; every 16 is soon enough
                    if phase_steps % 16 == 0:
                        self._check_finite(loss_sum, name, phase_steps)
                    bar.update(completed=phase_steps if by_steps else time.perf_counter() - started)
                    if out_of_budget():
                        break
                    # every ``interval`` steps, across short epochs and within long ones: an epoch of
                    # a large training set can be thousands of steps, too few weights to choose from
                    if interval and batches >= interval and validation_affordable():
                        reason = validate()
                        if reason:
                            break
                if reason:
                    break
                self._check_finite(loss_sum, name, phase_steps)
                reason = out_of_budget()
                if not reason and phase.epochs is not None and epoch >= phase.epochs:
                    reason = f"{phase.epochs} epochs"
                if not reason and interval:
                    continue
                if batches:  # the budget's end always validates, unless its last step just did
                    early_stop = validate()
                    reason = reason or early_stop
        self.memory.close("train_step")
        if best_state is not None:
            self.model.load_state_dict(best_state)
        return reason, best_dice, time.perf_counter() - started, kept, validating

    @staticmethod
    def _check_finite(loss_sum: torch.Tensor, phase: str, step: int) -> None:
        if not torch.isfinite(loss_sum):
            raise TrainingDiverged(
                f"the training loss became NaN or infinite during {phase} (by step {step}); lower the learning rate"
            )

    # both phases ----------------------------------------------------------------------------
    def fit(
        self,
        real_train: Sequence[LabeledImage],
        val: Sequence[LabeledImage],
        synthetic_train: Sequence[LabeledImage] = (),
    ) -> TrainResult:
        """Pretrain on ``synthetic_train`` (skipped when empty or disabled), then fine-tune on ``real_train``.

        The fine-tuned model is left at its best validation (``keep_best_by``).
        """
        if not val:
            raise SkipnasError("no labelled validation images: add a val split (or images to split from)")
        torch.manual_seed(self.config.seed)
        np.random.seed(self.config.seed % 2**32)
        self._started = time.perf_counter()
        reasons: dict[str, str] = {}
        seconds: dict[str, float] = {}
        validating: dict[str, float] = {}
        best = -math.inf
        kept: EpochResult | None = None
        phases = [("pretrain", self.config.pretrain, synthetic_train, False), ("finetune", self.config.finetune, real_train, True)]
        for name, phase, images, keep_best in phases:
            if not phase.enabled or not images:
                reasons[name] = "skipped"
                continue
            reasons[name], phase_best, seconds[name], phase_kept, validating[name] = self._run_phase(
                name, phase, images, val, keep_best
            )
            kept = phase_kept if keep_best else kept
            best = phase_best if keep_best or best == -math.inf else max(best, phase_best)
        if all(reason == "skipped" for reason in reasons.values()):
            raise SkipnasError("both training phases are skipped: give a pretrain or fine-tune budget")
        if reasons["finetune"] != "skipped":
            best = max(h.val_dice for h in self.history if h.phase == "finetune")
        return TrainResult(
            self.model, self.history, float(best), reasons, seconds, self.steps, self.setup, kept, validating,
            dict(self.memory.peaks),
        )


def fit_model(
    model: nn.Module,
    config: TrainConfig,
    normalisation: Normalisation,
    real_train: Sequence[LabeledImage],
    val: Sequence[LabeledImage],
    synthetic_train: Sequence[LabeledImage] = (),
    callbacks: Sequence[Callable[[EpochResult], None]] = (),
    progress: bool = True,
) -> TrainResult:
    return Trainer(model, config, normalisation, callbacks, progress).fit(real_train, val, synthetic_train)
