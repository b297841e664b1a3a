"""Recalibrating a model folder: the counting setting is chosen again on the given images, the weights stay."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from skipnas.cli import main
from skipnas.counting.postprocess import PostprocessConfig, read_postprocess_config, write_postprocess_config
from skipnas.errors import SkipnasError
from skipnas.recalibrate import check_calibration_splits, recalibrate_model_folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_dataset: Path) -> Path:
    out = tmp_path_factory.mktemp("recalibrate") / "model"
    flags = ["train", "--data", str(tiny_dataset), "--width", "4", "--steps", "30",
             "--validation-steps", "10", "--device", "cpu", "--json", "--out", str(out)]
    assert main(flags) == 0
    return out


@pytest.fixture
def folder(trained: Path, tmp_path: Path) -> Path:
    """A copy of the trained folder whose counting drops every particle (a minimum area no particle has)."""
    copy = Path(shutil.copytree(trained, tmp_path / "model"))
    write_postprocess_config(copy / "postprocess.json", PostprocessConfig(min_area=100_000))
    return copy


def test_a_setting_that_counts_nothing_is_replaced_by_one_chosen_on_the_images(folder: Path, tiny_dataset: Path) -> None:
    weights = (folder / "weights.pt").read_bytes()
    result = recalibrate_model_folder(folder, tiny_dataset, ("val", "train"), device="cpu")
    assert result.model_dir == folder and result.changed and result.images == 8
    assert result.previous.min_area == 100_000 and result.before["object_recall"] == 0
    assert result.after["count_mae"] < result.before["count_mae"]
    # the folder now counts with the new setting, says why, and its weights are the same bytes
    assert read_postprocess_config(folder / "postprocess.json") == result.postprocess
    calibration = json.loads((folder / "postprocess.json").read_text())["calibration"]
    assert calibration["calibrated_on"] == {"data": str(tiny_dataset.resolve()), "splits": ["val", "train"], "images": 8}
    assert calibration["previous"].startswith("threshold 0.5, min area 100000 px") and "trained on" in calibration["note"]
    # with train among the images, the minimum areas follow the training split's particles, as training's do
    from skipnas.data.particles import min_area_grid
    from skipnas.data.scan import scan_dataset
    from skipnas.data.statistics import particle_sizes

    scale = json.loads((folder / "model.json").read_text()).get("input_scale", 1.0)
    assert calibration["min_area_grid"] == list(min_area_grid(particle_sizes(scan_dataset(tiny_dataset), "train"), scale))
    assert json.loads((folder / "metrics.json").read_text())["count_mae"] == result.after["count_mae"]
    assert (folder / "weights.pt").read_bytes() == weights


def test_out_writes_a_new_folder_and_leaves_the_source_as_it_was(folder: Path, tiny_dataset: Path, tmp_path: Path) -> None:
    before = {path.name: path.read_bytes() for path in folder.iterdir()}
    result = recalibrate_model_folder(folder, tiny_dataset, out=tmp_path / "again", device="cpu")
    assert result.model_dir == tmp_path / "again" and read_postprocess_config(tmp_path / "again" / "postprocess.json") == result.postprocess
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == before
    assert sorted(path.name for path in (tmp_path / "again").iterdir()) == sorted(before)
    # the minimum areas tried follow the calibration images' particles, never the 100,000 px of before
    assert max(json.loads((tmp_path / "again" / "postprocess.json").read_text())["calibration"]["min_area_grid"]) < 1000


def test_the_test_split_never_chooses_the_counting() -> None:
    with pytest.raises(SkipnasError, match="the test split measures the counting and must not choose it"):
        check_calibration_splits(["val", "test"])
    assert check_calibration_splits(["val", "train", "val"]) == ("val", "train")


def test_the_command_refuses_test_and_a_split_without_masks_leaving_the_folder_as_it_was(
    folder: Path, tiny_dataset_writer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = {path.name: path.read_bytes() for path in folder.iterdir()}
    assert main(["calibrate", str(folder), "--data", "demo", "--split", "test"]) == 2
    assert "--split test: the test split measures the counting" in capsys.readouterr().err
    no_val = tiny_dataset_writer(tmp_path / "no-val", counts={"train": 2})
    assert main(["calibrate", str(folder), "--data", str(no_val), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "no labelled images in val" in err and "Traceback" not in err
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == before


def test_the_command_prints_before_and_after_as_selection_scores(folder: Path, tiny_dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["calibrate", str(folder), "--data", str(tiny_dataset), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "selection scores" in out and "before: threshold 0.5, min area 100000 px" in out and "object recall" in out
    assert main(["calibrate", str(folder), "--data", str(tiny_dataset), "--device", "cpu", "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    # the same images choose the same setting again
    assert again["changed"] is False and again["splits"] == ["val"] and again["images"] == 2


def test_selection_chooses_by_another_rule_and_the_record_says_which(folder: Path, tiny_dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from skipnas.cli.calibrate import SELECTION_RULES
    from skipnas.counting.calibrate import SELECTIONS

    assert SELECTION_RULES == SELECTIONS  # the parser's choices are the rules calibrate knows
    assert main(["calibrate", str(folder), "--data", str(tiny_dataset), "--device", "cpu", "--selection", "objects"]) == 0
    assert "chosen by: fewest particles wrong per image" in capsys.readouterr().out
    calibration = json.loads((folder / "postprocess.json").read_text())["calibration"]
    assert calibration["selection"] == "objects" and 0 <= calibration["object_precision"] <= 1
    with pytest.raises(SkipnasError, match="--selection must be one of"):
        recalibrate_model_folder(folder, tiny_dataset, selection="luck", device="cpu")
