"""Model folders: everything needed to rebuild and use a trained model, and nothing executable.

A model folder holds ``genome.json`` (the topology), ``model.json`` (channels, classes, the
auxiliary head's target if the model has one, normalisation statistics, inference tiling, the
training config and summary), ``postprocess.json``
(the calibrated counting settings), ``metrics.json`` (validation metrics) and ``weights.pt`` (a
plain ``state_dict``). Loading uses ``torch.load(weights_only=True)``, so a model folder never
unpickles arbitrary objects. Folders are written to a temp folder and renamed into place.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from skipnas.counting.postprocess import (
    AUXILIARY_METHODS,
    PostprocessConfig,
    read_postprocess_config,
    write_postprocess_config,
)
from skipnas.auxiliary import check_auxiliary
from skipnas.data.rescale import check_scale
from skipnas.data.tiling import INFERENCE_TILE
from skipnas.errors import SkipnasError
from skipnas.fileio import write_json_atomic
from skipnas.genome import Genome, GenomeError
from skipnas.models import build_model
from skipnas.train.data import Normalisation
from skipnas.tta import TTAError, check_tta

MODEL_FORMAT_VERSION = 1
GENOME_FILE = "genome.json"
MODEL_FILE = "model.json"
POSTPROCESS_FILE = "postprocess.json"
METRICS_FILE = "metrics.json"
WEIGHTS_FILE = "weights.pt"
REQUIRED_FILES = (GENOME_FILE, MODEL_FILE, POSTPROCESS_FILE, WEIGHTS_FILE)


@dataclass
class ModelFolder:
    """A loaded model folder: the network in eval mode and what it needs around it."""

    path: Path
    model: nn.Module
    genome: Genome
    normalisation: Normalisation
    postprocess: PostprocessConfig
    info: dict[str, Any]
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def in_channels(self) -> int:
        return int(self.info["in_channels"])

    @property
    def class_names(self) -> list[str]:
        return list(self.info.get("class_names") or ["particle"])

    @property
    def tile(self) -> int:
        return int(self.info.get("inference_tile", INFERENCE_TILE))

    @property
    def scale(self) -> float:
        """The input scale the model was trained at (1 in older folders); checked when the folder is loaded."""
        return float(self.info.get("input_scale", 1.0))

    @property
    def tta(self) -> str:
        """The test-time augmentation the counting was calibrated with (``"none"`` in older folders)."""
        return str(self.info.get("inference_tta", "none"))

    def tta_for(self, requested: str | None) -> str:
        """The test-time augmentation to predict with: ``requested``, or the folder's own when None."""
        return self.tta if requested is None else check_tta(requested)

    @property
    def auxiliary(self) -> str | None:
        """The auxiliary head's target (``"distance"``), or None for a model without one."""
        return self.info.get("auxiliary")


def is_model_folder(path: Path) -> bool:
    return all((path / name).is_file() for name in (GENOME_FILE, WEIGHTS_FILE))


def check_model_target(out: str | os.PathLike[str]) -> Path:
    """``out`` as a path a model folder may be written to: new, empty, or a model folder to replace."""
    target = Path(out)
    if target.exists() and (not target.is_dir() or (any(target.iterdir()) and not is_model_folder(target))):
        raise SkipnasError(f"{target}: exists and is not a skipnas model folder; choose another --out or remove it")
    return target


