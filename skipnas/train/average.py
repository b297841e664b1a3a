"""An exponential moving average of a model's weights: validated, kept and counted with in place of the raw ones.

A short training run on a few images ends wherever its last noisy steps left the weights; their
average over the last steps is a steadier network (as timm's ``ModelEmaV3`` and Polyak averaging).
The average covers every floating-point tensor of the state dict, the batch-norm statistics too;
integer buffers (batch-norm's step counter) are taken as they are. The decay warms up: the ``n``-th
update uses ``min(decay, (1 + n) / (10 + n))``, so the first validations do not see the random
initial weights and, until about ``9 / (1 - decay)`` updates (890 for 0.99), the average spans
roughly the last ninth of the steps.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from skipnas.errors import SkipnasError


def check_ema_decay(decay: float, name: str = "the weight average's decay") -> float:
    """``decay`` when it is from 0 (no average) up to, but not including, 1; otherwise one clear error naming ``name``."""
    if not (isinstance(decay, (int, float)) and math.isfinite(decay) and 0.0 <= decay < 1.0):
        shown = f"{decay:g}" if isinstance(decay, (int, float)) else repr(decay)
        raise SkipnasError(f"{name} must be from 0 (no average) up to, but not including, 1 (e.g. 0.99), got {shown}")
    return float(decay)


class WeightAverage:
    """The moving average of ``model``'s state dict, updated by :meth:`update` after each optimiser step."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.model = model
        self.decay = check_ema_decay(decay)
        self.updates = 0
        # state_dict() tensors share storage with the model's: the lists follow every optimiser step
        live = model.state_dict()
        self.average = {name: tensor.detach().clone() for name, tensor in live.items()}
        floats = [name for name, tensor in live.items() if tensor.is_floating_point()]
        self._others = [name for name, tensor in live.items() if not tensor.is_floating_point()]
        self._live_floats = [live[name] for name in floats]
        self._live_others = [live[name] for name in self._others]
        self._average_floats = [self.average[name] for name in floats]

    def current_decay(self) -> float:
        """The decay of the next update: ``decay``, smaller for the first few."""
        return min(self.decay, (1 + self.updates) / (10 + self.updates))

    @torch.no_grad()
    def update(self) -> None:
        """Move the average towards the model's weights as they are now."""
        weight = 1.0 - self.current_decay()
        self.updates += 1
        if self._average_floats:
            torch._foreach_lerp_(self._average_floats, self._live_floats, weight)

    def _averaged_state(self) -> dict[str, torch.Tensor]:
        """The average, with the integer buffers as the model holds them now."""
        for name, tensor in zip(self._others, self._live_others, strict=True):
            self.average[name].copy_(tensor)
        return self.average

    @contextmanager
    def applied(self) -> Iterator[None]:
        """The model holds the averaged weights inside the block, its own again after it."""
        own = {name: tensor.detach().clone() for name, tensor in self.model.state_dict().items()}
        self.model.load_state_dict(self._averaged_state())
        try:
            yield
        finally:
            self.model.load_state_dict(own)

    def apply(self) -> None:
        """The model keeps the averaged weights."""
        self.model.load_state_dict(self._averaged_state())


__all__ = ["WeightAverage", "check_ema_decay"]
