from __future__ import annotations

import pytest
import torch

from skipnas.train.losses import LOSS_KINDS, LossConfig, build_loss, focal_loss, soft_dice_loss


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
