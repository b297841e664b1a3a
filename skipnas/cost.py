"""What a candidate costs before it is trained: parameters, FLOPs and predicted peak memory of a trial.

The prediction needs no GPU. A trial's memory peaks either in a training step or while it validates
with the training state still held, so both run on meta tensors (fake CPU tensors under autocast),
which carry shapes and dtypes but no data, while torch's ``FlopCounterMode`` counts FLOPs and a
dispatch mode follows every storage's lifetime to find the peak of live bytes:

- held throughout: the weights, buffers, the optimiser state (created first, as it exists in every
  step after the first) and the copy of the best weights a trial keeps;
- the training step: the trainer's own :func:`train_step` with the optimiser as configured (weight
  decay, momentum, and on CUDA the multi-tensor ``foreach`` path, whose temporaries are as large as
  the parameters);
- validation: the last step's gradients stay alive while :func:`~skipnas.predict.predict_batch`
  predicts one batch of validation tiles.

``predicted_peak_bytes`` is the larger of the two plus, on CUDA, :data:`CUDA_WORKSPACE_BYTES`.
:func:`measure_peak_cuda` runs both for real to compare.
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
from skipnas.predict import predict_batch
from skipnas.train.step import LossFn, make_optimizer, train_step

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
OPTIMIZERS = ("adam", "sgd")
DEVICE_TYPES = ("cuda", "cpu", "mps")
# What CUDA allocates beside the tensors, in the caching allocator (so max_memory_allocated sees it):
# cuBLAS's workspaces at PyTorch's default CUBLAS_WORKSPACE_CONFIG ":4096:2:16:8" (2 x 4 MiB +
# 8 x 16 KiB, PyTorch's reproducibility notes) and cuBLASLt's 32 MiB on Hopper (PyTorch's
# CUDABlas.cpp, NVIDIA's recommended size). Figures from the documentation, not yet measured here;
# cuDNN's convolution workspaces vary by algorithm and are left to bench_cost_model.py to measure.
# The CUDA context itself (a few hundred MiB) lives outside the allocator and outside the budget.
CUDA_WORKSPACE_BYTES = 2 * 4 * 2**20 + 8 * 16 * 2**10 + 32 * 2**20


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
    weight_decay: float = 0.0
    momentum: float = 0.9  # SGD only
    channels_last: bool = False
    instance_channel: bool = False
    # validation: full images predicted in tiles of val_tile px, val_batch at a time (TrainConfig's)
    val_tile: int = 512
    val_batch: int = 8
    device_type: str = "cuda"  # the budget is a GPU's: its optimiser path and workspaces

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise CostConfigError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.optimizer not in OPTIMIZERS:
            raise CostConfigError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if self.device_type not in DEVICE_TYPES:
            raise CostConfigError(f"device_type must be one of {', '.join(DEVICE_TYPES)}, got {self.device_type!r}")
        check_auxiliary(self.auxiliary)
        for name in ("tile", "batch", "in_channels", "classes", "val_tile", "val_batch"):
            if getattr(self, name) < 1:
                raise CostConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not self.weight_decay >= 0:
            raise CostConfigError(f"weight_decay must be 0 or more, got {self.weight_decay}")

    @property
    def foreach(self) -> bool:
        """Whether the optimiser takes torch's multi-tensor path, as it does by default on CUDA."""
        return self.device_type == "cuda"

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
    predicted_train_step_bytes: int
    predicted_validation_bytes: int
    predicted_peak_bytes: int  # the larger of the two, plus the device's workspaces
    # bytes held throughout (parameter, buffer, optstate, best_weights), each phase's own peak on top
    # of them (step: batch, activations, gradients, temporaries; validation: the last gradients, a
    # batch of tiles and its activations) and the device's workspaces
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
    optimizer = make_optimizer(
        config.optimizer, model.parameters(), weight_decay=config.weight_decay, momentum=config.momentum, foreach=config.foreach
    )
    return model, optimizer


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


