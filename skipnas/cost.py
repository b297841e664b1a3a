"""What a candidate costs before it is trained: parameters, FLOPs and predicted peak training memory.

The prediction needs no GPU: one training step (the trainer's own :func:`train_step`) runs on meta
tensors (fake CPU tensors under autocast), which carry shapes and dtypes but no data, while torch's
``FlopCounterMode`` counts FLOPs and a dispatch mode follows every storage's lifetime to find the
peak of live bytes. The optimiser state is created first, as it exists in every step after the first.
On CUDA, :func:`measure_peak_cuda` runs the same step for real to compare.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
import weakref
from typing import Any

import torch
import torch.nn.functional as F
import torch.utils._pytree as pytree

# imported with the module, not inside a trial: loading them takes seconds the first time
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from skipnas.auxiliary import check_auxiliary
from skipnas.errors import SkipnasError
from skipnas.genome import Genome
from skipnas.models import build_model
from skipnas.train.step import LossFn, train_step

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
OPTIMIZERS = ("adam", "sgd")


class CostConfigError(SkipnasError, ValueError):
    """A training-step shape the cost model cannot use."""


@dataclass(frozen=True)
class CostConfig:
    """The shape of one training step: tile size, batch, precision, optimiser, the auxiliary head
    (its target name) when the trained model has one, and whether the targets carry the instance
    IDs (a loss with a per-particle term)."""

    tile: int = 64
    batch: int = 8
    in_channels: int = 1
    classes: int = 1
    auxiliary: str | None = None
    dtype: str = "float32"  # autocast dtype of the forward pass; weights stay fp32
    optimizer: str = "adam"
    channels_last: bool = False
    instance_channel: bool = False

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise CostConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.optimizer not in OPTIMIZERS:
            raise CostConfigError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        check_auxiliary(self.auxiliary)
        for name in ("tile", "batch", "in_channels", "classes"):
            if getattr(self, name) < 1:
                raise CostConfigError(f"{name} must be at least 1, got {getattr(self, name)}")

    @property
    def amp_dtype(self) -> torch.dtype | None:
        return None if self.dtype == "float32" else DTYPES[self.dtype]

    @property
    def out_channels(self) -> int:
        """Logit (and target) channels: the classes, and the auxiliary map."""
        return self.classes + (self.auxiliary is not None)

    @property
    def target_channels(self) -> int:
        """Target channels: the logits', and the instance IDs when the loss needs them."""
        return self.out_channels + self.instance_channel


@dataclass(frozen=True)
class CostReport:
    params: int
    forward_flops: int
    train_step_flops: int  # forward + backward of one batch
    predicted_peak_bytes: int
    # bytes held for the whole step (parameter, buffer, optstate) and the step's own peak on top of them
    # (batch, activations, gradients, temporaries)
    memory_breakdown: dict[str, int] = field(default_factory=dict)

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


def _step_inputs(config: CostConfig, device: torch.device | str | None) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.randn(config.batch, config.in_channels, config.tile, config.tile, device=device)
    targets = torch.rand(config.batch, config.target_channels, config.tile, config.tile, device=device)
    if config.instance_channel:  # a few particle IDs per tile, like a real instance mask
        targets[:, -1] = torch.randint(0, 8, (config.batch, config.tile, config.tile), device=device)
    if config.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, targets


def _prepare(genome: Genome, config: CostConfig, device: torch.device | str | None) -> tuple[Any, Any]:
    """Model and optimiser on ``device``; ``None`` builds on the current default device (meta, fake)."""
    model = build_model(genome, in_channels=config.in_channels, classes=config.classes, auxiliary=config.auxiliary)
    if device is not None:
        model = model.to(device)
    if config.channels_last:
        # per parameter: Module.to(memory_format=...) cannot swap fake tensors
        for param in model.parameters():
            if param.dim() == 4:
                param.data = param.data.contiguous(memory_format=torch.channels_last)
    return model, make_optimizer(config.optimizer, model.parameters())


class _LiveBytes(TorchDispatchMode):
    """Follows the bytes of every live tensor storage, rounded to the CUDA allocator's 512-byte blocks.

    Each storage is counted once, when an op first returns a view of it, and released when the
    storage dies (storages keep their Python object alive as long as the storage lives, so a
    weak reference fires exactly then). ``peak`` is the most bytes alive at once.
    """

    BLOCK = 512

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._refs: dict[int, weakref.ref] = {}

    def track(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key = id(storage)
        if key in self._refs:
            return
        size = -(-storage.nbytes() // self.BLOCK) * self.BLOCK

        def release(_ref: weakref.ref, key: int = key, size: int = size) -> None:
            if self._refs.pop(key, None) is not None:
                self.live -= size

        self._refs[key] = weakref.ref(storage, release)
        self.live += size
        self.peak = max(self.peak, self.live)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for leaf in pytree.tree_leaves(out):
            if isinstance(leaf, torch.Tensor):
                self.track(leaf)
        return out


def _create_optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Make the optimiser allocate its state (Adam's moments, SGD's momentum) without a training step."""
    for param in model.parameters():
        param.grad = torch.zeros_like(param)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def estimate_cost(genome: Genome, config: CostConfig | None = None, loss_fn: LossFn = default_loss) -> CostReport:
    """Parameters, FLOPs and the predicted peak memory of one training step; runs on fake tensors."""
    config = config or CostConfig()
    if config.tile < 2**genome.depth:
        raise CostConfigError(f"tile {config.tile} px is below 2**depth = {2**genome.depth} px, which a depth-{genome.depth} U-Net needs")
    # meta tensors are the cheapest shape-only tensors, but autocast cannot run on them: with an
    # autocast dtype the step runs on fake CPU tensors under CPU autocast instead
    context = torch.device("meta") if config.amp_dtype is None else FakeTensorMode(allow_non_fake_inputs=False)
    with context:
        model, optimizer = _prepare(genome, config, None)
        _create_optimizer_state(model, optimizer)
        resident = {
            "parameter": model.parameters(),
            "buffer": model.buffers(),
            "optstate": (t for state in optimizer.state.values() for t in state.values() if isinstance(t, torch.Tensor)),
        }
        tracker = _LiveBytes()
        breakdown = {}
        for kind, tensors in resident.items():
            before = tracker.live
            for tensor in tensors:
                tracker.track(tensor)
            breakdown[kind] = tracker.live - before
        images, targets = _step_inputs(config, None)
        with FlopCounterMode(display=False) as forward_counter, torch.no_grad():
            model(images)
        with tracker, FlopCounterMode(display=False) as step_counter:
            for tensor in (images, targets):
                tracker.track(tensor)
            train_step(model, optimizer, images, targets, loss_fn, config.amp_dtype)
    breakdown["step"] = tracker.peak - sum(breakdown.values())  # batch, activations, gradients, temporaries
    return CostReport(
        params=count_params(model),
        forward_flops=int(forward_counter.get_total_flops()),
        train_step_flops=int(step_counter.get_total_flops()),
        predicted_peak_bytes=int(tracker.peak),
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
