"""The Cellpose baseline: its smoke run trains and counts where Cellpose is installed (a virtualenv of its
own, see the script's docstring; skipped elsewhere); its budget guard, scoring and bad-input handling
are checked everywhere, with stand-ins for Cellpose."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest

from skipnas.data.io import write_image, write_mask

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "experiments" / "cellpose_baseline.py"
RADIUS = 7
CENTRES = [(16, 16), (16, 46), (46, 20), (44, 48)]


def _disc_image(count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A 64x64 grey image with ``count`` bright discs on a dark noisy ground, and its instance map."""
    yy, xx = np.mgrid[:64, :64]
    instances = np.zeros((64, 64), np.int32)
    for particle, (y, x) in enumerate(CENTRES[:count], start=1):
        instances[(yy - y) ** 2 + (xx - x) ** 2 <= RADIUS**2] = particle
    image = np.where(instances > 0, 200, 30) + rng.integers(0, 20, instances.shape)
    return image.astype(np.uint8), instances


def _disc_dataset(root: Path, counts: dict[str, list[int]], *, masks: bool = True) -> Path:
    rng = np.random.default_rng(0)
    for split, per_image in counts.items():
        for index, count in enumerate(per_image):
            image, instances = _disc_image(count, rng)
            write_image(root / split / "images" / f"disc{index}.png", image)
            if masks:
                write_mask(root / split / "masks" / f"disc{index}.png", instances)
    return root


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_the_smoke_run_trains_cellpose_and_counts_the_test_image(tmp_path: Path) -> None:
    pytest.importorskip("cellpose")
    data = _disc_dataset(tmp_path / "discs", {"train": [2, 3, 4], "val": [3], "test": [4, 2]})
    out = tmp_path / "cellpose.json"
    result = _run("--data", str(data), "--smoke", "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "relative count error" in result.stdout and "Traceback" not in result.stderr
    found = json.loads(out.read_text())
    for key in (
        "cellpose_version", "training_seconds", "epochs", "relative_count_error", "count_mae",
        "object_precision", "object_recall", "object_f1", "images", "diameter", "budget_method",
    ):
        assert key in found, key
    assert found["cellpose_version"].startswith("3.") and found["smoke"] is True
    assert (found["train_images"], found["val_images"], found["test_images"], found["epochs"]) == (2, 1, 1, 1)
    assert 0 < found["training_seconds"] < found["train_budget_seconds"] and found["stopped_at_deadline"] is False
    # the discs' equivalent diameter sqrt(4 * area / pi): about 2 * RADIUS
    assert abs(found["diameter"] - 2 * RADIUS) < 1.5
    [row] = found["images"]
    assert row["stem"] == "disc0" and row["true_count"] == 4
    assert row["tp"] + row["fn"] == row["true_count"] and row["tp"] + row["fp"] == row["pred_count"]
    assert found["count_mae"] == abs(row["pred_count"] - row["true_count"])
    assert found["relative_count_error"] == pytest.approx(found["count_mae"] / 4)
    for key in ("object_precision", "object_recall", "object_f1"):
        assert 0.0 <= found[key] <= 1.0


@pytest.mark.parametrize("problem", ["missing folder", "test without masks", "no test split", "no particles to train on"])
def test_bad_input_is_named_in_one_line_and_exits_2(tmp_path: Path, problem: str) -> None:
    data = tmp_path / "discs"
    if problem == "test without masks":
        _disc_dataset(data, {"train": [2, 3]})
        _disc_dataset(data, {"test": [2]}, masks=False)
        named = str(data / "test" / "masks")
    elif problem == "no test split":
        _disc_dataset(data, {"train": [2, 3]})
        named = str(data / "test")
    elif problem == "no particles to train on":
        _disc_dataset(data, {"train": [0, 0], "test": [2]})
        named = str(data / "train" / "masks")
    else:
        named = str(data)
    out = tmp_path / "cellpose.json"
    result = _run("--data", str(data), "--out", str(out), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0] and "Traceback" not in result.stderr
    assert not out.exists()


def test_data_is_required_outside_the_smoke_mode(tmp_path: Path) -> None:
    result = _run("--out", str(tmp_path / "cellpose.json"), cwd=tmp_path)
    assert result.returncode == 2 and "--data is required" in result.stderr


def test_the_smoke_run_is_skipped_where_cellpose_is_missing(tmp_path: Path) -> None:
    if importlib.util.find_spec("cellpose") is not None:
        pytest.skip("cellpose is installed here")
    data = _disc_dataset(tmp_path / "discs", {"train": [2, 3], "test": [2]})
    out = tmp_path / "cellpose.json"
    smoke = _run("--data", str(data), "--smoke", "--out", str(out), cwd=tmp_path)
    assert smoke.returncode == 0 and smoke.stdout.startswith("skipped: cellpose is not importable")
    assert json.loads(out.read_text())["skipped"].startswith("cellpose is not importable")
    out.unlink()
    full = _run("--data", str(data), "--out", str(out), cwd=tmp_path)
    assert full.returncode == 2 and "cellpose is not importable" in full.stderr and not out.exists()


def test_the_diameter_is_the_median_equivalent_diameter_of_every_train_particle(load_experiment) -> None:
    experiment = load_experiment("cellpose_baseline")
    small = np.zeros((20, 20), np.int32)
    small[:2, :2] = 1  # area 4
    small[5:7, 5:7] = 2  # area 4
    large = np.zeros((20, 20), np.int32)
    large[:10, :10] = 7  # area 100
    expected = math.sqrt(4 * 4 / math.pi)  # the median of (4, 4, 100) pooled, not of the per-image medians
    assert experiment.median_diameter([small, large]) == pytest.approx(expected)
    with pytest.raises(experiment.BadInput):
        experiment.median_diameter([np.zeros((4, 4), np.int32)])


def test_colour_images_become_the_mean_of_their_colour_channels(load_experiment) -> None:
    experiment = load_experiment("cellpose_baseline")
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = 30, 60, 90, 255
    assert experiment.grey(rgba).tolist() == [[60.0, 60.0], [60.0, 60.0]]
    assert experiment.grey(np.full((2, 2), 7, np.uint16)).dtype == np.float32


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _fake_cellpose_train(clock: _Clock, images: int) -> types.SimpleNamespace:
    """A stand-in for cellpose.train: train_seg looks its helpers up by name, and a batch takes 1 s."""
    fake = types.SimpleNamespace()
    fake._process_train_test = lambda: (list(range(images)),)

    def get_batch() -> None:
        clock.now += 1.0

    def train_seg(n_epochs: int, batch_size: int) -> None:
        fake._process_train_test()
        for _ in range(n_epochs):
            for _ in range(math.ceil(images / batch_size)):
                fake._get_batch()

    fake._get_batch, fake.train_seg = get_batch, train_seg
    return fake


def test_the_guard_stops_training_once_the_deadline_has_passed(load_experiment, monkeypatch: pytest.MonkeyPatch) -> None:
    experiment = load_experiment("cellpose_baseline")
    clock = _Clock()
    monkeypatch.setattr(time, "monotonic", clock)
    fake = _fake_cellpose_train(clock, images=4)
    original = fake._get_batch
    guard = experiment.Guard(fake, types.SimpleNamespace(training=True), deadline=10.0, batch_size=2)
    with guard, pytest.raises(experiment.BudgetSpent):
        fake.train_seg(n_epochs=100, batch_size=2)
    assert guard.stopped and guard.batches_per_epoch == 2 and guard.train_batches == 10 and guard.epochs == 5
    assert guard.pace() == pytest.approx(2.0)
    assert fake._get_batch is original  # the patch is undone


def test_the_guard_replans_when_the_time_left_fits_more_than_the_flat_schedule(load_experiment, monkeypatch: pytest.MonkeyPatch) -> None:
    experiment = load_experiment("cellpose_baseline")
    clock = _Clock()
    monkeypatch.setattr(time, "monotonic", clock)
    fake = _fake_cellpose_train(clock, images=4)
    guard = experiment.Guard(fake, types.SimpleNamespace(training=True), deadline=1000.0, batch_size=2, replan_at=10, flat=100)
    with guard, pytest.raises(experiment.Replan):
        fake.train_seg(n_epochs=100, batch_size=2)
    assert guard.epochs == 10 and guard.epoch_seconds == pytest.approx(2.0) and not guard.stopped
    # where the flat schedule's epochs fill the budget, no replan: the guard stops at the deadline
    clock.now = 0.0
    guard = experiment.Guard(fake, types.SimpleNamespace(training=True), deadline=150.0, batch_size=2, replan_at=10, flat=100)
    with guard, pytest.raises(experiment.BudgetSpent):
        fake.train_seg(n_epochs=100, batch_size=2)
    assert guard.epoch_seconds is None and guard.epochs == 75


def test_whole_epochs_fit_after_the_setup(load_experiment) -> None:
    plan = load_experiment("cellpose_baseline").plan_epochs
    assert plan(100.0, 10.0, 3.0) == 30 and plan(5.0, 10.0, 3.0) == 1 and plan(10.0, 0.0, 0.0) == 1


def test_predicted_particles_are_counted_and_matched_to_the_true_ones(load_experiment) -> None:
    experiment = load_experiment("cellpose_baseline")
    _, truth = _disc_image(3, np.random.default_rng(0))
    predicted = truth.copy()
    predicted[predicted == 3] = 0  # one particle missed
    predicted[55:60, 55:60] = 9  # one that is not there
    item = types.SimpleNamespace(stem="disc", image=np.zeros((64, 64), np.uint8), instances=truth)
    model = types.SimpleNamespace(eval=lambda image, diameter, channels: (predicted, None, None))
    rows, _ = experiment.evaluate(model, [item], diameter=14.0)
    assert rows == [{"stem": "disc", "true_count": 3, "pred_count": 3, "tp": 2, "fp": 1, "fn": 1}]
