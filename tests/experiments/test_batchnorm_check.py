from __future__ import annotations

import torch
from torch import nn


def _stale_model() -> nn.Module:
    """A BatchNorm whose running averages are far from any batch's statistics."""
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3))
    with torch.no_grad():
        model[1].running_mean.fill_(5.0)
        model[1].running_var.fill_(0.01)
    return model.eval()


def test_batch_statistics_normalise_by_the_batch_and_leave_the_running_averages(load_experiment) -> None:
    module = load_experiment("batchnorm_check")
    model = _stale_model()
    batch = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        running = model(batch)
        with module.batch_statistics(model):
            by_batch = model(batch)
        after = model(batch)
    # with the batch's own statistics each channel comes out centred and scaled to 1
    assert by_batch.mean(dim=(0, 2, 3)).abs().max() < 1e-4
    assert by_batch.var(dim=(0, 2, 3), unbiased=False).sub(1).abs().max() < 1e-2
    assert (running - by_batch).abs().max() > 1.0
    # the running averages are back, unchanged, and in use again
    assert torch.equal(after, running)
    assert torch.all(model[1].running_mean == 5.0) and torch.all(model[1].running_var == 0.01)
    assert not model.training
