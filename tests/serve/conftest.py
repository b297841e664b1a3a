"""A model folder that segments bright spots exactly, and images of bright disks, for the page's tests."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from skipnas.counting.postprocess import PostprocessConfig
from skipnas.genome import Genome
from skipnas.modelio import save_model_folder
from skipnas.models import build_model
from skipnas.runtime.normalise import Normalisation


def write_bright_spot_model(path: Path, method: str = "blobs") -> Path:
    """A standard U-Net whose weights pass the input straight through encoder level 0, its skip and
    decoder level 0 to the head: logits 20 x (pixel / 255) - 10, so pixels brighter than half white
    are particles, whatever the image. Counting as with a trained model, but predictable."""
    genome = Genome.named("standard", base_width=4)
    model = build_model(genome, in_channels=1).eval()
    with torch.no_grad():
        for name, module in model.named_modules():
            if isinstance(module, torch.nn.Conv2d):
                module.weight.zero_()
                if name.startswith(("encoder.stages.0.", "decoder.blocks.0.")):
                    module.weight[0, :, 1, 1] = 1.0  # channel 0 carries the input (the other channels are zero)
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.zero_()
                module.running_var.fill_(1.0 - module.eps)
                module.weight.fill_(1.0)
                module.bias.zero_()
        model.head.weight.zero_()
        model.head.weight[0, 0] = 20.0
        model.head.bias.fill_(-10.0)
    return save_model_folder(path, model, genome, Normalisation((0.0,), (1.0,), 255.0),
                             PostprocessConfig(threshold=0.5, min_area=4, method=method), in_channels=1)


def disks_image(centres: list[tuple[int, int]], radius: int = 6, shape: tuple[int, int] = (96, 128)) -> np.ndarray:
    image = np.full(shape, 20, np.uint8)
    for x, y in centres:
        cv2.circle(image, (x, y), radius, 230, -1)
    return image


@pytest.fixture(scope="session")
def bright_spot_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_bright_spot_model(tmp_path_factory.mktemp("serve") / "model")


@pytest.fixture
def two_images(tmp_path: Path) -> list[Path]:
    """Two PNGs: three and two separate disks."""
    paths = []
    for name, centres in (("first.png", [(20, 20), (60, 50), (100, 70)]), ("second.png", [(30, 60), (90, 30)])):
        cv2.imwrite(str(tmp_path / name), disks_image(centres))
        paths.append(tmp_path / name)
    return paths
