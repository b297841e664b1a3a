"""What a candidate costs before it is trained: parameters, FLOPs and predicted peak training memory.

The prediction needs no GPU: one training step (the trainer's own :func:`train_step`) runs on fake
tensors, which carry shapes and dtypes but no data, while torch's ``FlopCounterMode`` counts FLOPs
and torch's ``MemTracker`` follows every tensor's lifetime to find the peak of live bytes. A warm-up
step runs first so the optimiser state exists, as in every step after the first.
On CUDA, :func:`measure_peak_cuda` runs the same step for real to compare.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from skipnas.genome import Genome
from skipnas.models import build_model
from skipnas.train.step import LossFn, train_step

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
OPTIMIZERS = ("adam", "sgd")


@dataclass(frozen=True)
class CostConfig:
    """The shape of one training step: tile size, batch, precision, optimiser."""

    tile: int = 64
    batch: int = 8
    in_channels: int = 1
    classes: int = 1
    dtype: str = "float32"  # autocast dtype of the forward pass; weights stay fp32
    optimizer: str = "adam"
    channels_last: bool = False

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.tile < 1 or self.batch < 1:
            raise ValueError(f"tile and batch must be >= 1, got {self.tile} and {self.batch}")

    @property
    def amp_dtype(self) -> torch.dtype | None:
        return None if self.dtype == "float32" else DTYPES[self.dtype]


@dataclass(frozen=True)
class CostReport:
    params: int
    forward_flops: int
    train_step_flops: int  # forward + backward of one batch
    predicted_peak_bytes: int
    memory_breakdown: dict[str, int] = field(default_factory=dict)  # bytes per kind at the peak

    @property
    def predicted_peak_mib(self) -> float:
        return self.predicted_peak_bytes / 2**20

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def count_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def default_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits, targets)


def make_optimizer(name: str, params: Any, lr: float = 1e-3) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    return torch.optim.SGD(params, lr=lr, momentum=0.9)


def _step_inputs(config: CostConfig, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.randn(config.batch, config.in_channels, config.tile, config.tile, device=device)
    targets = torch.rand(config.batch, config.classes, config.tile, config.tile, device=device)
    if config.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, targets


def _prepare(genome: Genome, config: CostConfig, device: torch.device | str) -> tuple[Any, Any]:
    model = build_model(genome, in_channels=config.in_channels, classes=config.classes)
    if torch.device(device).type != "cpu":  # built on the CPU already; .to() would break fake tensors
        model = model.to(device)
    if config.channels_last:
        # per parameter: Module.to(memory_format=...) cannot swap fake tensors
        for param in model.parameters():
            if param.dim() == 4:
                param.data = param.data.contiguous(memory_format=torch.channels_last)
    return model, make_optimizer(config.optimizer, model.parameters())


def estimate_cost(genome: Genome, config: CostConfig | None = None, loss_fn: LossFn = default_loss) -> CostReport:
    """Parameters, FLOPs and the predicted peak memory of one training step; runs on fake tensors."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.distributed._tools.mem_tracker import MemTracker
    from torch.utils.flop_counter import FlopCounterMode

    config = config or CostConfig()
    with FakeTensorMode(allow_non_fake_inputs=False):
        model, optimizer = _prepare(genome, config, "cpu")
        images, targets = _step_inputs(config, "cpu")
        train_step(model, optimizer, images, targets, loss_fn, config.amp_dtype)  # creates optimiser state

        with FlopCounterMode(display=False) as forward_counter, torch.no_grad():
            model(images)
        tracker = MemTracker()
        tracker.track_external(model, optimizer)
        with tracker, FlopCounterMode(display=False) as step_counter:
            train_step(model, optimizer, images, targets, loss_fn, config.amp_dtype)
        peak = tracker.get_tracker_snapshot("peak")[torch.device("cpu")]
    breakdown = {str(getattr(kind, "value", kind)).lower(): int(n) for kind, n in peak.items() if kind != "Total"}
    return CostReport(
        params=count_params(model),
        forward_flops=int(forward_counter.get_total_flops()),
        train_step_flops=int(step_counter.get_total_flops()),
        predicted_peak_bytes=int(peak["Total"]),
        memory_breakdown=breakdown,
    )


def measure_peak_cuda(
    genome: Genome, config: CostConfig | None = None, device: str = "cuda", loss_fn: LossFn = default_loss
) -> int:
    """Measured peak bytes allocated by a steady-state training step on a CUDA device.

    Counts what :func:`estimate_cost` predicts: weights, gradients, optimiser state, the batch and
    activations (``torch.cuda.max_memory_allocated`` after a warm-up step, from an empty device).
    """
    if not torch.cuda.is_available():
        raise RuntimeError("measure_peak_cuda needs a CUDA device")
    config = config or CostConfig()
    torch.cuda.empty_cache()
    baseline = torch.cuda.memory_allocated(device)
    model, optimizer = _prepare(genome, config, device)
    images, targets = _step_inputs(config, device)
    train_step(model, optimizer, images, targets, loss_fn, config.amp_dtype)
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    train_step(model, optimizer, images, targets, loss_fn, config.amp_dtype)
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - baseline
    del model, optimizer, images, targets
    torch.cuda.empty_cache()
    return int(peak)
