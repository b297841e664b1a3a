"""The bead experiment's training options reach the model it trains and the results' comment line;
a kept model is predicted again without training."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from skipnas.counting.postprocess import METHODS

REPO = Path(__file__).resolve().parents[2]


def test_the_particle_loss_and_contrast_augmentation_options_train_the_kept_model(tmp_path: Path) -> None:
    out, model = tmp_path / "beads.csv", tmp_path / "model"
    command = [
        sys.executable, str(REPO / "experiments" / "touching_particles.py"), "--smoke",
        "--particle-weight", "0.5", "--augment-contrast", "--model", str(model), "--out", str(out),
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    train_config = json.loads((model / "model.json").read_text())["train_config"]
    assert train_config["loss"]["particle_weight"] == 0.5 and train_config["augment"]["brightness_contrast"] is True
    comment = out.read_text().splitlines()[0]
    assert "particle loss weight 0.5" in comment and "brightness-contrast augmentation" in comment


def test_a_kept_centre_model_is_counted_again_with_test_time_augmentation(tmp_path: Path) -> None:
    model, first, second = tmp_path / "model", tmp_path / "first.csv", tmp_path / "second.csv"
    script = str(REPO / "experiments" / "touching_particles.py")
    trained = subprocess.run(
        [sys.executable, script, "--smoke", "--auxiliary", "centres", "--model", str(model), "--out", str(first)],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert trained.returncode == 0, trained.stderr
    assert json.loads((model / "model.json").read_text())["auxiliary"] == "centres"
    predictions = tmp_path / "again.npz"
    again = subprocess.run(
        [sys.executable, script, "--smoke", "--from-model", str(model), "--tta", "flips", "--predictions", str(predictions), "--out", str(second)],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert again.returncode == 0, again.stderr
    comment = second.read_text().splitlines()[0]
    assert f"the model in {model} (standard, centres head), test-time augmentation flips" in comment
    assert "centres head" in first.read_text().splitlines()[0]
    # the saved predictions remember their target, so counting them again scores against centre maps
    with np.load(predictions) as saved:
        assert str(saved["auxiliary"]) == "centres"
    rows = list(csv.DictReader(line for line in second.read_text().splitlines() if not line.startswith("#")))
    assert [row["method"] for row in rows] == list(METHODS)
