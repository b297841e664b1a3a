"""Test-time augmentation modes: their views, each undone by its inverse."""

from __future__ import annotations

import pytest
import torch

from skipnas.predict import _from_view, _to_view
from skipnas.tta import TTAError, check_tta, tta_views


@pytest.mark.parametrize(("mode", "views"), [("none", 1), ("flips", 4), ("dihedral", 8)])
def test_each_mode_has_its_views_and_each_view_maps_back(mode: str, views: int) -> None:
    assert len(tta_views(mode)) == views == len(set(tta_views(mode)))
    batch = torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).reshape(2, 3, 5, 5)
    seen = set()
    for transpose, dims in tta_views(mode):
        view = _to_view(batch, transpose, dims)
        seen.add(view.numpy().tobytes())
        assert torch.equal(_from_view(view, transpose, dims), batch)
    assert len(seen) == views  # distinct images, not the same view twice


def test_an_unknown_mode_names_the_known_ones() -> None:
    assert check_tta("flips") == "flips"
    with pytest.raises(TTAError, match="unknown test-time augmentation 'none '; choose one of none, flips, dihedral"):
        tta_views("none ")
