"""Tiled inference with test-time augmentation: each view mapped back before averaging."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from skipnas.predict import predict_probabilities
from skipnas.runtime.device import select_device
from skipnas.tta import TTA_MODES, TTAError


class LeftToRightRamp(nn.Module):
    """Logits that rise from left to right whatever the input: a model that knows where left is."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        width = x.shape[3]
        ramp = torch.linspace(-3.0, 3.0, width, dtype=x.dtype, device=x.device)
        return (x[:, :1] * 0 + ramp).contiguous()


class PixelScale(nn.Module):
    """A pointwise model: it sees no direction, so every view gives the same answer."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2.0 * x[:, :1] - 1.0


def test_flips_average_a_left_right_bias_away() -> None:
    image = np.zeros((1, 16, 16), np.float32)
    setup = select_device("cpu")
    plain = predict_probabilities(LeftToRightRamp(), image, setup, tile=16, overlap=0)
    assert plain[0, 0, 0] < 0.1 and plain[0, 0, -1] > 0.9
    for mode in ("flips", "dihedral"):
        averaged = predict_probabilities(LeftToRightRamp(), image, setup, tile=16, overlap=0, tta=mode)
        # sigmoid(r) and sigmoid(-r), mapped back onto the same pixel, average to one half
        np.testing.assert_allclose(averaged, 0.5, atol=1e-6)


def test_a_model_without_direction_predicts_the_same_in_every_mode() -> None:
    image = np.random.default_rng(0).random((1, 24, 20), dtype=np.float32)
    setup = select_device("cpu")
    plain = predict_probabilities(PixelScale(), image, setup, tile=16, overlap=4)
    for mode in TTA_MODES:
        np.testing.assert_allclose(predict_probabilities(PixelScale(), image, setup, tile=16, overlap=4, tta=mode), plain, atol=1e-6)


def test_an_unknown_mode_is_refused_before_any_prediction() -> None:
    with pytest.raises(TTAError, match="unknown test-time augmentation 'rotate'; choose one of none, flips, dihedral"):
        predict_probabilities(PixelScale(), np.zeros((1, 8, 8), np.float32), select_device("cpu"), tta="rotate")
