from __future__ import annotations

import numpy as np
import pytest

from skipnas.data.loading import LabeledImage
from skipnas.data.rescale import check_scale, rescale_labeled, resize_maps, scaled_shape
from skipnas.errors import SkipnasError


def test_rescaled_masks_keep_their_ids_and_images_their_channels():
    instances = np.zeros((40, 60), np.int32)
    instances[10:30, 10:30] = 7
    instances[10:30, 35:55] = 9
    image = np.dstack([instances.astype(np.uint8) * 20] * 3)
    small = rescale_labeled(LabeledImage("a", image, instances), 0.5)
    assert small.instances.shape == (20, 30) and small.image.shape == (20, 30, 3)
    assert set(np.unique(small.instances)) == {0, 7, 9}
    assert rescale_labeled(LabeledImage("a", image, instances), 1.0).image is image


def test_maps_come_back_at_the_asked_size():
    maps = np.random.default_rng(0).random((2, 10, 15)).astype(np.float32)
    assert resize_maps(maps, (40, 60)).shape == (2, 40, 60)
    assert scaled_shape(3, 5, 0.01) == (1, 1)


@pytest.mark.parametrize("bad", [0, -1, float("nan"), float("inf"), "abc", 100])
def test_scales_that_cannot_work_are_refused(bad):
    with pytest.raises(SkipnasError, match="--scale"):
        check_scale(bad)
