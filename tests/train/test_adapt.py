from __future__ import annotations

import cv2
import numpy as np
import pytest

from skipnas.data.particles import ParticleSizes
from skipnas.errors import SkipnasError
from skipnas.genome import Genome
from skipnas.train.adapt import adapt_to_data, adapt_width
from skipnas.train.config import TrainConfig


def _sizes(radius: int, touching: bool, image: int = 600) -> ParticleSizes:
    mask = np.zeros((image, image), np.int32)
    step = 2 * radius + (0 if touching else 6)
    ids = 0
    for y in range(radius + 2, image - radius - 2, step + 4):
        for x in range(radius + 2, image - radius - 2, step):
            ids += 1
            cv2.circle(mask, (x, y), radius, ids, -1)
    return ParticleSizes.of_masks([mask])


def test_small_separate_particles_keep_the_usual_settings():
    config, notes = adapt_to_data(TrainConfig(), _sizes(5, touching=False), 16)
    assert config.scale == 1.0 and config.tile.size == 64 and config.batch_size == 8
    assert config.auxiliary is None and config.normalise == "dataset"
    assert config.augment.scale_range is None
    assert config.count_grid is not None and 0 not in config.count_grid.min_area
    assert config.count_grid.min_peak_probability[0] == 0.0 and len(config.count_grid.min_peak_probability) > 1
    assert any("minimum areas" in note for note in notes)


def test_large_touching_particles_are_shrunk_tiled_whole_and_split_by_a_head():
    config, notes = adapt_to_data(TrainConfig(), _sizes(80, touching=True, image=1200), 16, brightness=3.0)
    assert config.scale < 1.0 and 160 * config.scale <= 70
    assert config.tile.size >= 2 * 160 * config.scale - 16 and config.tile.size % 16 == 0
    assert config.batch_size == 8  # more pixels a step, not fewer tiles
    assert any(note.startswith(f"batch 8 of {config.tile.size} px tiles") for note in notes)
    assert config.auxiliary == "distance" and config.normalise == "image"
    assert max(config.count_grid.min_area) < np.pi * (80 * config.scale) ** 2 * 0.5
    text = " ".join(notes)
    assert "input scale" in text and "auxiliary distance head" in text and "own contrast" in text


def test_the_width_follows_the_cost_of_a_training_step():
    genome = Genome.named("standard")
    small, _ = adapt_to_data(TrainConfig(), _sizes(5, touching=False), 16)
    assert adapt_width(genome, small) == (genome, [])  # 64 px tiles: width 16 and nothing to say
    large, _ = adapt_to_data(TrainConfig(), _sizes(80, touching=True, image=1200), 16)
    assert large.tile.size >= 128 and large.batch_size == 8
    narrowed, notes = adapt_width(genome, large)
    assert narrowed == genome.with_(base_width=8) and narrowed.skips == genome.skips
    assert notes == [
        (
            f"base width 8, not 16: a step of 8 tiles of {large.tile.size} px holds {(large.tile.size / 64) ** 2:.1f}x the "
            "pixels of 8 tiles of 64 px, and a narrower network keeps its arithmetic near theirs, so the seconds train more steps"
        )
    ]


def test_given_values_are_kept_and_checked():
    sizes = _sizes(80, touching=True, image=1200)
    config, notes = adapt_to_data(TrainConfig(), sizes, 16, scale=1.0, tile=64, batch=4, auxiliary=None, normalise="dataset")
    assert (config.scale, config.tile.size, config.batch_size, config.auxiliary) == (1.0, 64, 4, None)
    assert any(note.startswith("warning: the training tile (64 px)") for note in notes)
    with pytest.raises(SkipnasError, match="--tile must be at least 16 px"):
        adapt_to_data(TrainConfig(), sizes, 16, tile=8)
    with pytest.raises(SkipnasError, match="--scale must be above 0"):
        adapt_to_data(TrainConfig(), sizes, 16, scale=0.0)
    with pytest.raises(SkipnasError, match="--batch must be at least 1"):
        adapt_to_data(TrainConfig(), sizes, 16, batch=0)


def test_a_grid_given_by_the_caller_is_kept():
    from skipnas.counting.calibrate import CalibrationGrid

    grid = CalibrationGrid(min_area=(0, 5))
    config, _ = adapt_to_data(TrainConfig(count_grid=grid), _sizes(5, touching=False), 16)
    assert config.count_grid is grid


def test_masks_without_particles_are_refused_naming_where():
    empty = ParticleSizes.of_masks([np.zeros((32, 32), np.int32)])
    with pytest.raises(SkipnasError, match="data/train: the masks hold no particle"):
        adapt_to_data(TrainConfig(), empty, 16, where="data/train")


def test_training_inverts_grey_levels_only_where_particle_polarity_is_mixed():
    sizes = _sizes(5, touching=False)
    mixed = {"brighter": 19, "darker": 7, "unclear": 6}
    config, notes = adapt_to_data(TrainConfig(), sizes, 16, polarity=mixed)
    assert config.augment.invert
    assert any("brighter than their surroundings in 19 training images and darker in 7" in note for note in notes)
    config, notes = adapt_to_data(TrainConfig(), sizes, 16, polarity={"brighter": 64, "darker": 0, "unclear": 0})
    assert not config.augment.invert and not any("inverted" in note for note in notes)
    assert not adapt_to_data(TrainConfig(), sizes, 16)[0].augment.invert  # polarity unknown
    assert not adapt_to_data(TrainConfig(), sizes, 16, polarity=mixed, invert=False)[0].augment.invert  # given: kept
    assert adapt_to_data(TrainConfig(), sizes, 16, invert=True)[0].augment.invert
