from __future__ import annotations

import numpy as np
import pytest

from skipnas.auxiliary import AUXILIARY_TARGETS
from skipnas.counting.seeded import instance_centre_map, instance_distance_map
from skipnas.data.augment import AugmentConfig
from skipnas.data.loading import LabeledImage
from skipnas.data.tiling import TileConfig
from skipnas.runtime.normalise import Normalisation
from skipnas.train.data import TileDataset, auxiliary_target


def _touching_pair() -> LabeledImage:
    """Two touching square particles and one alone, off-centre so flips and rotations move them."""
    instances = np.zeros((32, 32), np.int32)
    instances[4:14, 3:11] = 1
    instances[4:14, 11:19] = 2
    instances[20:30, 22:30] = 3
    image = np.where(instances > 0, 200, 40).astype(np.uint8)
    return LabeledImage("pair", image, instances)


def _dataset(augment: AugmentConfig | None, auxiliary: str | None = "distance") -> TileDataset:
    tile = TileConfig(size=32, empty_keep_fraction=1.0)
    return TileDataset([_touching_pair()], Normalisation((0.3,), (0.2,), 255.0), tile, augment, seed=3, auxiliary=auxiliary)


def test_without_augmentation_the_auxiliary_target_is_the_instance_distance_map() -> None:
    image, target = _dataset(augment=None)[0]
    assert image.shape == (1, 32, 32) and target.shape == (2, 32, 32)
    item = _touching_pair()
    assert np.array_equal(target[0].numpy(), (item.instances > 0).astype(np.float32))
    assert np.array_equal(target[1].numpy(), instance_distance_map(item.instances))
    # touching particles keep a valley of zeros between them
    assert (target[1, 4:14, 10:12] == 0).all() and target[1, 4:14, 3:10].max() == 1


def test_the_auxiliary_target_follows_the_augmented_mask() -> None:
    dataset = _dataset(augment=AugmentConfig(p=1.0))  # every flip and rotation fires
    image, target = dataset[0]
    foreground, distance = target[0].numpy(), target[1].numpy()
    bright = image[0].numpy() > 0  # particles (200) normalise above 0, background (40) below
    assert np.array_equal(foreground > 0, bright)
    assert ((distance > 0) <= (foreground > 0)).all() and distance.max() == 1
    # the same geometric transform moved the image, the mask and the target together
    candidates = [np.rot90(np.flip(m, axes), k) for m in [instance_distance_map(_touching_pair().instances)]
                  for axes in [(0,), (1,), (0, 1), ()] for k in range(4)]
    assert any(np.array_equal(distance, c) for c in candidates)


def test_a_dataset_without_auxiliary_has_one_target_channel() -> None:
    assert _dataset(augment=None, auxiliary=None)[0][1].shape == (1, 32, 32)


def test_unknown_auxiliary_targets_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown auxiliary target 'edges'; known: distance, centres"):
        auxiliary_target("edges", np.zeros((4, 4), np.int32))
    with pytest.raises(ValueError, match="unknown auxiliary target 'edges'; known: distance, centres"):
        _dataset(augment=None, auxiliary="edges")


@pytest.mark.parametrize("name", AUXILIARY_TARGETS)
def test_with_an_instance_channel_the_targets_end_with_the_augmented_instance_ids(name: str) -> None:
    tile = TileConfig(size=32, empty_keep_fraction=1.0)
    dataset = TileDataset(
        [_touching_pair()], Normalisation((0.3,), (0.2,), 255.0), tile, AugmentConfig(p=1.0), seed=3,
        auxiliary=name, instance_channel=True,
    )
    _, target = dataset[0]
    assert target.shape == (3, 32, 32)
    foreground, auxiliary, ids = target[0].numpy(), target[1].numpy(), target[2].numpy()
    assert np.array_equal(ids > 0, foreground > 0)
    assert sorted(np.unique(ids)) == [0, 1, 2, 3]
    # the same transform moved the IDs and the auxiliary target: the map is the IDs' own target
    assert np.array_equal(auxiliary, auxiliary_target(name, ids.astype(np.int32)))


def test_the_centre_target_peaks_once_in_each_particle() -> None:
    _, target = _dataset(augment=None, auxiliary="centres")[0]
    item = _touching_pair()
    assert np.array_equal(target[1].numpy(), instance_centre_map(item.instances))
    for particle in (1, 2, 3):
        assert np.isclose(target[1].numpy()[item.instances == particle], 1.0).sum() == 1
