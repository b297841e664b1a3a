from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

import skipnas.cli
from skipnas.cli import main


@pytest.fixture(autouse=True)
def _with_baseline_command(monkeypatch: pytest.MonkeyPatch) -> None:
    """The command is registered here until skipnas/cli/__init__.py lists it."""
    if "baseline" not in skipnas.cli._COMMAND_MODULES:
        monkeypatch.setattr(skipnas.cli, "_COMMAND_MODULES", (*skipnas.cli._COMMAND_MODULES, "baseline"))


def _pair(folder: Path, stem: str, discs: int, labelled: bool = True) -> None:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    image = np.full((48, 48), 60, np.uint8)
    ids = np.zeros((48, 48), np.uint16)
    for index in range(discs):
        cv2.circle(ids, (10 + 14 * index, 24), 5, index + 1, -1)
    image[ids > 0] = 160
    assert cv2.imwrite(str(folder / "images" / f"{stem}.png"), image)
    if labelled:
        assert cv2.imwrite(str(folder / "masks" / f"{stem}.png"), ids)


def _dataset(root: Path) -> Path:
    _pair(root / "train", "a-1", 2)
    _pair(root / "val", "b-1", 1)
    _pair(root / "val", "b-2", 3)
    _pair(root / "test", "c-1", 2)
    _pair(root / "test", "c-2", 3)
    _pair(root / "test", "d-1", 1, labelled=False)
    return root


def test_json_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["baseline-count", "--data", str(_dataset(tmp_path / "ds")), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    for key in ("dice", "precision", "recall", "count_mae", "count_mse", "exact_count_accuracy", "images"):
        assert key in data
    assert data["images"] == 2 and data["skipped_unlabelled"] == 1
    assert data["count_mae"] == 0.0 and data["exact_count_accuracy"] == 1.0
    assert [(row["stem"], row["true_count"]) for row in data["rows"]] == [("c-1", 2), ("c-2", 3)]
    # val holds 4 particles: the training image joins the calibration, as for a network
    assert data["calibrated_on"] == "val+train" and data["calibration_images"] == 3


def test_table_output_says_what_was_skipped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["baseline-count", "--data", str(_dataset(tmp_path / "ds")), "--calibrate-on", "none"]) == 0
    out = capsys.readouterr().out
    assert "pixel Dice" in out and "count MAE" in out
    assert any("c-2" in line and "3" in line for line in out.splitlines())
    assert "skipped 1 unlabelled image(s)" in out
    assert "not calibrated" in out


def test_split_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["baseline-count", "--data", str(_dataset(tmp_path / "ds")), "--split", "train", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["split"] == "train" and data["images"] == 1 and data["skipped_unlabelled"] == 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--data", "{missing}"], "dataset folder not found"),
        (["--split", "holdout"], "no 'holdout' split"),
        (["--block-size", "4"], "block_size must be an odd integer"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    root = _dataset(tmp_path / "ds")
    args = [arg.format(missing=tmp_path / "missing") for arg in extra]
    if "--data" not in args:
        args = ["--data", str(root), *args]
    assert main(["baseline-count", *args, "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in captured.err
