from __future__ import annotations

from pathlib import Path

import pytest
import torch

from skipnas.candidate import PreparedData, prepare_data
from skipnas.data.tiling import TileConfig
from skipnas.errors import SkipnasError
from skipnas.genome import Genome
from skipnas.models import build_model
from skipnas.predict import predict_images
from skipnas.runtime.device import select_device
from skipnas.train.config import PhaseConfig, TrainConfig
from skipnas.train.losses import LossConfig, particle_dice_loss
from skipnas.train.trainer import TrainingDiverged, cosine_lr, fit_model, training_loss
from skipnas.train.validation import EpochResult, prediction_dice


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
        "validation_steps": None,  # the tiny data's epochs are a step or two: validate after each
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
    # a learning rate too small to change the weights: the validation Dice cannot improve
    config = _config(pretrain=PhaseConfig(), finetune=PhaseConfig(epochs=50, lr=1e-12), early_stopping=2)
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


def test_a_model_with_an_auxiliary_head_trains_it_and_records_its_loss(data: PreparedData) -> None:
    config = _config(pretrain=PhaseConfig(steps=2, lr=1e-2), finetune=PhaseConfig(epochs=4, lr=1e-2), auxiliary="distance")
    torch.manual_seed(0)
    model = build_model(Genome.named("standard", base_width=4), auxiliary="distance")
    before = model.auxiliary_head.weight.detach().clone()
    result = _fit(data, config, model=model)
    assert {r.phase for r in result.history} == {"pretrain", "finetune"}  # both phases train the head
    losses = [r.auxiliary_loss for r in result.history]
    assert all(loss is not None and 0 < loss < r.train_loss for loss, r in zip(losses, result.history))
    finetune = [r.auxiliary_loss for r in result.history if r.phase == "finetune"]
    assert finetune[-1] < finetune[0]
    assert not torch.equal(before, result.model.auxiliary_head.weight.detach().cpu())
    assert result.to_dict()["history"][0]["auxiliary_loss"] == losses[0]


def test_without_a_head_no_auxiliary_loss_is_recorded(data: PreparedData) -> None:
    result = _fit(data, _config(pretrain=PhaseConfig(), finetune=PhaseConfig(steps=2, lr=1e-3)))
    assert [r.auxiliary_loss for r in result.history] == [None]


def test_model_and_config_must_agree_on_the_auxiliary_head(data: PreparedData) -> None:
    with_head = build_model(Genome.named("standard", base_width=4), auxiliary="distance")
    with pytest.raises(ValueError, match="auxiliary head"):
        _fit(data, _config(), model=with_head)
    with pytest.raises(ValueError, match="auxiliary head"):
        _fit(data, _config(auxiliary="distance"))


def test_auxiliary_settings_are_checked() -> None:
    with pytest.raises(SkipnasError, match="unknown auxiliary target 'edges'; known: distance, centres"):
        _config(auxiliary="edges")
    with pytest.raises(SkipnasError, match="auxiliary_weight must be a finite number >= 0"):
        _config(auxiliary="distance", auxiliary_weight=float("nan"))


def test_the_training_loss_follows_the_auxiliary_weight() -> None:
    targets = torch.zeros(2, 2, 8, 8)
    targets[:, :, 2:5, 2:5] = torch.tensor([1.0, 0.5])[:, None, None]
    logits = torch.randn(2, 2, 8, 8)
    light = training_loss(_config(auxiliary="distance", auxiliary_weight=0.5))(logits, targets)
    heavy = training_loss(_config(auxiliary="distance", auxiliary_weight=2.0))(logits, targets)
    plain = training_loss(_config())(logits[:, :1], targets[:, :1])
    auxiliary = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 1:], targets[:, 1:])
    assert light == pytest.approx(float(plain + 0.5 * auxiliary)) and heavy == pytest.approx(float(plain + 2 * auxiliary))


