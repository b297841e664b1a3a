from __future__ import annotations

import pytest
import torch

from skipnas.train.losses import LOSS_KINDS, AuxiliaryLoss, LossConfig, build_loss, focal_loss, soft_dice_loss


def _target() -> torch.Tensor:
    target = torch.zeros(2, 1, 8, 8)
    target[:, :, 2:5, 2:5] = 1
    return target


@pytest.mark.parametrize("kind", LOSS_KINDS)
def test_a_confident_right_answer_costs_less_than_a_wrong_one(kind: str) -> None:
    loss = build_loss(LossConfig(kind=kind))
    target = _target()
    right = torch.where(target > 0, 8.0, -8.0)
    assert loss(right, target) < 0.01 < loss(-right, target)


def test_soft_dice_is_zero_for_a_perfect_mask_and_one_for_a_disjoint_mask() -> None:
    target = _target()
    huge = torch.where(target > 0, 50.0, -50.0)
    assert soft_dice_loss(huge, target, eps=0.0) == pytest.approx(0.0, abs=1e-6)
    assert soft_dice_loss(-huge, target, eps=0.0) == pytest.approx(1.0, abs=1e-6)


def test_focal_loss_down_weights_easy_pixels() -> None:
    target = _target()
    easy = torch.where(target > 0, 3.0, -3.0)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(easy, target)
    assert focal_loss(easy, target) < 0.1 * bce


def test_unknown_loss_is_rejected() -> None:
    with pytest.raises(ValueError, match="loss must be one of"):
        LossConfig(kind="hinge")


def _with_auxiliary(distance: torch.Tensor) -> torch.Tensor:
    return torch.cat([_target(), distance], dim=1)


def test_the_auxiliary_term_is_bce_of_the_last_channel_against_its_soft_target() -> None:
    torch.manual_seed(0)
    distance = _target() * torch.rand(2, 1, 8, 8)
    targets = _with_auxiliary(distance)
    logits = torch.randn(2, 2, 8, 8)
    segmentation_loss = build_loss(LossConfig())
    segmentation, auxiliary = AuxiliaryLoss(segmentation_loss).terms(logits, targets)
    assert segmentation == segmentation_loss(logits[:, :1], targets[:, :1])
    assert auxiliary == pytest.approx(float(torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 1:], distance)))
    # the soft target's own entropy is the least the term can be: predicting it exactly reaches it
    exact = torch.logit(distance.clamp(1e-6, 1 - 1e-6))
    _, at_target = AuxiliaryLoss(segmentation_loss).terms(torch.cat([logits[:, :1], exact], dim=1), targets)
    assert at_target < auxiliary


def test_the_auxiliary_weight_scales_only_the_auxiliary_term() -> None:
    targets = _with_auxiliary(_target() * 0.5)
    logits = torch.randn(2, 2, 8, 8)
    segmentation, auxiliary = AuxiliaryLoss(build_loss(LossConfig())).terms(logits, targets)
    for weight in (0.0, 1.0, 2.5):
        total = AuxiliaryLoss(build_loss(LossConfig()), weight)(logits, targets)
        assert total == pytest.approx(float(segmentation + weight * auxiliary))
    with pytest.raises(ValueError, match="auxiliary_weight must be a finite number >= 0"):
        AuxiliaryLoss(build_loss(LossConfig()), -1.0)


def test_an_auxiliary_loss_needs_the_auxiliary_channel() -> None:
    with pytest.raises(ValueError, match="class channels plus one auxiliary channel"):
        AuxiliaryLoss(build_loss(LossConfig()))(torch.zeros(2, 1, 8, 8), _target())
