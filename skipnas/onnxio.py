"""ONNX: a model folder's network as ``model.onnx`` beside its weights, and counting with onnxruntime.

:func:`write_onnx` exports the folder's network (inputs of any batch, height and width) with
torch's exporter, checks onnxruntime's output against PyTorch's on random inputs and writes the
file atomically. The file records the SHA-256 of the ``weights.pt`` it was made from, so a folder
whose weights changed afterwards is refused until it is exported again. :class:`OnnxNetwork` runs it
in place of the PyTorch module (the same tiling, normalisation, scale and counting); it pads every
input to a multiple of ``2 ** depth`` and crops the output, so the traced graph never meets the
decoder's shape-dependent padding. Needs the optional ``onnx`` and ``onnxruntime`` packages
(``pip install "skipnas[onnx]"``).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from skipnas.errors import SkipnasError
from skipnas.fileio import atomic_path
from skipnas.modelio import ONNX_FILE, WEIGHTS_FILE, ModelFolder, load_model_folder

WEIGHTS_KEY = "skipnas_weights_sha256"
TOLERANCE = 1e-4  # the largest difference from PyTorch's logits the export accepts
OPSET = 17


def _onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise SkipnasError('ONNX needs onnx and onnxruntime: pip install "skipnas[onnx]"') from None
    return onnxruntime


def weights_digest(folder: Path) -> str:
    return hashlib.sha256((folder / WEIGHTS_FILE).read_bytes()).hexdigest()


def _session(path: Path) -> Any:
    options = _onnxruntime().SessionOptions()
    options.log_severity_level = 3  # errors only
    return _onnxruntime().InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_difference(model: nn.Module, session: Any, shapes: Sequence[tuple[int, ...]], seed: int = 0) -> float:
    """The largest absolute difference between the model's and the session's logits on random inputs of ``shapes``."""
    generator = torch.Generator().manual_seed(seed)
    largest = 0.0
    for shape in shapes:
        x = torch.randn(*shape, generator=generator)
        with torch.no_grad():
            expected = model(x).numpy()
        got = session.run(None, {"image": x.numpy()})[0]
        if got.shape != expected.shape:
            return float("inf")
        largest = max(largest, float(np.abs(got - expected).max()))
    return largest


def write_onnx(model_dir: str | os.PathLike[str]) -> Path:
    """Export the folder's network to ``MODEL_DIR/model.onnx`` (dynamic batch, height and width),
    checked against PyTorch within :data:`TOLERANCE` at three sizes; returns the file's path."""
    import onnx

    folder = load_model_folder(model_dir)
    model = folder.model.cpu().eval()
    step = 2**folder.genome.depth
    example = torch.zeros(1, folder.in_channels, 4 * step, 6 * step)
    axes = {0: "batch", 2: "height", 3: "width"}
    target = folder.path / ONNX_FILE
    with atomic_path(target) as tmp:
        with warnings.catch_warnings():
            # the tracer warns about the decoder's padding branch, which padded inputs never take
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model, (example,), str(tmp), input_names=["image"], output_names=["logits"],
                dynamic_axes={"image": axes, "logits": axes}, opset_version=OPSET, dynamo=False,
            )
        graph = onnx.load(str(tmp))
        graph.metadata_props.add(key=WEIGHTS_KEY, value=weights_digest(folder.path))
        onnx.save(graph, str(tmp))
        shapes = [(1, folder.in_channels, 2 * step, 2 * step), (2, folder.in_channels, 5 * step, 3 * step), (1, folder.in_channels, 8 * step, 8 * step)]
        difference = onnx_difference(model, _session(Path(tmp)), shapes)
        if not difference <= TOLERANCE:
            raise SkipnasError(
                f"{target}: onnxruntime's output differs from PyTorch's by {difference:.2g} (more than {TOLERANCE:g}); "
                "the network has an operation ONNX does not export faithfully, count with the PyTorch engine"
            )
    return target


class OnnxNetwork(nn.Module):
    """A model folder's ``model.onnx`` behind the PyTorch module's interface: logits of (N, C, H, W)
    inputs on the inputs' device, inputs padded to a multiple of ``2 ** depth`` and the output cropped back."""

    def __init__(self, folder: ModelFolder) -> None:
        super().__init__()
        path = folder.path / ONNX_FILE
        if not path.is_file():
            raise SkipnasError(f"{path}: missing; write it with skipnas onnx {folder.path}")
        self.session = _session(path)
        stored = self.session.get_modelmeta().custom_metadata_map  # the file is read once, by the session
        if stored.get(WEIGHTS_KEY) != weights_digest(folder.path):
            raise SkipnasError(f"{path}: made from other weights than {folder.path / WEIGHTS_FILE}; write it again with skipnas onnx {folder.path}")
        self.auxiliary = folder.auxiliary
        self.multiple = 2**folder.genome.depth
        self.min_input_size = self.multiple

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        pad_h, pad_w = -height % self.multiple, -width % self.multiple
        batch = x.detach().float().cpu()
        if pad_h or pad_w:
            batch = nn.functional.pad(batch, (0, pad_w, 0, pad_h), mode="reflect" if min(height, width) > max(pad_h, pad_w) else "replicate")
        logits = self.session.run(None, {"image": np.ascontiguousarray(batch.numpy())})[0]
        return torch.from_numpy(logits[..., :height, :width]).to(x.device)


__all__: Sequence[str] = ("OnnxNetwork", "TOLERANCE", "onnx_difference", "write_onnx")
