"""One candidate's data: read once, adapted to, with its statistics and semi-synthetic images."""

from __future__ import annotations

from pathlib import Path

import pytest

from skipnas import candidate
from skipnas.candidate import prepare_data
from skipnas.data.tiling import TileConfig
from skipnas.train.config import PhaseConfig, TrainConfig


def _config() -> TrainConfig:
    return TrainConfig(
        pretrain=PhaseConfig(steps=3), finetune=PhaseConfig(steps=4), synthetic_images=4, batch_size=4,
        tile=TileConfig(size=32, empty_keep_fraction=1.0), val_tile=32, val_overlap=8, device="cpu",
    )


def test_prepared_data_holds_splits_statistics_and_synthetic_images(tiny_dataset: Path) -> None:
    data = prepare_data(tiny_dataset, _config())
    assert len(data.train) == 6 and len(data.val) == 2 and len(data.synthetic) == 4
    assert data.channels == 1 and data.normalisation.max_pixel_value == 255.0
    assert 0 < data.normalisation.mean[0] < 1 and data.normalisation.std[0] > 0
    assert all(item.instances.max() > 0 for item in data.synthetic)


def test_a_checked_index_is_adapted_to_and_loaded_without_reading_the_dataset_again(
    tiny_dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = candidate.open_dataset(tiny_dataset)
    monkeypatch.setattr(candidate, "check_dataset", lambda *args, **kwargs: pytest.fail("the dataset was checked again"))
    config, _ = candidate.adapt_config_to_dataset(index, _config(), 2)
    prepared = candidate.prepare_data(index, config)
    assert prepared.root == index.root and len(prepared.train) == 6
