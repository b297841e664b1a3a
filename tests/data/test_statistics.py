"""Dataset statistics: per-split summaries, their cache, and normalisation mean and std (data/statistics.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from skipnas.data.scan import scan_dataset
from skipnas.data.statistics import dataset_summary, normalisation_stats, summary_cache_path
from skipnas.data.validate import check_dataset
from tests.data.conftest import _image, _mask, _presplit

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "sem_fibres"


def test_summary_counts_and_statistics(tmp_path: Path) -> None:
    root = _presplit(tmp_path)
    half = np.zeros((32, 32), np.uint8)
    half[:, 16:] = 255  # mean 0.5, std 0.5 after scaling by 255
    cv2.imwrite(str(root / "train" / "images" / "a-1.png"), half)
    cv2.imwrite(str(root / "train" / "images" / "a-2t.png"), half)
    cv2.imwrite(str(root / "val" / "images" / "b-1.png"), np.full((32, 32), 65535, np.uint16))
    summary = dataset_summary(scan_dataset(root))
    train, val, test = (summary["splits"][s] for s in ("train", "val", "test"))
    assert (train["images"], train["masks"], train["particles"]) == (2, 2, 5)
    assert train["mean"] == pytest.approx([0.5]) and train["std"] == pytest.approx([0.5])
    assert val["mean"] == pytest.approx([1.0]) and val["std"] == pytest.approx([0.0])
    assert val["dtypes"] == ["uint16"]
    assert test["particles"] == 4 and test["particles_per_image"] == {"min": 4, "median": 4.0, "max": 4}
    assert train["sizes"] == [[32, 32]] and train["channels"] == 1
    assert train["mask_kinds"] == {"instance": 2}
    assert normalisation_stats(scan_dataset(root)) == (pytest.approx([0.5]), pytest.approx([0.5]))


def test_rgb_statistics_per_channel(tmp_path: Path) -> None:
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[..., 0] = 255  # red 1.0, green 0.2, blue 0.0; written as BGR so reading must swap back
    rgb[..., 1] = 51
    (tmp_path / "train" / "images").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "train" / "images" / "c.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    _mask(tmp_path / "train" / "masks" / "c.png")
    mean, std = normalisation_stats(scan_dataset(tmp_path))
    assert mean == pytest.approx([1.0, 0.2, 0.0])
    assert std == pytest.approx([0.0, 0.0, 0.0], abs=1e-6)


def test_normalisation_without_train_split_uses_all_images(tmp_path: Path) -> None:
    _image(tmp_path / "val" / "images" / "a.png", value=0)
    _mask(tmp_path / "val" / "masks" / "a.png")
    _image(tmp_path / "test" / "images" / "b.png", value=255)
    _mask(tmp_path / "test" / "masks" / "b.png")
    mean, std = normalisation_stats(scan_dataset(tmp_path))
    assert mean == pytest.approx([0.5]) and std == pytest.approx([0.5])


def test_summary_is_cached_and_invalidated_by_changes(tmp_path: Path) -> None:
    root = _presplit(tmp_path)
    index = scan_dataset(root)
    cache_file = summary_cache_path(index)
    assert not cache_file.exists()
    first = dataset_summary(index)
    assert cache_file.is_file() and json.loads(cache_file.read_text()) == first
    tampered = json.loads(cache_file.read_text())
    tampered["splits"]["train"]["particles"] = 999
    cache_file.write_text(json.dumps(tampered))
    assert dataset_summary(scan_dataset(root))["splits"]["train"]["particles"] == 999  # read, not recomputed
    mask = root / "train" / "masks" / "a-1.png"
    _mask(mask, particles=5)
    os.utime(mask, ns=(1, 1))  # a changed file changes the key even within one clock tick
    changed = scan_dataset(root)
    assert summary_cache_path(changed) != cache_file
    assert dataset_summary(changed)["splits"]["train"]["particles"] == 8


def test_damaged_cache_is_recomputed(tmp_path: Path) -> None:
    index = scan_dataset(_presplit(tmp_path))
    cache_file = summary_cache_path(index)
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    cache_file.write_text("{not json")
    assert dataset_summary(index)["splits"]["val"]["particles"] == 1
    assert json.loads(cache_file.read_text())["splits"]["val"]["particles"] == 1


def test_fixture_crops_count_fibres_not_pieces() -> None:
    index = check_dataset(FIXTURE)
    splits = dataset_summary(index)["splits"]
    assert {name: (s["images"], s["masks"], s["particles"]) for name, s in splits.items()} == {
        "train": (1, 1, 6),
        "val": (1, 1, 9),
        "test": (1, 1, 5),
    }
    assert splits["train"]["sizes"] == [[128, 128]] and splits["train"]["mask_kinds"] == {"instance": 1}
