"""One optimisation step, shared by the trainer and the cost model so both measure the same work."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import nn

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def autocast_context(device_type: str, amp_dtype: torch.dtype | None) -> contextlib.AbstractContextManager[object]:
    """bf16/fp16 autocast on ``device_type``, or nothing for full precision."""
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, dtype=amp_dtype)


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
