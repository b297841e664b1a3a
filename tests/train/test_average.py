from __future__ import annotations

import pytest
import torch
from torch import nn

from skipnas.errors import SkipnasError
from skipnas.train.average import WeightAverage, check_ema_decay
from skipnas.train.config import TrainConfig


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))


def test_the_average_follows_the_weights_by_the_warming_decay() -> None:
    model = _model()
    average = WeightAverage(model, decay=0.9)
    weight = model[0].weight
    expected = weight.detach().clone()
    for step in range(30):
        with torch.no_grad():
            weight.add_(1.0)  # as if an optimiser step moved it
        decay = min(0.9, (1 + step) / (10 + step))
        assert average.current_decay() == pytest.approx(decay)
        average.update()
        expected = decay * expected + (1 - decay) * weight.detach()
    assert torch.allclose(average.average["0.weight"], expected, atol=1e-5)
    # thirty steps of +1, the decay still warming (0.77 at the last): the average lags a few steps behind
    assert 2 < float((weight.detach() - average.average["0.weight"]).mean()) < 5


def test_batch_norm_statistics_are_averaged_and_its_step_counter_taken_as_it_is() -> None:
    model = _model()
    average = WeightAverage(model, decay=0.5)
    model.train()
    model(torch.randn(4, 1, 8, 8) + 3.0)  # moves the running mean, counts one batch
    average.update()  # the first update's decay is 1/10: nine tenths of the new statistics
    bn = model[1]
    assert bn.running_mean.abs().sum() > 0
    assert torch.allclose(average.average["1.running_mean"], 0.1 * torch.zeros(2) + 0.9 * bn.running_mean)
    model(torch.randn(4, 1, 8, 8))  # a second batch: the counter is 2
    with average.applied():
        assert int(model[1].num_batches_tracked) == 2  # taken as the model holds it
        assert torch.allclose(model[1].running_mean, average.average["1.running_mean"])


def test_applied_swaps_the_average_in_and_the_own_weights_back() -> None:
    model = _model()
    average = WeightAverage(model, decay=0.99)
    with torch.no_grad():
        model[0].weight.add_(5.0)
    moved = model[0].weight.detach().clone()
    average.update()
    with average.applied():
        assert torch.allclose(model[0].weight, average.average["0.weight"])
        assert not torch.allclose(model[0].weight, moved)
    assert torch.equal(model[0].weight, moved)  # training goes on from its own weights
    # after the swaps (load_state_dict copies in place) the average still follows the live weights
    with torch.no_grad():
        model[0].weight.add_(1.0)
    before = average.average["0.weight"].clone()
    decay = average.current_decay()
    average.update()
    assert torch.allclose(average.average["0.weight"], decay * before + (1 - decay) * model[0].weight.detach())
    average.apply()
    assert torch.equal(model[0].weight, average.average["0.weight"])


@pytest.mark.parametrize("decay", [-0.1, 1.0, 1.5, float("nan")])
def test_a_decay_outside_0_to_below_1_is_refused(decay: float) -> None:
    with pytest.raises(SkipnasError, match="weight average's decay"):
        check_ema_decay(decay)
    with pytest.raises(SkipnasError, match="weight average's decay"):
        TrainConfig(ema_decay=decay)


def test_no_average_by_default_and_zero_is_off() -> None:
    assert TrainConfig().ema_decay == 0.0 and check_ema_decay(0) == 0.0