def test_with_a_particle_weight_the_loss_adds_the_particle_term_of_the_instance_ids() -> None:
    ids = torch.zeros(2, 8, 8)
    ids[:, 2:5, 2:5] = 1
    ids[1, 6:, 6:] = 3
    targets = torch.cat([(ids > 0).float()[:, None], 0.5 * (ids > 0).float()[:, None], ids[:, None]], dim=1)
    logits = torch.randn(2, 2, 8, 8)
    recorded: list[torch.Tensor] = []
    config = _config(auxiliary="distance", loss=LossConfig(particle_weight=2.0))
    total = training_loss(config, record_auxiliary=recorded.append)(logits, targets)
    without = training_loss(_config(auxiliary="distance"))(logits, targets[:, :2])
    assert total == pytest.approx(float(without + 2.0 * particle_dice_loss(logits[:, :1], ids)))
    auxiliary = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 1:], targets[:, 1:2])
    assert len(recorded) == 1 and recorded[0] == pytest.approx(float(auxiliary))


def test_a_model_trains_with_the_particle_term_and_the_auxiliary_head(data: PreparedData) -> None:
    config = _config(auxiliary="distance", loss=LossConfig(particle_weight=1.0), pretrain=PhaseConfig(steps=2, lr=1e-2))
    result = _fit(data, config, model=build_model(Genome.named("standard", base_width=4), auxiliary="distance"))
    assert result.steps == 2 + 4
    assert all(r.auxiliary_loss is not None and r.auxiliary_loss < r.train_loss for r in result.history)


def test_short_epochs_are_validated_every_validation_steps(data: PreparedData) -> None:
    """An epoch of the tiny data is a few steps: validations come every ``validation_steps``
    steps across epochs, and at the end of the budget."""
    every_epoch = _fit(data, _config(pretrain=PhaseConfig(), finetune=PhaseConfig(epochs=12, lr=1e-3), early_stopping=None))
    steps_per_epoch = every_epoch.history[0].step
    assert [r.epoch for r in every_epoch.history] == list(range(1, 13))
    interval = 3 * steps_per_epoch
    spaced = _fit(data, _config(pretrain=PhaseConfig(), finetune=PhaseConfig(epochs=12, lr=1e-3), validation_steps=interval, early_stopping=None))
    assert [r.epoch for r in spaced.history] == [3, 6, 9, 12]
    assert [r.step for r in spaced.history] == [interval, 2 * interval, 3 * interval, 4 * interval]
    # a budget ending between validations still validates once at its end
    ends_early = _fit(data, _config(pretrain=PhaseConfig(), finetune=PhaseConfig(epochs=4, lr=1e-3), validation_steps=interval, early_stopping=None))
    assert [r.epoch for r in ends_early.history] == [3, 4]


