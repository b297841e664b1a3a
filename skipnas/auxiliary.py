"""The targets an auxiliary head can learn. Imports nothing heavy, so the CLI's ``--help`` stays fast.

``"distance"``: each particle's distance to its own border, scaled to 1 at its deepest point
(:func:`skipnas.counting.seeded.instance_distance_map`), from which ``seeded`` counting splits
touching particles. It needs instance masks: with binary masks touching particles are one blob and
share one peak.

``"centres"``: a Gaussian peak of height 1 at each particle's deepest point, its width following
the particle's depth (:func:`skipnas.counting.seeded.instance_centre_map`); ``seeded`` counting uses
it the same way. Its peaks do not follow the shape of a particle's border, so a partly hidden
particle keeps one peak.
"""

from __future__ import annotations

from skipnas.errors import SkipnasError

AUXILIARY_TARGETS: tuple[str, ...] = ("distance", "centres")


class AuxiliaryTargetError(SkipnasError, ValueError):
    """An auxiliary target that does not exist."""


def check_auxiliary(name: str | None, where: str = "auxiliary") -> str | None:
    """``name`` when it is a known target or None; otherwise one clear error naming ``where`` it came from."""
    if name is not None and name not in AUXILIARY_TARGETS:
        raise AuxiliaryTargetError(f"{where}: unknown auxiliary target {name!r}; known: {', '.join(AUXILIARY_TARGETS)} (or none)")
    return name


__all__ = ["AUXILIARY_TARGETS", "AuxiliaryTargetError", "check_auxiliary"]
