from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from skipnas.data.io import read_image, read_mask, write_image, write_mask
from skipnas.data.synth import SynthConfig
from skipnas.data.synth_folder import SYNTH_MARKER, write_synthetic_dataset
from skipnas.errors import SkipnasError


def _write_dataset(root: Path, level: int = 200, count: int = 2, split: str | None = None) -> None:
    """``count`` dark noisy 64 px images, each with two particles at ``level``."""
    folder = root / split if split else root
    for index in range(count):
        rng = np.random.default_rng(index)
        image = np.clip(rng.normal(50, 3, (64, 64)), 0, 255).astype(np.uint8)
        instances = np.zeros((64, 64), np.int32)
        instances[10:20, 10:20] = 1
        instances[40:46, 20:44] = 2
        image[instances > 0] = level
        write_image(folder / "images" / f"img{index}-a.tif", image)
        write_mask(folder / "masks" / f"img{index}-a.tif", instances)


def test_write_synthetic_dataset_writes_pairs_and_reruns_in_place(tmp_path: Path) -> None:
    source, out = tmp_path / "source", tmp_path / "out"
    _write_dataset(source, count=3)
    write_synthetic_dataset(source, out, 3, seed=1, progress=False)
    stems = sorted(p.stem for p in (out / "images").glob("*.tif"))
    assert stems == sorted(p.stem for p in (out / "masks").glob("*.tif"))
    assert len(stems) == 3
    for stem in stems:
        image = read_image(out / "images" / f"{stem}.tif")
        mask = read_mask(out / "masks" / f"{stem}.tif")
        assert image.dtype == np.uint8 and mask.instances.shape == image.shape
        assert mask.count >= 1
    assert (out / SYNTH_MARKER).is_file()
    # an earlier synth output may be rewritten; pairs from the longer run do not linger
    write_synthetic_dataset(source, out, 2, seed=1, progress=False)
    assert len(list((out / "images").glob("*.tif"))) == 2
    assert len(list((out / "masks").glob("*.tif"))) == 2


def test_write_synthetic_dataset_uses_only_the_train_split(tmp_path: Path) -> None:
    source, out = tmp_path / "source", tmp_path / "out"
    _write_dataset(source, level=200, split="train")
    _write_dataset(source, level=100, split="val")
    config = SynthConfig(particles_per_image=(6, 6), rotate=False, scale_range=(1, 1), feather=0)
    write_synthetic_dataset(source, out, 4, config=config, progress=False)
    for path in (out / "images").glob("*.tif"):
        image = read_image(path)
        instances = read_mask(out / "masks" / path.name).instances
        assert np.all(image[instances > 0] == 200)  # no val particle was pasted


def test_write_synthetic_dataset_refuses_a_foreign_folder(tmp_path: Path) -> None:
    source, out = tmp_path / "source", tmp_path / "out"
    _write_dataset(source)
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(SkipnasError, match="not empty"):
        write_synthetic_dataset(source, out, 2, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_write_synthetic_dataset_refuses_a_dataset_without_masks(tmp_path: Path) -> None:
    source = tmp_path / "source"
    write_image(source / "images" / "a.tif", np.zeros((32, 32), np.uint8))
    with pytest.raises(SkipnasError, match="no images with masks"):
        write_synthetic_dataset(source, tmp_path / "out", 2, progress=False)


def test_write_synthetic_dataset_pastes_onto_given_backgrounds(tmp_path: Path) -> None:
    source, out, backgrounds = tmp_path / "source", tmp_path / "out", tmp_path / "backgrounds"
    _write_dataset(source)
    write_image(backgrounds / "plain.png", np.full((40, 40), 30, np.uint8))
    write_synthetic_dataset(source, out, 2, backgrounds=backgrounds, progress=False)
    for path in (out / "images").glob("*.tif"):
        image = read_image(path)
        assert image.shape == (40, 40)
        assert np.all(image[read_mask(out / "masks" / path.name).instances == 0] == 30)
    with pytest.raises(SkipnasError, match="backgrounds folder not found"):
        write_synthetic_dataset(source, out, 2, backgrounds=tmp_path / "missing", progress=False)
