from __future__ import annotations

import pytest
import torch

from skipnas.train.losses import (
    LOSS_KINDS,
    AuxiliaryLoss,
    LossConfig,
    LossConfigError,
    ParticleLoss,
    build_loss,
    focal_loss,
    particle_dice_loss,
    soft_dice_loss,
)


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


def _three_particles() -> torch.Tensor:
    """Instance IDs of two images: a 2x2 and a 3x3 particle in the first, a 2x2 one (ID 1 again) in the second."""
    ids = torch.zeros(2, 8, 8)
    ids[0, :2, :2] = 1
    ids[0, 5:, 5:] = 2
    ids[1, 3:5, 3:5] = 1
    return ids


def _confident(mask: torch.Tensor) -> torch.Tensor:
    return torch.where(mask, 30.0, -30.0)[:, None]


def test_a_perfect_prediction_has_no_particle_loss() -> None:
    ids = _three_particles()
    assert particle_dice_loss(_confident(ids > 0), ids) == pytest.approx(0.0, abs=1e-6)


def test_a_missed_particle_costs_its_share_of_the_particles_whatever_the_others_size() -> None:
    ids = _three_particles()
    missed = _confident((ids > 0) & ~((ids == 1) & (torch.arange(2).view(2, 1, 1) == 0)))
    # the missed 2x2 particle scores eps / (area + eps) = 1/5; the other two score 1
    assert particle_dice_loss(missed, ids) == pytest.approx((1 - 1 / 5) / 3, abs=1e-6)
    # the same ID in another image is another particle: missing that one costs the same
    other = _confident((ids > 0) & ~((ids == 1) & (torch.arange(2).view(2, 1, 1) == 1)))
    assert float(particle_dice_loss(other, ids)) == pytest.approx(float(particle_dice_loss(missed, ids)), abs=1e-6)
    # pixel Dice barely notices a small particle missed next to a large one; the particle term does
    big = torch.zeros(1, 32, 32)
    big[0, :20, :20] = 1
    big[0, 25:27, 25:27] = 2
    without_small = _confident(big == 1)
    assert soft_dice_loss(without_small, (big > 0).float()[:, None]) < 0.01
    assert particle_dice_loss(without_small, big) == pytest.approx((1 - 1 / 5) / 2, abs=1e-6)


def test_false_positives_count_against_the_particles_of_their_own_image_only() -> None:
    ids = _three_particles()
    logits = _confident(ids > 0)
    logits[1, 0, 6:, :2] = 30.0  # 4 false-positive pixels in the second image
    # the second image's particle: 2 * 4 / (4 + 4 + 4) with eps 1 -> 9 / 13; the first image's two stay at 1
    assert particle_dice_loss(logits, ids) == pytest.approx((1 - 9 / 13) / 3, abs=1e-5)


def test_without_particles_the_particle_term_is_zero_and_still_differentiable() -> None:
    logits = torch.zeros(2, 1, 8, 8, requires_grad=True)
    loss = particle_dice_loss(logits, torch.zeros(2, 8, 8))
    loss.backward()
    assert loss == 0 and logits.grad is not None
    with pytest.raises(ValueError, match=r"\(B, 1, H, W\) logits and \(B, H, W\) instance IDs"):
        particle_dice_loss(torch.zeros(2, 2, 8, 8), torch.zeros(2, 8, 8))


def test_the_particle_loss_adds_its_term_to_the_loss_of_the_other_target_channels() -> None:
    ids = _three_particles()
    torch.manual_seed(0)
    distance = (ids > 0).float()[:, None] * torch.rand(2, 1, 8, 8)
    targets = torch.cat([(ids > 0).float()[:, None], distance, ids[:, None]], dim=1)
    logits = torch.randn(2, 2, 8, 8)
    inner = AuxiliaryLoss(build_loss(LossConfig()))
    for weight in (0.5, 2.0):
        total = ParticleLoss(inner, weight)(logits, targets)
        expected = inner(logits, targets[:, :2]) + weight * particle_dice_loss(logits[:, :1], ids)
        assert total == pytest.approx(float(expected))
    with pytest.raises(ValueError, match="plus one of instance IDs"):
        ParticleLoss(inner, 1.0)(logits, targets[:, :2])


def test_a_particle_weight_asks_for_the_instance_ids() -> None:
    assert not LossConfig().needs_instances and LossConfig(particle_weight=0.5).needs_instances
    for bad in (-1.0, float("nan"), True):
        with pytest.raises(LossConfigError, match="particle_weight must be a finite number >= 0"):
            LossConfig(particle_weight=bad)