def test_long_epochs_are_validated_within_every_validation_steps(data: PreparedData) -> None:
    """An epoch longer than ``validation_steps`` is validated within, every that many steps, and
    the budget's end validates once, not twice when its last step was just validated."""
    one_tile_batches = {"pretrain": PhaseConfig(), "batch_size": 1, "early_stopping": None}
    every_epoch = _fit(data, _config(finetune=PhaseConfig(epochs=2, lr=1e-3), **one_tile_batches))
    steps_per_epoch = every_epoch.history[0].step
    assert steps_per_epoch >= 4 and [r.step for r in every_epoch.history] == [steps_per_epoch, 2 * steps_per_epoch]
    within = _fit(data, _config(finetune=PhaseConfig(epochs=2, lr=1e-3), validation_steps=2, **one_tile_batches))
    steps = [r.step for r in within.history]
    expected = list(range(2, 2 * steps_per_epoch + 1, 2))
    if expected[-1] != 2 * steps_per_epoch:
        expected.append(2 * steps_per_epoch)  # an odd epoch length: the budget's end adds one
    assert steps == expected
    assert [r.epoch for r in within.history] == [1 + (step - 1) // steps_per_epoch for step in steps]
    assert len({r.epoch for r in within.history}) < len(within.history)  # several validations in one epoch


def test_validation_steps_must_be_positive() -> None:
    with pytest.raises(SkipnasError, match="validation_steps"):
        _config(validation_steps=0)


def test_the_plateau_schedule_stops_at_its_learning_rate_floor(data: PreparedData, monkeypatch: pytest.MonkeyPatch) -> None:
    """A validation Dice that never improves halves the learning rate after every validation, down
    to ``min_lr_fraction`` of the phase's own and no further."""
    monkeypatch.setattr("skipnas.train.validation.prediction_dice", lambda *args, **kwargs: 0.5)
    phases = {"pretrain": PhaseConfig(), "finetune": PhaseConfig(epochs=12, lr=1e-3)}
    floored = _fit(data, _config(**phases, plateau_patience=0, early_stopping=None, min_lr_fraction=0.05))
    rates = [r.lr for r in floored.history]
    assert rates[0] == pytest.approx(1e-3) and rates[-1] == pytest.approx(5e-5) and min(rates) == pytest.approx(5e-5)
    unfloored = _fit(data, _config(**phases, plateau_patience=0, early_stopping=None, min_lr_fraction=0.0))
    # the first validation sets the best; each later one halves the rate for the next
    assert unfloored.history[-1].lr == pytest.approx(1e-3 * 0.5**10)


def test_the_cosine_schedule_falls_from_the_phase_rate_to_its_floor() -> None:
    rates = [cosine_lr(1e-3, 0.05, spent) for spent in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert rates[0] == pytest.approx(1e-3) and rates[2] == pytest.approx((1e-3 + 5e-5) / 2) and rates[-1] == pytest.approx(5e-5)
    assert all(later < earlier for earlier, later in zip(rates, rates[1:]))
    # past the budget (a step that ends it) the rate stays at the floor
    assert cosine_lr(1e-3, 0.05, 1.5) == pytest.approx(5e-5)


def test_the_cosine_schedule_follows_the_spent_step_budget(data: PreparedData) -> None:
    """Each batch trains at the rate of the budget spent before it, whatever the validation Dice does."""
    steps = 18  # the tiny data's epochs are 6 steps: 3 validations
    result = _fit(data, _config(pretrain=PhaseConfig(), finetune=PhaseConfig(steps=steps, lr=1e-3), scheduler="cosine", early_stopping=None))
    assert len(result.history) == 3
    # a validation reports the rate of the batch just trained, the phase's (step - 1)-th
    for record in result.history:
        assert record.lr == pytest.approx(cosine_lr(1e-3, 0.05, (record.step - 1) / steps))
    assert [r.lr for r in result.history] == sorted((r.lr for r in result.history), reverse=True)


def test_min_lr_fraction_is_a_fraction() -> None:
    with pytest.raises(SkipnasError, match="min_lr_fraction"):
        _config(min_lr_fraction=1.5)


def test_keep_best_by_must_be_known() -> None:
    with pytest.raises(SkipnasError, match="keep_best_by must be one of dice, count"):
        _config(keep_best_by="loss")


def _snapshots(model: torch.nn.Module) -> tuple[list[dict[str, torch.Tensor]], object]:
    """A callback recording the model's weights at every validation, and the list it fills."""
    states: list[dict[str, torch.Tensor]] = []

    def record(result: EpochResult) -> None:
        states.append({k: v.detach().clone() for k, v in model.state_dict().items()})

    return states, record


@pytest.mark.parametrize(
    ("keep_best_by", "kept_index"),
    [("dice", 0), ("count", 3)],  # count: validations 1 and 3 tie on MAE 1; 3 has the higher Dice
)
def test_fine_tuning_keeps_the_weights_of_the_best_validation_by_the_chosen_score(
    data: PreparedData, monkeypatch: pytest.MonkeyPatch, keep_best_by: str, kept_index: int
) -> None:
    dice = iter([0.9, 0.2, 0.5, 0.3])
    count_mae = iter([3.0, 1.0, 2.0, 1.0])
    monkeypatch.setattr("skipnas.train.validation.prediction_dice", lambda *args, **kwargs: next(dice))
    monkeypatch.setattr("skipnas.train.validation.calibrated_count_mae", lambda *args, **kwargs: next(count_mae))
    torch.manual_seed(0)
    model = build_model(Genome.named("standard", base_width=4))
    states, record = _snapshots(model)
    config = _config(pretrain=PhaseConfig(), finetune=PhaseConfig(epochs=4, lr=1e-2), early_stopping=None, keep_best_by=keep_best_by)
    result = _fit(data, config, callbacks=[record], model=model)
    assert result.kept is result.history[kept_index]
    assert [r.val_count_mae for r in result.history] == ([3.0, 1.0, 2.0, 1.0] if keep_best_by == "count" else [None] * 4)
    assert result.best_val_dice == 0.9  # the best Dice is reported whichever weights are kept
    for name, value in result.model.state_dict().items():
        assert torch.equal(value, states[kept_index][name]), name
    assert result.to_dict()["kept"]["step"] == result.history[kept_index].step


def test_keeping_by_count_calibrates_the_counting_at_each_fine_tuning_validation(data: PreparedData) -> None:
    from skipnas.counting.calibrate import CalibrationGrid
    from skipnas.predict import predict_images
    from skipnas.train.validation import calibrated_count_mae

    grid = CalibrationGrid(thresholds=(0.5,), erode=(0,), dilate=(0,), min_area=(0, 10), methods=("blobs",))
    config = _config(finetune=PhaseConfig(epochs=3, lr=1e-2), early_stopping=None, keep_best_by="count", count_grid=grid)
    result = _fit(data, config)
    pretrain = [r for r in result.history if r.phase == "pretrain"]
    finetune = [r for r in result.history if r.phase == "finetune"]
    assert pretrain and all(r.val_count_mae is None for r in pretrain)  # pretraining keeps no weights
    assert len(finetune) == 3 and all(r.val_count_mae is not None and r.val_count_mae >= 0 for r in finetune)
    best = min(finetune, key=lambda r: (r.val_count_mae, -r.val_dice))
    assert result.kept == best
    assert result.kept.scores() == f"val Dice {best.val_dice:.3f}, count MAE {best.val_count_mae:.2f}"
    assert pretrain[0].scores() == f"val Dice {pretrain[0].val_dice:.3f}"
    # the model left behind counts the val images as well as the kept validation said
    predictions = predict_images(result.model, data.val, data.normalisation, result.setup, config.val_tile, config.val_overlap)
    assert calibrated_count_mae(predictions, data.val, grid) == pytest.approx(best.val_count_mae)


def test_an_unknown_test_time_augmentation_is_refused_in_the_config() -> None:
    with pytest.raises(SkipnasError, match="unknown test-time augmentation 'rotate'; choose one of none, flips, dihedral"):
        _config(tta="rotate")


def test_slow_validations_wait_so_they_take_at_most_their_share_of_a_seconds_budget(
    data: PreparedData, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a seconds budget a validation that would push the time spent validating past
    ``max_validation_share`` of the phase waits; the seconds spent are recorded per phase."""
    import time

    from skipnas import predict

    real = predict.predict_images

    def slow_predictions(*args, **kwargs):
        time.sleep(0.3)
        return real(*args, **kwargs)

    monkeypatch.setattr("skipnas.train.validation.predict_images", slow_predictions)
    phases = {"pretrain": PhaseConfig(), "finetune": PhaseConfig(seconds=2.0, lr=1e-3)}
    # every step would validate (about 6 validations of 0.3 s in 2 s); a fifth of the time allows about 2
    shared = _fit(data, _config(**phases, validation_steps=1, early_stopping=None, max_validation_share=0.2))
    assert 1 <= len(shared.history) <= 4
    assert shared.validation_seconds["finetune"] >= 0.3 * len(shared.history)
    # a step budget is deterministic: it validates every validation_steps whatever they cost
    steps = _fit(data, _config(pretrain=PhaseConfig(), finetune=PhaseConfig(steps=4, lr=1e-3), validation_steps=1, early_stopping=None))
    assert [r.step for r in steps.history] == [1, 2, 3, 4]


def test_max_validation_share_is_a_share() -> None:
    with pytest.raises(SkipnasError, match="max_validation_share"):
        _config(max_validation_share=0.0)


def test_training_learns_validation_dice_rises_well_above_the_untrained_nets(tmp_path: Path, tiny_dataset_writer) -> None:
    # 300 steps of a width-4 net on 8 small demo images, about 5 s on 2 CPU cores. Measured
    # (seeds 0-2): untrained Dice 0.0-0.24, trained 0.73-0.76; the margins leave room for noise
    root = tiny_dataset_writer(tmp_path / "data", size=64, counts={"train": 8, "val": 4})
    config = _config(
        pretrain=PhaseConfig(steps=0), finetune=PhaseConfig(steps=300, lr=3e-3), synthetic_images=0, batch_size=8,
        val_tile=64, validation_steps=50,
    )
    data = prepare_data(root, config)
    torch.manual_seed(0)
    model = build_model(Genome.named("standard", base_width=4))
    untrained = prediction_dice(predict_images(model, data.val, data.normalisation, select_device("cpu"), 64, 8), data.val)
    result = fit_model(model, config, data.normalisation, data.train, data.val, data.synthetic, (), progress=False)
    assert result.steps == 300
    assert result.best_val_dice >= max(untrained + 0.3, 0.55)


def test_off_cuda_no_memory_peak_is_recorded(data: PreparedData) -> None:
    assert _fit(data, _config()).measured_peak_bytes == {}


@pytest.mark.gpu
def test_on_cuda_the_training_steps_and_validation_peaks_are_recorded_apart(data: PreparedData) -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    peaks = _fit(data, _config(device="cuda")).measured_peak_bytes
    assert set(peaks) == {"train_step", "validation"} and all(value > 0 for value in peaks.values())


@pytest.mark.parametrize(
    ("phase", "message"),
    [
        ({"lr": -1.0}, "learning rate must be above 0, got -1.0"),
        ({"lr": 0.0}, "learning rate must be above 0, got 0.0"),
        ({"lr": float("nan")}, "learning rate must be above 0, got nan"),
        ({"seconds": -5.0}, "seconds budget must be 0 \\(skip the phase\\) or more, got -5.0"),
        ({"steps": -1}, "steps budget must be 0"),
    ],
)
def test_a_phase_refuses_a_learning_rate_or_budget_below_zero(phase: dict[str, float], message: str) -> None:
    with pytest.raises(SkipnasError, match=message):
        PhaseConfig(**phase)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"weight_decay": -1e-4}, "weight_decay must be 0 or more"),
        ({"momentum": 1.5}, "momentum must be from 0 to below 1"),
        ({"val_batch": 0}, "val_batch must be at least 1"),
        ({"val_tile": 0}, "val_tile must be at least 1"),
    ],
)
def test_the_config_refuses_optimiser_and_validation_settings_that_cannot_work(changes: dict[str, float], message: str) -> None:
    with pytest.raises(SkipnasError, match=message):
        _config(**changes)


def test_with_a_weight_average_validation_scores_and_keeps_the_averaged_weights(data: PreparedData) -> None:
    budgets = {"pretrain": PhaseConfig(seconds=0), "finetune": PhaseConfig(steps=6, lr=1e-2)}
    plain = _fit(data, _config(**budgets))
    torch.manual_seed(0)
    model = build_model(Genome.named("standard", base_width=4))
    initial = {key: value.clone() for key, value in model.state_dict().items()}
    averaged = _fit(data, _config(**budgets, ema_decay=0.5), model=model)
    kept = averaged.kept
    assert kept is not None and averaged.steps == plain.steps == 6
    final = averaged.model.state_dict()
    # the same steps (same seed, same batches), other weights at the end: an average that moved from the start
    assert any(not torch.equal(plain.model.state_dict()[key], value) for key, value in final.items())
    assert any(not torch.allclose(initial[key].float(), value.float()) for key, value in final.items() if value.is_floating_point())
    # the kept validation's Dice is the Dice of the weights the model now holds
    predictions = predict_images(averaged.model, data.val, data.normalisation, averaged.setup, 32, 8)
    assert prediction_dice(predictions, data.val) == pytest.approx(kept.val_dice)