def save_model_folder(
    out: str | os.PathLike[str],
    model: nn.Module,
    genome: Genome,
    normalisation: Normalisation,
    postprocess: PostprocessConfig,
    *,
    in_channels: int,
    classes: int = 1,
    class_names: list[str] | None = None,
    inference_tile: int = INFERENCE_TILE,
    inference_tta: str = "none",
    input_scale: float = 1.0,
    train_config: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    calibration: dict[str, Any] | None = None,
    data_choices: list[str] | None = None,
) -> Path:
    """Write a model folder at ``out`` atomically; an existing model folder there is replaced.

    The auxiliary head, if any, is the model's own (``model.auxiliary``), so the folder always
    describes the weights it holds. ``inference_tta`` is the test-time augmentation the counting
    was calibrated with, so counting predicts the same way; ``input_scale`` the scale images are
    resized by before the network. ``calibration`` (why the counting setting was chosen) goes into
    ``postprocess.json``, ``data_choices`` (the settings chosen from the data, in words) into ``model.json``.
    """
    check_tta(inference_tta)
    auxiliary = getattr(model, "auxiliary", None)
    if postprocess.method in AUXILIARY_METHODS and auxiliary is None:
        raise ValueError(f"post-processing method {postprocess.method!r} needs an auxiliary head, and this model has none")
    target = check_model_target(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        torch.save(state, staging / WEIGHTS_FILE)
        write_json_atomic(staging / GENOME_FILE, genome.to_dict())
        info = {
            "format_version": MODEL_FORMAT_VERSION,
            "in_channels": in_channels,
            "classes": classes,
            "auxiliary": auxiliary,
            "class_names": class_names or (["particle"] if classes == 1 else [f"class{i}" for i in range(classes)]),
            "normalisation": normalisation.to_dict(),
            "inference_tile": inference_tile,
            "inference_tta": inference_tta,
            "input_scale": input_scale,
            "data_choices": data_choices or [],
            "train_config": train_config or {},
            "training": training or {},
        }
        write_json_atomic(staging / MODEL_FILE, info)
        write_postprocess_config(staging / POSTPROCESS_FILE, postprocess, calibration)
        write_json_atomic(staging / METRICS_FILE, metrics or {})
        swap_into_place(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def swap_into_place(staging: Path, target: Path) -> None:
    """Rename ``staging`` to ``target``; an old ``target`` is moved aside first and removed after."""
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
        os.rmdir(old)
        os.replace(target, old)
    try:
        os.replace(staging, target)
    except BaseException:
        if old is not None:
            os.replace(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SkipnasError(f"{path}: missing; a model folder needs {', '.join(REQUIRED_FILES)}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SkipnasError(f"{path}: unreadable ({exc.__class__.__name__}); re-export the model folder") from None


def load_state_dict(path: Path, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """A plain ``state_dict`` (names -> tensors), refusing anything that would need unpickling code."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise SkipnasError(f"{path}: missing; a model folder needs {', '.join(REQUIRED_FILES)}") from None
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError or others for foreign files
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
        raise SkipnasError(
            f"{path}: not a plain state dict of tensors (refused to load: {first_line[:120]}); "
            "save the weights with torch.save(model.state_dict(), ...)"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise SkipnasError(
            f"{path}: not a plain state dict of tensors; save the weights with torch.save(model.state_dict(), ...)"
        )
    return state


def load_model_folder(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> ModelFolder:
    """Rebuild the model of a folder from the folder alone, in eval mode on ``map_location``."""
    folder = Path(path)
    if not folder.is_dir():
        raise SkipnasError(f"{folder}: no such model folder; give the folder written by skipnas train or export")
    try:
        genome = Genome.from_dict(_read_json(folder / GENOME_FILE))
    except GenomeError as exc:
        raise SkipnasError(f"{folder / GENOME_FILE}: {exc}") from None
    info = _read_json(folder / MODEL_FILE)
    required = ("in_channels", "classes", "normalisation")
    if not isinstance(info, dict) or info.get("format_version") != MODEL_FORMAT_VERSION or any(k not in info for k in required):
        raise SkipnasError(
            f"{folder / MODEL_FILE}: not a version-{MODEL_FORMAT_VERSION} skipnas model description "
            f"(needs {', '.join(required)}); re-export the model folder"
        )
    # older folders have no key: no head; an unknown one needs a newer skipnas
    auxiliary = check_auxiliary(info.get("auxiliary"), str(folder / MODEL_FILE))
    try:
        check_tta(info.get("inference_tta", "none"))
    except TTAError as exc:
        raise SkipnasError(f"{folder / MODEL_FILE}: {exc}") from None
    check_scale(info.get("input_scale", 1.0), f"{folder / MODEL_FILE}: input_scale")
    postprocess = read_postprocess_config(folder / POSTPROCESS_FILE)
    if postprocess.method in AUXILIARY_METHODS and auxiliary is None:
        raise SkipnasError(
            f"{folder / POSTPROCESS_FILE}: method {postprocess.method!r} counts from an auxiliary head, but the model "
            f"in {MODEL_FILE} has none; choose another method there or retrain with --auxiliary distance"
        )
    metrics = _read_json(folder / METRICS_FILE) if (folder / METRICS_FILE).exists() else {}
    state = load_state_dict(folder / WEIGHTS_FILE, map_location)
    model = build_model(genome, in_channels=int(info["in_channels"]), classes=int(info["classes"]), auxiliary=auxiliary)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise SkipnasError(
            f"{folder / WEIGHTS_FILE}: weights do not fit the genome in {GENOME_FILE} and the heads in {MODEL_FILE} "
            f"({str(exc).splitlines()[0][:120]}); keep the folder's files together"
        ) from None
    model.to(map_location).eval()
    try:
        normalisation = Normalisation.from_dict(info["normalisation"])
    except (KeyError, TypeError, ValueError):
        raise SkipnasError(f"{folder / MODEL_FILE}: normalisation needs mean, std and max_pixel_value") from None
    return ModelFolder(folder, model, genome, normalisation, postprocess, info, metrics)
