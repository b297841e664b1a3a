"""Tiled inference: full images of any size in, stitched per-pixel probabilities out.

A model with an auxiliary head has one more sigmoid channel after its classes; it is stitched like
the others and :func:`split_channels` takes it apart from the class maps.

Test-time augmentation (``tta``) predicts every tile in several mirrored views and averages the
probabilities, mapped back: ``"flips"`` (4 views: as is, flipped left-right, up-down, both) or
``"dihedral"`` (8: those and their transposes, i.e. every 90 degree rotation and mirror). A
microscope image has no up or left, so the views are equally likely images of the same particles;
it costs one forward pass per view.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from skipnas.data.loading import LabeledImage
from skipnas.data.rescale import resize_image, scaled_shape
from skipnas.data.tiling import INFERENCE_OVERLAP, INFERENCE_TILE, predict_tiled
from skipnas.runtime.device import DeviceSetup, autocast_context
from skipnas.runtime.normalise import Normalisation, prepare_image
from skipnas.tta import tta_views


def _to_view(batch: torch.Tensor, transpose: bool, dims: tuple[int, ...]) -> torch.Tensor:
    batch = batch.transpose(2, 3) if transpose else batch
    return batch.flip(dims) if dims else batch


def _from_view(batch: torch.Tensor, transpose: bool, dims: tuple[int, ...]) -> torch.Tensor:
    batch = batch.flip(dims) if dims else batch  # flips undo themselves; undo them before the transpose
    return batch.transpose(2, 3) if transpose else batch


@torch.no_grad()
def predict_batch(
    model: nn.Module, batch: torch.Tensor, amp_dtype: torch.dtype | None, channels_last: bool, tta: str = "none"
) -> torch.Tensor:
    """Sigmoid probabilities of one batch of tiles on the model's device, averaged over the views
    of ``tta``. The cost model runs it too, to predict validation's memory."""
    views = tta_views(tta)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    probs = None
    for transpose, dims in views:
        view = _to_view(batch, transpose, dims).contiguous(memory_format=memory_format)
        with autocast_context(batch.device.type, amp_dtype):
            logits = model(view)
        # the tiler blends probabilities across overlaps; torch's sigmoid never overflows
        view_probs = _from_view(torch.sigmoid(logits.float()), transpose, dims)
        probs = view_probs if probs is None else probs + view_probs
    assert probs is not None  # every mode has at least one view
    return probs / len(views)


@torch.no_grad()
def predict_probabilities(
    model: nn.Module,
    image_chw: np.ndarray,
    setup: DeviceSetup,
    tile: int = INFERENCE_TILE,
    overlap: int = INFERENCE_OVERLAP,
    batch_size: int = 8,
    progress: bool = False,
    tta: str = "none",
    scale: float = 1.0,
) -> np.ndarray:
    """(K, H, W) sigmoid probabilities of a normalised (C, H, W) image, predicted tile by tile
    (each tile in every view of ``tta``, averaged). With ``scale`` the network sees the image
    resized by it, and the maps are at that size: counting works there, in the pixels the counting
    settings were calibrated in, and gives the particles back at the image's size.

    Memory stays at the output plus one batch of tiles, whatever the image size.
    """
    if scale != 1.0:
        small = resize_image(np.ascontiguousarray(image_chw.transpose(1, 2, 0)), scaled_shape(*image_chw.shape[1:], scale))
        image_chw = np.ascontiguousarray(small.transpose(2, 0, 1))
    was_training = model.training
    model.eval()

    def predict(batch: np.ndarray) -> np.ndarray:
        tensor = torch.from_numpy(batch).to(setup.device)
        return predict_batch(model, tensor, setup.amp_dtype, setup.channels_last, tta).cpu().numpy()

    # an image smaller than the tile is predicted whole rather than padded up to the tile, but a
    # tile never shrinks below what the network's poolings need (the tiler pads up to it)
    tile = max(min(tile, max(image_chw.shape[1:])), getattr(model, "min_input_size", 1))
    try:
        probs = predict_tiled(predict, image_chw, tile, min(overlap, tile - 1), batch_size, progress)
    finally:
        model.train(was_training)
    return probs


@dataclass(frozen=True)
class Prediction:
    """One image's stitched sigmoid maps: ``classes`` (K, H, W) and, from a model with an auxiliary
    head, ``auxiliary`` (H, W) in [0, 1]."""

    classes: np.ndarray
    auxiliary: np.ndarray | None = None

    @property
    def foreground(self) -> np.ndarray:
        """The first class's probability map (H, W): the particles of a one-class model."""
        return self.classes[0]


def auxiliary_maps(predictions: Sequence[Prediction]) -> list[np.ndarray] | None:
    """The predictions' auxiliary maps, or None when the model has no auxiliary head."""
    maps = [p.auxiliary for p in predictions]
    if not maps or any(m is None for m in maps):
        return None
    return maps  # type: ignore[return-value]


def split_channels(model: nn.Module, probs: np.ndarray) -> Prediction:
    """Class maps and the auxiliary map of ``model``'s (K [+ 1], H, W) output."""
    if getattr(model, "auxiliary", None) is None:
        return Prediction(probs)
    return Prediction(probs[:-1], probs[-1])


def predict_image(
    model: nn.Module,
    image_chw: np.ndarray,
    setup: DeviceSetup,
    tile: int = INFERENCE_TILE,
    overlap: int = INFERENCE_OVERLAP,
    batch_size: int = 8,
    progress: bool = False,
    tta: str = "none",
    scale: float = 1.0,
) -> Prediction:
    """:func:`predict_probabilities` split into the class maps and the auxiliary map."""
    probs = predict_probabilities(model, image_chw, setup, tile, overlap, batch_size, progress, tta, scale)
    return split_channels(model, probs)


def predict_images(
    model: nn.Module,
    images: Sequence[LabeledImage],
    normalisation: Normalisation,
    setup: DeviceSetup,
    tile: int = INFERENCE_TILE,
    overlap: int = INFERENCE_OVERLAP,
    tta: str = "none",
    scale: float = 1.0,
    batch_size: int = 8,
) -> list[Prediction]:
    """The predictions of full labelled images, at the input ``scale`` (see :func:`predict_probabilities`)."""
    return [
        predict_image(model, prepare_image(item.image, normalisation), setup, tile, overlap, batch_size, tta=tta, scale=scale)
        for item in images
    ]
