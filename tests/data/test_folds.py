"""Cross-validation folds: every labelled image held out once, groups kept whole, no part in two roles."""

from __future__ import annotations

from pathlib import Path

import pytest

from skipnas.data.folds import cross_validation_folds, fold_parts
from skipnas.data.scan import DatasetIndex, Sample
from skipnas.errors import SkipnasError


def _index(groups: dict[str, int], unlabelled: int = 0) -> DatasetIndex:
    samples = [
        Sample(f"{group}-{i}", Path(f"{group}-{i}.tif"), Path(f"m{group}-{i}.tif"), group) for group, n in groups.items() for i in range(n)
    ]
    samples += [Sample(f"u{i}", Path(f"u{i}.tif"), None, f"u{i}") for i in range(unlabelled)]
    return DatasetIndex(Path("data"), {"train": samples[::2], "val": samples[1::2]}, presplit=True)


def test_every_labelled_image_is_held_out_once_and_no_fold_uses_it_twice() -> None:
    index = _index({f"g{i}": 1 + i % 3 for i in range(10)}, unlabelled=2)
    folds = cross_validation_folds(index, 4)
    held_out = [s.stem for fold in folds for s in fold.samples("test")]
    labelled = sorted(s.stem for s in index.samples() if s.mask_path is not None)
    assert sorted(held_out) == labelled  # unlabelled images take no part
    for k, fold in enumerate(folds):
        roles = [{s.stem for s in fold.samples(split)} for split in ("train", "val", "test")]
        assert not (roles[0] & roles[1]) and not (roles[0] & roles[2]) and not (roles[1] & roles[2])
        assert set().union(*roles) == set(labelled)
        assert roles[1] == {s.stem for s in folds[(k + 1) % 4].samples("test")}  # val is the next fold's held-out part


def test_a_group_stays_in_one_part_and_the_parts_are_even() -> None:
    index = _index({"a": 4, "b": 1, "c": 1, "d": 1, "e": 1, "f": 2, "g": 2})
    parts = fold_parts(index.samples(), 3, seed=1)
    assert sorted(len(part) for part in parts) == [4, 4, 4]
    for group in "abcdefg":
        assert sum(any(s.group == group for s in part) for part in parts) == 1
    assert fold_parts(index.samples(), 3, seed=1) == parts  # the seed fixes the parts


@pytest.mark.parametrize("folds, message", [(2, "--folds must be a whole number of at least 3"), (5, "cannot fill 5 folds")])
def test_too_few_folds_or_groups_are_refused(folds: int, message: str) -> None:
    with pytest.raises(SkipnasError, match=message):
        cross_validation_folds(_index({"a": 2, "b": 2, "c": 2, "d": 2}), folds)
