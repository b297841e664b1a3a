"""``skipnas export --out``: a folder of the user's files is refused without --overwrite, and kept with it."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

import skipnas.cli
from skipnas.cli import main
from skipnas.counting.postprocess import PostprocessConfig
from skipnas.genome import Genome
from skipnas.modelio import save_model_folder
from skipnas.models import build_model
from skipnas.runtime.normalise import Normalisation

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _study_with_a_trial(root: Path, url: str) -> str:
    genome = Genome.named("dense", base_width=4)
    folder = save_model_folder(root / "trials" / "0", build_model(genome, in_channels=1).eval(), genome,
                               Normalisation.stretched(1), PostprocessConfig(), in_channels=1)
    study = optuna.create_study(storage=url, study_name="s", direction="maximize")
    study.add_trial(optuna.trial.create_trial(value=0.7, user_attrs={"model_dir": str(folder), "dice": 0.7, "topology": "dense"}))
    return "s"


@pytest.fixture(autouse=True)
def _export_command_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(skipnas.cli, "_COMMAND_MODULES", ("export",))


def test_export_refuses_a_folder_of_other_files_without_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    name = _study_with_a_trial(tmp_path, url)
    out = tmp_path / "mine"
    (out / "run1").mkdir(parents=True)
    (out / "notes.txt").write_text("my notes")
    args = ["export", "--storage", url, "--study", name, "--out", str(out), "--json"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert f"{out}: holds files and is not a skipnas model folder; choose another --out, or add --overwrite" in err
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "run1"]
    assert main([*args, "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "genome.json", "metrics.json", "model.json", "notes.txt", "postprocess.json", "run1", "summary.json", "weights.pt"
    ]
    assert main(args) == 0  # a model folder now: its own files are replaced without --overwrite
    assert (out / "notes.txt").read_text() == "my notes"
