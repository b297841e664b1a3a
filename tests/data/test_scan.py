"""Scanning dataset folders into splits, grouping and splitting by group, and resolving dataset paths (data/scan.py)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from skipnas.data.scan import resolve_dataset, scan_dataset, split_groups
from skipnas.errors import SkipnasError
from tests.data.conftest import _pair, _presplit


def _flat(root: Path, groups: int = 6, tiles: int = 2) -> Path:
    for g in range(groups):
        for t in range(tiles):
            _pair(root, f"m{g}-{t}")
    return root


def test_scan_presplit_pairs_by_stem_across_suffixes(tmp_path: Path) -> None:
    index = scan_dataset(_presplit(tmp_path))
    assert index.presplit
    assert list(index.splits) == ["train", "val", "test"]
    train = index.samples("train")
    assert [s.stem for s in train] == ["a-1", "a-2t"]
    assert train[1].mask_path is not None and train[1].mask_path.suffix == ".tif"
    assert train[0].group == "a"
    assert len(index.samples()) == 4 and index.samples("missing") == []


def test_flat_split_is_grouped_and_deterministic(tmp_path: Path) -> None:
    root = _flat(tmp_path, groups=10, tiles=3)
    index = scan_dataset(root, seed=3)
    assert not index.presplit and set(index.splits) == {"train", "val", "test"}
    groups = {split: {s.group for s in samples} for split, samples in index.splits.items()}
    assert not groups["train"] & groups["val"] and not groups["train"] & groups["test"]
    assert not groups["val"] & groups["test"]
    assert sum(len(s) for s in index.splits.values()) == 30
    again = scan_dataset(root, seed=3)
    assert again.splits == index.splits
    others = [scan_dataset(root, seed=seed).splits for seed in range(4, 10)]
    assert any(other != index.splits for other in others)


def test_split_fractions_and_minimum_groups() -> None:
    ten = {f"g{i}": 1 for i in range(10)}
    counts = list(split_groups(ten, 0.2, 0.2, seed=0).values())
    assert (counts.count("train"), counts.count("val"), counts.count("test")) == (6, 2, 2)
    three = split_groups({"a": 1, "b": 1, "c": 1}, 0.01, 0.01, seed=0)
    assert sorted(three.values()) == ["test", "train", "val"]  # each split gets one group
    two = split_groups({"a": 5, "b": 5}, 0.2, 0.2, seed=0)
    assert sorted(two.values()) == ["train", "val"]  # too few groups: test goes first
    assert set(split_groups({"a": 9}, 0.2, 0.2, seed=0).values()) == {"train"}
    assert set(split_groups(ten, 0.0, 0.0, seed=0).values()) == {"train"}
    with pytest.raises(SkipnasError, match="nothing to train"):
        split_groups(ten, 0.6, 0.5, seed=0)


def test_group_pattern_is_used_and_checked(tmp_path: Path) -> None:
    for stem in ("x_a_1", "x_a_2", "x_b_1", "x_b_2", "x_c_1", "x_c_2"):
        _pair(tmp_path, stem)
    index = scan_dataset(tmp_path, group_pattern=r"^x_([a-z])")
    assert {s.group for s in index.samples()} == {"a", "b", "c"}
    for samples in index.splits.values():
        assert len(samples) == 2 and len({s.group for s in samples}) == 1
    with pytest.raises(SkipnasError, match="not a valid regular expression"):
        scan_dataset(tmp_path, group_pattern="(")


def test_resolve_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_dataset(tmp_path) == tmp_path.resolve()
    with pytest.raises(SkipnasError, match="not found") as info:
        resolve_dataset(tmp_path / "nope")
    assert str(tmp_path / "nope") in str(info.value)
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(SkipnasError, match="is a file"):
        resolve_dataset(tmp_path / "file.txt")
    fake = types.ModuleType("skipnas.data.demo")
    fake.demo_dataset_path = lambda: tmp_path / "cached-demo"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "skipnas.data.demo", fake)
    assert resolve_dataset("demo") == tmp_path / "cached-demo"
