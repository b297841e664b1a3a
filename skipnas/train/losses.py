"""Losses for sparse binary targets: particles cover a few percent of a micrograph.

A model with an auxiliary head trains with :class:`AuxiliaryLoss`: the segmentation loss on the
class channels plus a weighted BCE of its last channel against a soft target in [0, 1].

Pixel losses weigh a particle by its pixels, so a small or faint particle that the network misses
costs almost nothing next to the rest of the batch. With ``LossConfig.particle_weight`` above 0,
:class:`ParticleLoss` adds :func:`particle_dice_loss` (the blob loss of Kofler et al., IPMI 2023):
one minus the mean of every particle's own soft Dice, so each particle counts alike. It needs the
instance IDs, which then come as the targets' last channel.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from skipnas.errors import SkipnasError
from skipnas.train.step import LossFn

LOSS_KINDS = ("bce_dice", "focal", "bce")


class LossConfigError(SkipnasError, ValueError):
    """A loss setting that cannot be used."""


def check_loss_weight(name: str, value: object) -> None:
    """One clear error unless ``value`` (the weight of a loss term, named ``name``) is a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (math.isfinite(value) and value >= 0):
        raise LossConfigError(f"{name} must be a finite number >= 0, got {value!r}")


@dataclass(frozen=True)
class LossConfig:
    kind: str = "bce_dice"  # BCE + soft Dice: Dice keeps the rare foreground from being ignored
    dice_weight: float = 1.0
    focal_gamma: float = 2.0
    focal_alpha: float = 0.25
    particle_weight: float = 0.0  # weight of the per-particle Dice term; 0: pixel losses only

    def __post_init__(self) -> None:
        if self.kind not in LOSS_KINDS:
            raise LossConfigError(f"loss must be one of {', '.join(LOSS_KINDS)}, got {self.kind!r}")
        check_loss_weight("particle_weight", self.particle_weight)

    @property
    def needs_instances(self) -> bool:
        """Whether the targets must carry the instance IDs as their last channel."""
        return self.particle_weight > 0


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


def particle_dice_loss(logits: torch.Tensor, instances: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - the mean soft Dice of every particle of the batch, each scored on its own.

    ``logits`` (B, 1, H, W) is the foreground; ``instances`` (B, H, W) holds one ID (>= 0) per
    particle of each image (0: background; IDs may repeat across images). A particle's Dice takes
    its own pixels as the target and its image without the other particles as the prediction
    region, so false positives on the background count against every particle of that image. No
    particle: 0.
    """
    if logits.ndim != 4 or logits.shape[1] != 1 or instances.shape != logits[:, 0].shape:
        raise ValueError(
            f"particle_dice_loss needs (B, 1, H, W) logits and (B, H, W) instance IDs, got "
            f"{tuple(logits.shape)} and {tuple(instances.shape)}"
        )
    batch = instances.shape[0]
    ids = instances.reshape(batch, -1)
    pixels = ids.shape[1]
    # rank each image's IDs 0 (background), 1, 2, ... with shape-static ops (sort, cumsum, scatter,
    # no unique or max), so the cost model's shape-only tensors run this loss as well; a 0 put in
    # front of every image keeps rank 0 for the background even where an image has none
    padded = torch.cat([torch.zeros_like(ids[:, :1]), ids], dim=1)
    ordered, order = padded.sort(dim=1)
    new_id = (ordered[:, 1:] != ordered[:, :-1]).long()
    ranked = torch.cat([torch.zeros_like(new_id[:, :1]), new_id.cumsum(dim=1)], dim=1)
    rank = torch.empty_like(ranked).scatter_(1, order, ranked)[:, 1:]
    slots = pixels + 1  # per image: the background and at most one particle per pixel
    keys = (rank + torch.arange(batch, device=rank.device).view(-1, 1) * slots).flatten()
    probs = torch.sigmoid(logits[:, 0]).reshape(-1)
    predicted = probs.new_zeros(batch * slots).index_add_(0, keys, probs).view(batch, slots)
    area = probs.new_zeros(batch * slots).index_add_(0, keys, torch.ones_like(probs)).view(batch, slots)
    own = predicted[:, 1:]
    dice = (2 * own + eps) / (own + predicted[:, :1] + area[:, 1:] + eps)
    present = (area[:, 1:] > 0).to(probs.dtype)
    return ((1 - dice) * present).sum() / present.sum().clamp(min=1)


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
    # called with each step's detached auxiliary term, so a trainer can report it without a second pass
    record: Callable[[torch.Tensor], object] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        check_loss_weight("auxiliary_weight", self.weight)

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
        segmentation, auxiliary = self.terms(logits, targets)
        if self.record is not None:
            self.record(auxiliary.detach())
        return self.combine(segmentation, auxiliary)


@dataclass(frozen=True)
class ParticleLoss:
    """``inner`` on the targets without their last channel, the instance IDs, plus ``weight`` x
    :func:`particle_dice_loss` of the first logit channel (the foreground) against those IDs."""

    inner: LossFn
    weight: float

    def __post_init__(self) -> None:
        check_loss_weight("particle_weight", self.weight)

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if targets.ndim != 4 or targets.shape[1] != logits.shape[1] + 1:
            raise ValueError(
                f"a particle loss needs the targets' channels plus one of instance IDs, got logits "
                f"{tuple(logits.shape)} and targets {tuple(targets.shape)}"
            )
        return self.inner(logits, targets[:, :-1]) + self.weight * particle_dice_loss(logits[:, :1], targets[:, -1])

