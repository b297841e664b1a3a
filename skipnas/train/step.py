"""One optimisation step, shared by the trainer and the cost model so both measure the same work."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from skipnas.runtime.device import autocast_context

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def make_optimizer(
    name: str,
    params: Iterable[torch.nn.Parameter],
    lr: float = 1e-3,
    *,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    foreach: bool | None = None,
) -> torch.optim.Optimizer:
    """Adam, or SGD with ``momentum``; ``foreach`` None lets torch choose its multi-tensor path
    (taken on CUDA, where it allocates temporaries the size of the parameters)."""
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, foreach=foreach)
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, foreach=foreach)


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    images: torch.Tensor,
    targets: torch.Tensor,
    loss_fn: LossFn,
    amp_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Forward under autocast, loss in fp32, backward, optimizer step; returns the detached loss."""
    optimizer.zero_grad(set_to_none=True)
    with autocast_context(images.device.type, amp_dtype):
        logits = model(images)
    loss = loss_fn(logits.float(), targets)
    loss.backward()
    optimizer.step()
    return loss.detach()
