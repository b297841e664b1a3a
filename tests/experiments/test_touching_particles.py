"""The bead experiment's training options reach the model it trains and the results' comment line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
