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

import math
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from skipnas.data.loading import LabeledImage
from skipnas.errors import SkipnasError
from skipnas.progress import progress_bar
from skipnas.runtime.device import DeviceSetup, StagePeaks, place_model, select_device
from skipnas.runtime.normalise import Normalisation
from skipnas.train.average import WeightAverage
from skipnas.train.config import PhaseConfig, TrainConfig
from skipnas.train.data import TileDataset
from skipnas.train.losses import AuxiliaryLoss, ParticleLoss, build_loss
from skipnas.train.step import LossFn, make_optimizer, train_step
from skipnas.train.validation import Callback, EpochResult, PhaseValidation


class TrainingDiverged(SkipnasError):
    """The loss became NaN or infinite: the learning rate is usually too high."""


def cosine_lr(lr: float, floor_fraction: float, spent: float) -> float:
    """The learning rate after ``spent`` (0 to 1) of a phase's budget: a half cosine from ``lr`` down
    to ``floor_fraction * lr``. Budget-based, not step-based, so a wall-clock budget decays too."""
    floor = lr * floor_fraction
    return floor + (lr - floor) * 0.5 * (1.0 + math.cos(math.pi * min(max(spent, 0.0), 1.0)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


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


@dataclass
class _PhaseBudget:
    """How much of a phase's budgets (steps, seconds, epochs) is spent."""

    phase: PhaseConfig
    batches_per_epoch: int
    steps: int = 0
    epoch: int = 0  # the running epoch, from 1
    started: float = field(default_factory=time.perf_counter)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def spent(self, batch: int) -> float:
        """The largest fraction of the budgets used so far, at ``batch`` of the running epoch."""
        spent = [self.steps / self.phase.steps] if self.phase.steps else []
        if self.phase.seconds:
            spent.append(self.elapsed() / self.phase.seconds)
        if self.phase.epochs:
            spent.append((self.epoch - 1 + batch / max(self.batches_per_epoch, 1)) / self.phase.epochs)
        return max(spent, default=0.0)  # cosine_lr holds it at the floor past 1

    def exhausted(self) -> str:
        """The budget that ran out, in words, or ""."""
        if self.phase.steps is not None and self.steps >= self.phase.steps:
            return f"{self.phase.steps} steps"
        if self.phase.seconds is not None and self.elapsed() >= self.phase.seconds:
            return f"{self.phase.seconds:g} s"
        return ""


@dataclass
class _LossTally:
    """The training loss and auxiliary term summed on the device between validations (no sync per step)."""

    loss: torch.Tensor
    auxiliary: torch.Tensor
    batches: int = 0

    @classmethod
    def on(cls, device: torch.device) -> _LossTally:
        return cls(torch.zeros((), device=device), torch.zeros((), device=device))

    def add(self, loss: torch.Tensor) -> None:
        self.loss += loss
        self.batches += 1

    def take_means(self, with_auxiliary: bool) -> tuple[float, float | None]:
        """The mean loss (and auxiliary term) since the last call; starts the sums again."""
        batches = max(self.batches, 1)
        means = float(self.loss) / batches, float(self.auxiliary) / batches if with_auxiliary else None
        self.loss.zero_()
        self.auxiliary.zero_()
        self.batches = 0
        return means


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
    ) -> tuple[str, PhaseValidation, float]:
        """Returns why it stopped, the phase's validations and its seconds; with ``keep_best`` the model
        ends on the weights of its best validation by ``keep_best_by``."""
        started = time.perf_counter()  # making the tiles counts toward a seconds budget
        loader = self._loader(train_images, seed=self.config.seed + (0 if name == "pretrain" else 1))
        optimizer = self._optimizer(phase.lr)
        scheduler = self._scheduler(optimizer, phase.lr)
        memory_format = torch.channels_last if self.setup.channels_last else torch.contiguous_format
        budget = _PhaseBudget(phase, len(loader), started=started)
        validation = PhaseValidation(self.model, val_images, self.normalisation, self.setup, self.config, self.memory, keep_best)
        tally = _LossTally.on(self.setup.device)
        average = WeightAverage(self.model, self.config.ema_decay) if self.config.ema_decay > 0 else None
        loss_fn = training_loss(self.config, record_auxiliary=tally.auxiliary.add_)
        by_steps = phase.steps is not None and phase.seconds is None
        interval = self.config.validation_steps or 0
        reason = ""

        def validate() -> str:
            """Validate and act on it (history, progress, callbacks, schedule); returns why the phase stops early, or ""."""
            self._check_finite(tally.loss, name, budget.steps)
            train_loss, auxiliary_loss = tally.take_means(with_auxiliary=self.config.auxiliary is not None)
            lr = optimizer.param_groups[0]["lr"]
            with average.applied() if average is not None else nullcontext():
                result = validation.run(name, budget.epoch, self.steps, train_loss, auxiliary_loss, lr, self._started)
            self.history.append(result)
            bar.update(detail=f"step {budget.steps}, {result.scores()}")
            for callback in self.callbacks:
                callback(result)
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.step(result.val_dice)
            elif scheduler is not None:
                scheduler.step()
            if self.config.early_stopping is not None and validation.stale >= self.config.early_stopping:
                return f"early stop: no better validation Dice in {validation.stale} validations"
            return ""

        with progress_bar(name, total=phase.steps if by_steps else phase.seconds, enabled=self.progress, transient=False) as bar:
            while not reason:
                budget.epoch += 1
                self.model.train()
                for batch, (images, targets) in enumerate(loader):
                    if self.config.scheduler == "cosine":
                        set_lr(optimizer, cosine_lr(phase.lr, self.config.min_lr_fraction, budget.spent(batch)))
                    images = images.to(self.setup.device, non_blocking=True).contiguous(memory_format=memory_format)
                    targets = targets.to(self.setup.device, non_blocking=True)
                    tally.add(train_step(self.model, optimizer, images, targets, loss_fn, self.setup.amp_dtype))
                    if average is not None:
                        average.update()
                    budget.steps += 1
                    self.steps += 1
                    # checking every step would sync a GPU each step; every 16 is soon enough
                    if budget.steps % 16 == 0:
                        self._check_finite(tally.loss, name, budget.steps)
                    bar.update(completed=budget.steps if by_steps else budget.elapsed())
                    if budget.exhausted():
                        break
                    # every ``interval`` steps, across short epochs and within long ones: an epoch of
                    # a large training set can be thousands of steps, too few weights to choose from
                    if interval and tally.batches >= interval and validation.affordable(phase, budget.elapsed()):
                        reason = validate()
                        if reason:
                            break
                if reason:
                    break
                self._check_finite(tally.loss, name, budget.steps)
                reason = budget.exhausted()
                if not reason and phase.epochs is not None and budget.epoch >= phase.epochs:
                    reason = f"{phase.epochs} epochs"
                if not reason and interval:
                    continue
                if tally.batches:  # the budget's end always validates, unless its last step just did
                    early_stop = validate()
                    reason = reason or early_stop
        self.memory.close("train_step")
        if average is not None:
            average.apply()  # what the validations saw; the kept weights, where kept, replace it
        validation.restore_best()
        return reason, validation, budget.elapsed()

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
            reasons[name], validation, seconds[name] = self._run_phase(name, phase, images, val, keep_best)
            validating[name] = validation.seconds
            kept = validation.kept if keep_best else kept
            best = validation.best_dice if keep_best or best == -math.inf else max(best, validation.best_dice)
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
