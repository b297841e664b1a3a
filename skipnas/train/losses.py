"""Losses for sparse binary targets: particles cover a few percent of a micrograph.

A model with an auxiliary head trains with :class:`AuxiliaryLoss`: the segmentation loss on the
class channels plus a weighted BCE of its last channel against a soft target in [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from skipnas.train.step import LossFn

LOSS_KINDS = ("bce_dice", "focal", "bce")


@dataclass(frozen=True)
class LossConfig:
    kind: str = "bce_dice"  # BCE + soft Dice: Dice keeps the rare foreground from being ignored
    dice_weight: float = 1.0
    focal_gamma: float = 2.0
    focal_alpha: float = 0.25

    def __post_init__(self) -> None:
        if self.kind not in LOSS_KINDS:
            raise ValueError(f"loss must be one of {', '.join(LOSS_KINDS)}, got {self.kind!r}")


def soft_dice_loss(logits: torch.Tensor, targets: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - soft Dice over the whole batch (per channel, then averaged); ``eps`` keeps empty tiles finite."""
    probs = torch.sigmoid(logits)
    dims = (0, 2, 3)
    intersection = (probs * targets).sum(dims)
    total = probs.sum(dims) + targets.sum(dims)
    return (1 - (2 * intersection + eps) / (total + eps)).mean()


def focal_loss(logits: torch.Tensor, targets: torch.Tensor, gamma: float = 2.0, alpha: float = 0.25) -> torch.Tensor:
    """Sigmoid focal loss (Lin et al. 2017), mean over pixels."""
    bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    p_t = torch.exp(-bce)
    weight = alpha * targets + (1 - alpha) * (1 - targets)
    return (weight * (1 - p_t) ** gamma * bce).mean()


def build_loss(config: LossConfig) -> LossFn:
    if config.kind == "bce":
        return F.binary_cross_entropy_with_logits
    if config.kind == "focal":
        return lambda logits, targets: focal_loss(logits, targets, config.focal_gamma, config.focal_alpha)

    def bce_dice(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        bce = F.binary_cross_entropy_with_logits(logits, targets)
        return bce + config.dice_weight * soft_dice_loss(logits, targets)

    return bce_dice


@dataclass(frozen=True)
class AuxiliaryLoss:
    """``segmentation`` on every channel but the last, plus ``weight`` x BCE-with-logits of the last
    channel (the auxiliary head) against its soft target; targets carry the same channels."""

    segmentation: LossFn
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.weight) and self.weight >= 0):
            raise ValueError(f"auxiliary_weight must be a finite number >= 0, got {self.weight!r}")

    def terms(self, logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(segmentation loss, unweighted auxiliary loss)."""
        if logits.shape[1] < 2 or logits.shape != targets.shape:
            raise ValueError(
                f"an auxiliary loss needs class channels plus one auxiliary channel in logits and targets alike, "
                f"got {tuple(logits.shape)} and {tuple(targets.shape)}"
            )
        segmentation = self.segmentation(logits[:, :-1], targets[:, :-1])
        auxiliary = F.binary_cross_entropy_with_logits(logits[:, -1:], targets[:, -1:])
        return segmentation, auxiliary

    def combine(self, segmentation: torch.Tensor, auxiliary: torch.Tensor) -> torch.Tensor:
        """The training loss from :meth:`terms`."""
        return segmentation + self.weight * auxiliary

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.combine(*self.terms(logits, targets))
