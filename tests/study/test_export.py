"""Exporting a trial's model folder: only the model's files are copied, replaced or removed."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from skipnas.counting.postprocess import PostprocessConfig
from skipnas.errors import SkipnasError
from skipnas.genome import Genome
from skipnas.modelio import load_model_folder, save_model_folder
from skipnas.models import build_model
from skipnas.runtime.normalise import Normalisation
from skipnas.study.export import export

optuna.logging.set_verbosity(optuna.logging.WARNING)


def study_with_a_trial(root: Path, storage: object) -> str:
    """A study whose one completed trial has a model folder (with a stray file the export must not copy)."""
    genome = Genome.named("dense", base_width=4)
    folder = save_model_folder(root / "trials" / "0", build_model(genome, in_channels=1).eval(), genome,
                               Normalisation.stretched(1), PostprocessConfig(), in_channels=1, metrics={"dice": 0.7})
    (folder / "scratch.log").write_text("trial log")
    study = optuna.create_study(storage=storage, study_name="s", direction="maximize")
    study.add_trial(optuna.trial.create_trial(
        value=0.7, user_attrs={"model_dir": str(folder), "dice": 0.7, "topology": "dense", "genome": genome.to_dict()}
    ))
    return "s"


def _existing_model_folder(path: Path) -> None:
    genome = Genome.named("standard", base_width=4)
    save_model_folder(path, build_model(genome, in_channels=1).eval(), genome, Normalisation.stretched(1), PostprocessConfig(),
                      in_channels=1)


def test_export_over_a_model_folder_keeps_the_users_other_files(tmp_path: Path) -> None:
    storage = optuna.storages.InMemoryStorage()
    name = study_with_a_trial(tmp_path, storage)
    out = tmp_path / "best"
    _existing_model_folder(out)
    (out / "notes.txt").write_text("my notes")
    (out / "run1").mkdir()
    (out / "run1" / "log.txt").write_text("my log")
    result = export(storage, name, out)
    assert load_model_folder(out).genome.name == "dense" and result.trial["topology"] == "dense"
    assert json.loads((out / "summary.json").read_text())["trial"]["dice"] == 0.7
    assert (out / "notes.txt").read_text() == "my notes" and (out / "run1" / "log.txt").read_text() == "my log"
    assert not (out / "scratch.log").exists()  # the trial folder's other files are not the model
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best", "trials"]


def test_export_into_a_folder_of_other_files_needs_overwrite_and_keeps_them(tmp_path: Path) -> None:
    storage = optuna.storages.InMemoryStorage()
    name = study_with_a_trial(tmp_path, storage)
    out = tmp_path / "photos"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(SkipnasError, match="not a skipnas model folder; choose another --out, or add --overwrite"):
        export(storage, name, out)
    assert [p.name for p in out.iterdir()] == ["holiday.jpg"]
    export(storage, name, out, overwrite=True)
    assert load_model_folder(out).genome.name == "dense" and (out / "holiday.jpg").read_bytes() == b"x"


def test_a_confirmation_chooses_its_winner_or_else_the_best_baseline() -> None:
    from skipnas.study.export import confirmed_trial

    study = optuna.create_study()
    assert confirmed_trial(study) is None
    candidates = [{"trial": 7, "baseline": None}, {"trial": 0, "baseline": "standard"}, {"trial": 1, "baseline": "semi-dense"}]
    study.set_user_attr("confirmation", {"candidates": candidates, "verdict": {
        "winner": 7, "baseline": "semi-dense", "distinguishable": True, "text": "trial 7 beats semi-dense: ..."}})
    assert confirmed_trial(study) == (7, "held-out confirmation: trial 7 beats semi-dense: ...")
    study.set_user_attr("confirmation", {"candidates": candidates, "verdict": {
        "winner": None, "baseline": "semi-dense", "distinguishable": False, "text": "no candidate is distinguishable from semi-dense"}})
    trial, why = confirmed_trial(study)
    assert trial == 1 and why.endswith("; so the semi-dense baseline")


def test_without_a_confirmation_the_export_says_it_rests_on_validation_scores(tmp_path: Path) -> None:
    storage = optuna.storages.InMemoryStorage()
    name = study_with_a_trial(tmp_path, storage)
    result = export(storage, name, tmp_path / "best")
    assert result.chosen_by.startswith("the best validation dice (a selection score")
    assert json.loads((tmp_path / "best" / "summary.json").read_text())["chosen_by"] == result.chosen_by


def test_a_study_without_its_dataset_keeps_the_trials_counting_under_auto_and_refuses_val_and_train(tmp_path: Path) -> None:
    from skipnas.counting.postprocess import write_postprocess_config

    storage = optuna.storages.InMemoryStorage()
    name = study_with_a_trial(tmp_path, storage)
    write_postprocess_config(tmp_path / "trials" / "0" / "postprocess.json", PostprocessConfig(), {"particles": 12})
    result = export(storage, name, tmp_path / "best")  # auto: 12 particles are few, and the study names no dataset
    assert "counting kept as the trial chose it on 12 particles (the study does not name its dataset)" in result.calibration
    assert json.loads((tmp_path / "best" / "postprocess.json").read_text())["calibration"] == {"particles": 12}
    with pytest.raises(SkipnasError, match="the study does not name its dataset"):
        export(storage, name, tmp_path / "again", calibrate_on="val+train")
    with pytest.raises(SkipnasError, match="--calibrate-on must be one of val, val\\+train, auto"):
        export(storage, name, tmp_path / "never", calibrate_on="test")
    assert not (tmp_path / "never").exists()
