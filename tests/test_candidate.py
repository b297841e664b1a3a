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


def test_few_val_particles_bring_the_training_images_into_the_calibration(tiny_dataset: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from skipnas.data.io import count_instances

    data = prepare_data(tiny_dataset, _config())
    val_particles = sum(count_instances(item.instances) for item in data.val)
    assert candidate.extra_calibration_images(data, "val") == ([], None)
    extra, why = candidate.extra_calibration_images(data, "auto")
    assert len(extra) == 6 and why == f"val holds {val_particles} particles, fewer than 100"
    # at their own size, as counting sees them (the training split is held at the input scale)
    assert [item.stem for item in extra] == [item.stem for item in data.train]
    assert all(item.image.shape[:2] == item.instances.shape for item in extra)
    assert candidate.extra_calibration_images(data, "val+train")[1] == "asked for"
    # training images join only until the calibration holds enough particles
    monkeypatch.setattr("skipnas.counting.calibrate.CALIBRATION_PARTICLES", val_particles + 1)
    (one,) = candidate.extra_calibration_images(data, "auto")[0]
    assert one.stem in {item.stem for item in extra}
    monkeypatch.setattr(candidate, "FEW_PARTICLES", val_particles)  # enough particles: auto keeps to val
    assert candidate.extra_calibration_images(data, "auto") == ([], None)
    assert len(candidate.extra_calibration_images(data, "val+train")[0]) == 1


@pytest.mark.parametrize("calibrate_on", ["val", "auto"])
def test_the_counting_is_chosen_on_val_and_train_when_val_holds_few_particles(tiny_dataset: Path, calibrate_on: str) -> None:
    from dataclasses import replace

    from skipnas.candidate import evaluate_predictions, train_candidate
    from skipnas.data.io import count_instances
    from skipnas.genome import Genome
    from skipnas.predict import predict_images

    config = replace(_config(), calibrate_on=calibrate_on)
    data = prepare_data(tiny_dataset, config)
    result = train_candidate(Genome.named("standard", depth=2, base_width=4), data, config, progress=False)
    val_particles = sum(count_instances(item.instances) for item in data.val)
    train_particles = sum(count_instances(item.instances) for item in data.train)
    if calibrate_on == "val":
        assert "calibrated_on" not in result.calibration and result.calibration["particles"] == val_particles
    else:
        assert result.calibration["calibrated_on"]["splits"] == ["val", "train"] and result.calibration["calibrated_on"]["images"] == 8
        assert result.calibration["particles"] == val_particles + train_particles and "trained on" in result.calibration["note"]
    # either way the run's metrics are val's, with the setting chosen
    predictions = predict_images(
        result.training.model, data.val, data.normalisation, result.training.setup, config.val_tile, config.val_overlap
    )
    assert result.metrics["count_mae"] == evaluate_predictions(predictions, data.val, result.postprocess)["count_mae"]
    assert result.metrics["images"] == 2


def test_an_unknown_calibration_choice_is_refused() -> None:
    from dataclasses import replace

    from skipnas.errors import SkipnasError

    with pytest.raises(SkipnasError, match="calibrate_on must be one of val, val\\+train, auto"):
        replace(_config(), calibrate_on="test")


def test_training_inverts_grey_levels_where_the_training_images_mix_bright_and_dark_particles(
    tiny_dataset: Path, tiny_dataset_writer, tmp_path: Path
) -> None:
    from skipnas.data.io import image_range, read_image, write_image

    assert not candidate.adapt_config_to_dataset(tiny_dataset, _config(), 2)[0].augment.invert  # bright particles only
    mixed = tiny_dataset_writer(tmp_path / "mixed")
    for path in sorted((mixed / "train" / "images").iterdir())[:3]:  # half the training images: dark particles
        image = read_image(path)
        write_image(path, (image_range(image.dtype) - image).astype(image.dtype))
    config, notes = candidate.adapt_config_to_dataset(mixed, _config(), 2)
    assert config.augment.invert
    assert any("brighter than their surroundings in 3 training images and darker in 3" in note for note in notes)
