"""From a dataset folder to the tensors a candidate trains and is validated on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset

from skipnas.auxiliary import check_auxiliary
from skipnas.counting.seeded import auxiliary_target
from skipnas.data.augment import AugmentConfig, apply_transform, build_eval_transform, build_train_transform
from skipnas.data.loading import LabeledImage, load_labeled
from skipnas.data.scan import DatasetIndex
from skipnas.data.synth import SynthConfig, SyntheticGenerator
from skipnas.data.tiling import TileConfig, training_tiles
from skipnas.errors import SkipnasError
from skipnas.runtime.normalise import Normalisation, to_tensor_image


def load_split(index: DatasetIndex, split: str) -> list[LabeledImage]:
    labeled = load_labeled(index.samples(split))
    if not labeled:
        raise SkipnasError(f"{index.root}: the {split} split has no labelled images; add images with masks to it")
    return labeled


def synthetic_images(sources: Sequence[LabeledImage], n: int, seed: int, config: SynthConfig | None = None) -> list[LabeledImage]:
    """``n`` semi-synthetic images: particles cut from ``sources`` and pasted elsewhere."""
    generator = SyntheticGenerator([(s.image, s.instances) for s in sources], config or SynthConfig())
    return [LabeledImage(f"synth-{i:05d}", image, instances) for i, (image, instances) in enumerate(generator.generate(n, seed))]


def foreground_target(instances: np.ndarray) -> torch.Tensor:
    """The binary segmentation target (1, H, W): every labelled particle is foreground."""
    return torch.from_numpy((instances > 0).astype(np.float32))[None]


@dataclass
class TileDataset(Dataset):
    """Training tiles of full images, augmented on every access; targets are binary foreground.

    With ``auxiliary`` (a target name), the target gets a second channel, the auxiliary target made
    from the tile's instance mask after augmentation, so it always matches the augmented image. With
    ``instance_channel``, a last channel holds the augmented instance IDs (as floats) for the
    per-particle loss.
    """

    images: Sequence[LabeledImage]
    normalisation: Normalisation
    tile: TileConfig = field(default_factory=TileConfig)
    augment: AugmentConfig | None = field(default_factory=AugmentConfig)
    seed: int = 0
    auxiliary: str | None = None
    instance_channel: bool = False

    def __post_init__(self) -> None:
        check_auxiliary(self.auxiliary)
        rng = np.random.default_rng(self.seed)
        apply = self.normalisation.apply_to
        self.tiles = [pair for item in self.images for pair in training_tiles(apply(item.image), item.instances, self.tile, rng)]
        if not self.tiles:
            raise SkipnasError("no training tiles: every tile is empty and empty tiles are dropped; raise empty_keep_fraction")
        mean, std, white = self.normalisation.mean, self.normalisation.std, self.normalisation.max_pixel_value
        if self.augment is None:
            self.transform = build_eval_transform(mean, std, white)
        else:
            self.transform = build_train_transform(self.augment, mean, std, white, seed=self.seed)

    def __len__(self) -> int:
        return len(self.tiles)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, instances = apply_transform(self.transform, *self.tiles[index])
        target = foreground_target(instances)
        if self.auxiliary is not None:
            extra = torch.from_numpy(auxiliary_target(self.auxiliary, instances))[None]
            target = torch.cat([target, extra])
        if self.instance_channel:
            target = torch.cat([target, torch.from_numpy(instances.astype(np.float32))[None]])
        return to_tensor_image(image), target