def estimate_cost(
    genome: Genome, config: CostConfig | None = None, loss_fn: LossFn = default_loss, *, tensors: str = "fake"
) -> CostReport:
    """Parameters, FLOPs and the predicted peak memory of a trial: its training step and its
    validation. Runs on fake tensors; ``tensors="cpu"`` runs the same trace on real CPU tensors
    (slow: what the benchmark checks the fake trace against)."""
    config = config or CostConfig()
    if tensors not in ("fake", "cpu"):
        raise CostConfigError(f"tensors must be 'fake' or 'cpu', got {tensors!r}")
    for name in ("tile", "val_tile"):
        if getattr(config, name) < 2**genome.depth:
            raise CostConfigError(
                f"{name} {getattr(config, name)} px is below 2**depth = {2**genome.depth} px, which a depth-{genome.depth} U-Net needs"
            )
    if config.batch == 1 and config.tile // 2**genome.depth == 1:
        raise CostConfigError(
            f"a batch of 1 tile of {config.tile} px leaves one value per channel at the depth-{genome.depth} bottleneck, "
            f"where BatchNorm cannot train; use a batch of 2 or more, or a tile of {2 * 2**genome.depth} px or more"
        )
    # meta tensors are the cheapest shape-only tensors, but autocast cannot run on them: with an
    # autocast dtype the step runs on fake CPU tensors under CPU autocast instead
    context: Any = torch.device("meta") if config.amp_dtype is None else FakeTensorMode(allow_non_fake_inputs=False)
    with context if tensors == "fake" else torch.device("cpu"):
        model, optimizer = _prepare(genome, config, None)
        _create_optimizer_state(model, optimizer)
        best_weights = {name: tensor.clone() for name, tensor in model.state_dict().items()}
        resident = {
            "parameter": model.parameters(),
            "buffer": model.buffers(),
            "optstate": (t for state in optimizer.state.values() for t in state.values() if isinstance(t, torch.Tensor)),
            "best_weights": best_weights.values(),
        }
        tracker = _LiveBytes()
        breakdown = {}
        for kind, tensors in resident.items():
            before = tracker.live
            for tensor in tensors:
                tracker.track(tensor)
            breakdown[kind] = tracker.live - before
        held = tracker.live
        images, targets = _step_inputs(config, None)
        with FlopCounterMode(display=False) as forward_counter, torch.no_grad():
            model(images)
        with tracker, FlopCounterMode(display=False) as step_counter:
            for tensor in (images, targets):
                tracker.track(tensor)
            train_step(model, optimizer, images, targets, loss_fn, config.amp_dtype)
        train_peak = tracker.peak
        del images, targets  # validation follows a step: its gradients stay, its batch is gone
        tracker.peak = tracker.live
        model.eval()
        tiles = torch.randn(config.val_batch, config.in_channels, config.val_tile, config.val_tile)
        with tracker:
            tracker.track(tiles)
            predict_batch(model, tiles, config.amp_dtype, config.channels_last)
        validation_peak = tracker.peak
    breakdown["step"] = train_peak - held
    breakdown["validation"] = validation_peak - held
    breakdown["workspace"] = CUDA_WORKSPACE_BYTES if config.device_type == "cuda" else 0
    return CostReport(
        params=count_params(model),
        forward_flops=int(forward_counter.get_total_flops()),
        train_step_flops=int(step_counter.get_total_flops()),
        predicted_train_step_bytes=int(train_peak),
        predicted_validation_bytes=int(validation_peak),
        predicted_peak_bytes=int(max(train_peak, validation_peak) + breakdown["workspace"]),
        memory_breakdown=breakdown,
    )


@dataclass(frozen=True)
class MeasuredPeaks:
    """Peak bytes a CUDA device allocated in a training step and in validation, each above what
    was allocated before the model existed."""

    train_step_bytes: int
    validation_bytes: int


def measure_peak_cuda(
    genome: Genome, config: CostConfig | None = None, device: str = "cuda", loss_fn: LossFn = default_loss
) -> MeasuredPeaks:
    """Measured peaks of what :func:`estimate_cost` predicts, on a CUDA device: a steady-state
    training step (after a warm-up step) and one validation batch after it, with the weights,
    optimiser state and a copy of the weights held (``torch.cuda.max_memory_allocated``)."""
    if not torch.cuda.is_available():
        raise RuntimeError("measure_peak_cuda needs a CUDA device")
    config = config or CostConfig(device_type="cuda")
    torch.cuda.empty_cache()
    baseline = torch.cuda.memory_allocated(device)
    model, optimizer = _prepare(genome, config, device)
    best_weights = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    images, targets = _step_inputs(config, device)
    train_step(model, optimizer, images, targets, loss_fn, config.amp_dtype)
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    train_step(model, optimizer, images, targets, loss_fn, config.amp_dtype)
    torch.cuda.synchronize(device)
    train_peak = torch.cuda.max_memory_allocated(device) - baseline
    del images, targets
    torch.cuda.reset_peak_memory_stats(device)
    model.eval()
    tiles = torch.randn(config.val_batch, config.in_channels, config.val_tile, config.val_tile, device=device)
    predict_batch(model, tiles, config.amp_dtype, config.channels_last)
    torch.cuda.synchronize(device)
    validation_peak = torch.cuda.max_memory_allocated(device) - baseline
    del model, optimizer, best_weights, tiles
    torch.cuda.empty_cache()
    return MeasuredPeaks(int(train_peak), int(validation_peak))
