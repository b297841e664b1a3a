"""Training settings chosen from the training masks' particles: input scale, tile, zoom range, inversion, the auxiliary head, the minimum areas,
and the network's width from what a step of those tiles costs.

Each ``None`` argument of :func:`adapt_to_data` is chosen from the data; a value given is kept and
only checked. Every choice comes back as a sentence, for the command's output and the model folder.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from skipnas.counting.calibrate import CalibrationGrid
from skipnas.data.intensity import PER_IMAGE_SPREAD, mixed_polarity
from skipnas.data.particles import (
    DEFAULT_BATCH,
    DEFAULT_TILE,
    TOUCHING_SHARE_FOR_AUXILIARY,
    ParticleSizes,
    check_batch,
    check_particles_fit,
    choose_batch,
    choose_width,
    min_area_grid,
    scale_and_tile,
    tile_warning,
    zoom_range,
)
from skipnas.genome import Genome
from skipnas.train.config import TrainConfig

AUTO = "auto"
# the calibration also tries dropping particles whose most probable pixel stays below these: texture
# the network half-believes (a membrane's pores) against particles it is sure of
PEAK_PROBABILITIES: tuple[float, ...] = (0.0, 0.9, 0.95, 0.98)


def adapt_to_data(
    config: TrainConfig,
    sizes: ParticleSizes,
    multiple: int,
    *,
    scale: float | None = None,
    tile: int | None = None,
    batch: int | None = None,
    auxiliary: str | None = AUTO,
    normalise: str | None = None,
    brightness: float | None = None,
    invert: bool | None = None,
    polarity: dict[str, int] | None = None,
    where: str = "the training masks",
) -> tuple[TrainConfig, list[str]]:
    """``config`` with the input scale, training tile (a multiple of ``multiple``), batch, zoom range,
    auxiliary head (``"auto"``: a distance head where particles touch) and the calibration's
    minimum areas fitted to ``sizes``, the normalisation (None: per image where the training
    images' ``brightness`` spread, :func:`~skipnas.data.intensity.brightness_spread`, is large) and
    the inversion augmentation (None: where the training images' particle ``polarity`` counts are
    mixed, :func:`~skipnas.data.intensity.mixed_polarity`); and one sentence per choice."""
    check_particles_fit(sizes, where)
    assert sizes.width is not None and sizes.area is not None
    notes: list[str] = []
    scale_given, tile_given = scale is not None, tile is not None
    scale, tile = scale_and_tile(sizes, multiple, scale, tile, where)
    if not scale_given:
        notes.append(
            f"input scale {scale:g}: particles {sizes.width['p50']:.0f} px wide (median; 95th percentile "
            f"{sizes.width['p95']:.0f} px) reach the network {sizes.width['p50'] * scale:.0f} px "
            f"({sizes.width['p95'] * scale:.0f} px) wide"
        )
    if not tile_given:
        notes.append(f"training tile {tile} px: at least twice the large particles' width at that scale")
    elif warning := tile_warning(sizes, tile, scale):
        notes.append(f"warning: {warning}")
    if batch is None:
        batch = choose_batch(tile)
        if batch > DEFAULT_BATCH:
            notes.append(f"batch {batch}: as many pixels a step as {DEFAULT_BATCH} tiles of {DEFAULT_TILE} px")
        elif tile > DEFAULT_TILE:
            notes.append(
                f"batch {batch} of {tile} px tiles: a step holds {(tile / DEFAULT_TILE) ** 2:.1f}x the pixels of a step of {DEFAULT_TILE} px tiles; "
                f"smaller batches would leave BatchNorm too few tiles"
            )
    else:
        check_batch(batch)
    zoom = config.augment.scale_range
    if zoom is None:
        zoom = zoom_range(sizes)
        if zoom is not None:
            notes.append(
                f"zoom augmentation {zoom[0]:g}-{zoom[1]:g}x: the images' median particle widths differ "
                f"{sizes.image_median_width['p95'] / sizes.image_median_width['p5']:.1f}x"  # type: ignore[index]
            )
    if normalise is None:
        normalise = "image" if brightness is not None and brightness > PER_IMAGE_SPREAD else "dataset"
        if normalise == "image":
            notes.append(
                f"each image stretched by its own contrast: the training images' mean brightness differs by "
                f"{brightness:.1f} standard deviations between images"
            )
    if invert is None:
        chosen = not config.augment.invert and polarity is not None and mixed_polarity(polarity)
        invert = config.augment.invert or chosen
        if chosen:
            assert polarity is not None
            notes.append(
                f"grey levels inverted at random in training: the particles are brighter than their surroundings in "
                f"{polarity.get('brighter', 0)} training images and darker in {polarity.get('darker', 0)}"
            )
    if auxiliary == AUTO:
        share = sizes.touching_share
        auxiliary = "distance" if share >= TOUCHING_SHARE_FOR_AUXILIARY else None
        if auxiliary:
            notes.append(
                f"auxiliary distance head: {share:.0%} of the training particles touch another, so counting may split them (seeded)"
            )
    grid = config.count_grid
    if grid is None:  # a grid given by the caller is kept as it is
        areas = min_area_grid(sizes, scale)
        grid = CalibrationGrid(min_area=areas, min_peak_probability=PEAK_PROBABILITIES)
        notes.append(
            f"calibration minimum areas {', '.join(str(a) for a in areas)} px at the input scale: 2-35 % of the "
            f"median particle ({sizes.area['p50'] * scale**2:.0f} px there)"
        )
    adapted = dataclasses.replace(
        config,
        scale=scale,
        normalise=normalise,
        batch_size=batch,
        tile=dataclasses.replace(config.tile, size=tile),
        augment=dataclasses.replace(config.augment, scale_range=zoom, invert=invert),
        auxiliary=auxiliary,
        count_grid=grid,
    )
    return adapted, notes


def adapt_width(genome: Genome, config: TrainConfig) -> tuple[Genome, list[str]]:
    """``genome`` at the width :func:`~skipnas.data.particles.choose_width` gives its base width for
    ``config``'s tiles and batch, and a sentence where that narrowed it."""
    width = choose_width(config.tile.size, config.batch_size, genome.base_width)
    if width == genome.base_width:
        return genome, []
    pixels = config.batch_size * config.tile.size**2 / (DEFAULT_BATCH * DEFAULT_TILE**2)
    note = (
        f"base width {width}, not {genome.base_width}: a step of {config.batch_size} tiles of {config.tile.size} px holds "
        f"{pixels:.1f}x the pixels of {DEFAULT_BATCH} tiles of {DEFAULT_TILE} px, and a narrower network keeps its "
        "arithmetic near theirs, so the seconds train more steps"
    )
    return genome.with_(base_width=width), [note]


__all__: Sequence[str] = ("AUTO", "adapt_to_data", "adapt_width")
