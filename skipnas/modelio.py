"""Model folders: everything needed to rebuild and use a trained model, and nothing executable.

A model folder holds ``genome.json`` (the topology), ``model.json`` (channels, classes, the
auxiliary head's target if the model has one, normalisation statistics, inference tiling, the
training config and summary), ``postprocess.json``
(the calibrated counting settings), ``metrics.json`` (validation metrics) and ``weights.pt`` (a
plain ``state_dict``). Loading uses ``torch.load(weights_only=True)``, so a model folder never
unpickles arbitrary objects. Folders are written to a temp folder and moved into place; in an
existing folder only the model folder's own files are replaced, never the user's other files.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from skipnas.auxiliary import check_auxiliary
from skipnas.counting.postprocess import (
    AUXILIARY_METHODS,
    PostprocessConfig,
    read_postprocess_config,
    write_postprocess_config,
)
from skipnas.data.rescale import check_scale
from skipnas.data.tiling import INFERENCE_TILE
from skipnas.errors import SkipnasError
from skipnas.fileio import install_files, staging_dir, write_json_atomic
from skipnas.genome import Genome, GenomeError
from skipnas.models import build_model
from skipnas.runtime.normalise import Normalisation
from skipnas.tta import TTAError, check_tta

MODEL_FORMAT_VERSION = 1
GENOME_FILE = "genome.json"
MODEL_FILE = "model.json"
POSTPROCESS_FILE = "postprocess.json"
METRICS_FILE = "metrics.json"
WEIGHTS_FILE = "weights.pt"
SUMMARY_FILE = "summary.json"  # written by skipnas export
ONNX_FILE = "model.onnx"  # written by skipnas onnx (skipnas.onnxio), optional
REQUIRED_FILES = (GENOME_FILE, MODEL_FILE, POSTPROCESS_FILE, WEIGHTS_FILE)
# every file skipnas writes into a model folder: the only ones it ever replaces or removes there
MODEL_FOLDER_FILES = (*REQUIRED_FILES, METRICS_FILE, ONNX_FILE, SUMMARY_FILE)


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


def check_model_target(out: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """``out`` as a path a model folder may be written to: new, empty, a model folder (whose own
    files are replaced), or with ``overwrite`` any folder without files of a model folder's names."""
    target = Path(out)
    if not target.exists():
        return target
    if not target.is_dir():
        raise SkipnasError(f"{target}: is a file, not a folder; choose another --out for the model folder")
    for name in MODEL_FOLDER_FILES:
        if (target / name).is_dir():
            raise SkipnasError(f"{target / name}: is a folder where the model folder's file goes; move it or choose another --out")
    scratch = f".{target.absolute().name}."
    # skipnas's own scratch folders (there when the parent is read-only) are not the user's files
    others = [p for p in target.iterdir() if not (p.name.startswith(scratch) and p.name.endswith((".tmp", ".old")))]
    if is_model_folder(target) or not others:
        return target
    if not overwrite:
        raise SkipnasError(
            f"{target}: holds files and is not a skipnas model folder; choose another --out, or add --overwrite to write "
            f"the model's files ({', '.join(MODEL_FOLDER_FILES[:-1])}) beside them (nothing else there is touched)"
        )
    clashes = [name for name in MODEL_FOLDER_FILES if os.path.lexists(target / name)]
    if clashes:
        raise SkipnasError(
            f"{target}: is not a skipnas model folder and holds {', '.join(clashes)}, not written by skipnas, which "
            "--overwrite never replaces; move them away or choose another --out"
        )
    return target


def install_model_folder(staging: Path, out: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Move the model folder written in ``staging`` to ``out`` (see :func:`check_model_target`).

    All or none of the files are moved; of the files already at ``out`` only those with a model
    folder's names are replaced, and those the new folder lacks (an old ``summary.json``) removed
    only where ``out`` was a model folder, that is skipnas wrote them.
    """
    target = check_model_target(out, overwrite)
    names = sorted(p.name for p in staging.iterdir())
    if not set(names) <= set(MODEL_FOLDER_FILES) or not all((staging / n).is_file() for n in names):
        raise ValueError(f"{staging}: holds more than a model folder's files: {', '.join(names)}")
    stale = [n for n in MODEL_FOLDER_FILES if n not in names] if target.is_dir() and is_model_folder(target) else []
    install_files(staging, target, names, stale)
    return target


def derive_model_folder(
    source: Path, out: str | os.PathLike[str], keep: Iterable[str], write: Callable[[Path], None], overwrite: bool = False
) -> Path:
    """A model folder at ``out`` made from ``source``: its files ``keep`` copied (those it has), and
    what ``write(staging)`` writes beside them; installed all at once (:func:`install_model_folder`)."""
    staging = staging_dir(Path(out))
    try:
        for name in keep:
            if (source / name).is_file():
                shutil.copy2(source / name, staging / name)
        write(staging)
        return install_model_folder(staging, out, overwrite)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # empty, or gone when it became the target


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
    overwrite: bool = False,
) -> Path:
    """Write a model folder at ``out`` atomically; an existing model folder's files there are replaced
    (``overwrite``: also into a folder of other files, see :func:`check_model_target`).

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
    target = check_model_target(out, overwrite)
    staging = staging_dir(target)
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
        install_model_folder(staging, target, overwrite)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # empty, or gone when it became the target
    return target


# a bound on a model's channels and classes, so a typo in model.json cannot make building the
# network allocate gigabytes; far above any microscope image's channels
MAX_CHANNELS = 1024


_COUNT_FIXES = {
    "in_channels": "set it to the channels of the images the model was trained on (1 grey, 3 RGB)",
    "classes": "set it to the classes the model was trained on (1: particles)",
}


def _check_count(info: dict[str, Any], key: str, model_json: Path) -> int:
    value = info[key]
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_CHANNELS:
        raise SkipnasError(f"{model_json}: {key} must be a whole number from 1 to {MAX_CHANNELS}, got {value!r}; {_COUNT_FIXES[key]}")
    return value


def check_inference_tile(tile: Any, depth: int, where: str) -> int:
    """A tile of whole px that is a positive multiple of ``2 ** depth``, the network's total pooling
    (a tile of 0 or 1 px once made counting predict 247,009 tiles per 512 px image)."""
    multiple = 2**depth
    if isinstance(tile, bool) or not isinstance(tile, int) or tile < multiple or tile % multiple:
        raise SkipnasError(
            f"{where} must be a whole number of px, a multiple of {multiple} (2 ** the network's depth {depth}), "
            f"got {tile!r}; set it to e.g. {max(INFERENCE_TILE // multiple, 1) * multiple}"
        )
    return tile


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
    for key in _COUNT_FIXES:
        _check_count(info, key, folder / MODEL_FILE)
    check_inference_tile(info.get("inference_tile", INFERENCE_TILE), genome.depth, f"{folder / MODEL_FILE}: inference_tile")
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
