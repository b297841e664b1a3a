"""Shared helpers of the dataset-folder tests (scan, validate, statistics): tiny images, masks and folders."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def _image(path: Path, size: tuple[int, int] = (32, 32), value: int = 100, channels: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = size if channels == 1 else (*size, channels)
    assert cv2.imwrite(str(path), np.full(shape, value, np.uint8))
    return path


def _mask(path: Path, size: tuple[int, int] = (32, 32), particles: int = 1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ids = np.zeros(size, np.uint16)
    for i in range(particles):
        ids[2 + 4 * i : 4 + 4 * i, 2:6] = i + 1
        ids[2 + 4 * i, 20] = i + 1  # a second piece of the same particle
    assert cv2.imwrite(str(path), ids)
    return path


def _pair(folder: Path, stem: str, particles: int = 1, **image_options: object) -> None:
    _image(folder / "images" / f"{stem}.png", **image_options)  # type: ignore[arg-type]
    suffix = ".tif" if stem.endswith("t") else ".png"  # stems ending in "t" get a TIFF mask
    _mask(folder / "masks" / f"{stem}{suffix}", particles=particles)


def _presplit(root: Path) -> Path:
    _pair(root / "train", "a-1", particles=2)
    _pair(root / "train", "a-2t", particles=3)  # mask stored as TIFF: suffixes may differ
    _pair(root / "val", "b-1", particles=1)
    _pair(root / "test", "c-1", particles=4)
    return root
