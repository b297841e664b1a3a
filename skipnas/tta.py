"""Test-time augmentation modes: which mirrored views of a tile are predicted and averaged.

Imports nothing heavy, so the CLI's ``--help`` stays fast; :mod:`skipnas.predict` applies them.
"""

from __future__ import annotations

from skipnas.errors import SkipnasError

TTA_MODES: tuple[str, ...] = ("none", "flips", "dihedral")


class TTAError(SkipnasError, ValueError):
    """A test-time augmentation mode that does not exist."""


def check_tta(tta: str) -> str:
    """``tta`` when it is one of :data:`TTA_MODES`; otherwise one clear error."""
    if tta not in TTA_MODES:
        raise TTAError(f"unknown test-time augmentation {tta!r}; choose one of {', '.join(TTA_MODES)}")
    return tta


def tta_views(tta: str) -> list[tuple[bool, tuple[int, ...]]]:
    """The views of a mode as (transpose height and width, then flip these dims) of an (N, C, H, W) batch."""
    check_tta(tta)
    flips: list[tuple[int, ...]] = [()] if tta == "none" else [(), (3,), (2,), (2, 3)]
    transposes = [False, True] if tta == "dihedral" else [False]
    return [(transpose, dims) for transpose in transposes for dims in flips]


__all__ = ["TTA_MODES", "TTAError", "check_tta", "tta_views"]
