from __future__ import annotations

from pathlib import Path

import pytest
import torch

from skipnas.data.tiling import TileConfig
from skipnas.genome import Genome
from skipnas.models import build_model
from skipnas.train.run import PreparedData, prepare_data
from skipnas.train.trainer import EpochResult, PhaseConfig, TrainConfig, TrainingDiverged, fit_model


def _config(**changes: object) -> TrainConfig:
    base = {
        "pretrain": PhaseConfig(steps=3, lr=1e-3),
        "finetune": PhaseConfig(steps=4, lr=1e-3),
        "synthetic_images": 4,
        "batch_size": 4,
        "tile": TileConfig(size=32, empty_keep_fraction=1.0),
        "val_tile": 32,
        "val_overlap": 8,
        "device": "cpu",
    }
    base.update(changes)
    return TrainConfig(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def data(tiny_dataset: Path) -> PreparedData:
    return prepare_data(tiny_dataset, _config())


def _fit(data: PreparedData, config: TrainConfig, callbacks=(), model=None):
    torch.manual_seed(0)
    model = model or build_model(Genome.named("standard", base_width=4))
    return fit_model(model, config, data.normalisation, data.train, data.val, data.synthetic, callbacks, progress=False)


def test_prepared_data_holds_splits_statistics_and_synthetic_images(data: PreparedData) -> None:
    assert len(data.train) == 6 and len(data.val) == 2 and len(data.synthetic) == 4
    assert data.channels == 1 and data.normalisation.max_pixel_value == 255.0
    assert 0 < data.normalisation.mean[0] < 1 and data.normalisation.std[0] > 0
    assert all(item.instances.max() > 0 for item in data.synthetic)


def test_step_budgets_are_respected_and_both_phases_run(data: PreparedData) -> None:
    seen: list[EpochResult] = []
    result = _fit(data, _config(), callbacks=[seen.append])
    assert result.steps == 3 + 4
    assert result.stop_reasons == {"pretrain": "3 steps", "finetune": "4 steps"}
    assert seen == result.history and {r.phase for r in seen} == {"pretrain", "finetune"}
    assert all(0.0 <= r.val_dice <= 1.0 and r.train_loss > 0 for r in seen)
    assert result.best_val_dice == max(r.val_dice for r in seen if r.phase == "finetune")


def test_epoch_budget_and_skipped_pretraining(data: PreparedData) -> None:
    config = _config(pretrain=PhaseConfig(seconds=0), finetune=PhaseConfig(epochs=2, lr=1e-3))
    result = _fit(data, config)
    assert result.stop_reasons["pretrain"] == "skipped"
    assert result.stop_reasons["finetune"] == "2 epochs"
    assert [r.epoch for r in result.history] == [1, 2]


def test_seconds_budget_stops_the_phase(data: PreparedData) -> None:
    result = _fit(data, _config(pretrain=PhaseConfig(), finetune=PhaseConfig(seconds=0.5, lr=1e-3)))
    assert result.stop_reasons["finetune"] == "0.5 s"
    assert result.phase_seconds["finetune"] < 10


def test_training_is_reproducible_on_cpu(data: PreparedData) -> None:
    first = _fit(data, _config()).model.state_dict()
    second = _fit(data, _config()).model.state_dict()
    assert all(torch.equal(first[key], second[key]) for key in first)


def test_a_nan_loss_stops_with_a_clear_reason(data: PreparedData) -> None:
    model = build_model(Genome.named("standard", base_width=4))
    model.head.register_forward_hook(lambda _m, _i, output: output * float("nan"))
    with pytest.raises(TrainingDiverged, match="NaN or infinite during pretrain.*lower the learning rate"):
        _fit(data, _config(), model=model)


def test_a_callback_can_stop_training_by_raising(data: PreparedData) -> None:
    class Stop(Exception):
        pass

    def prune(result: EpochResult) -> None:
        if result.phase == "finetune":
            raise Stop

    with pytest.raises(Stop):
        _fit(data, _config(), callbacks=[prune])


def test_early_stopping_ends_a_phase_without_improvement(data: PreparedData) -> None:
    config = _config(pretrain=PhaseConfig(), finetune=PhaseConfig(epochs=50, lr=0.0), early_stopping=2)
    result = _fit(data, config)
    assert result.stop_reasons["finetune"].startswith("early stop")
    assert len(result.history) == 3  # the first validation sets the best; two more without a better Dice


def test_sgd_and_step_scheduler_and_focal_loss_train(data: PreparedData) -> None:
    from skipnas.train.losses import LossConfig

    config = _config(
        pretrain=PhaseConfig(), finetune=PhaseConfig(epochs=3, lr=1e-3), optimizer="sgd", scheduler="step", step_size=1,
        loss=LossConfig(kind="focal"),
    )
    result = _fit(data, config)
    # the lr recorded with each epoch is the one it trained with; StepLR halves it after each
    assert [r.lr for r in result.history] == pytest.approx([1e-3, 5e-4, 2.5e-4])
