from __future__ import annotations

from pathlib import Path

import optuna
import pytest

import skipnas.cli
from skipnas.cli import main
from skipnas.genome import Genome

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(autouse=True)
def _report_command_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only this command is registered: the tests stay fast and independent of the other commands' imports."""
    monkeypatch.setattr(skipnas.cli, "_COMMAND_MODULES", ("report",))


def _sqlite_study(path: Path, name: str = "demo-default") -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{path}"
    study = optuna.create_study(storage=url, study_name=name, direction="maximize")
    study.set_user_attr("objective", "dice")
    link = optuna.distributions.IntDistribution(0, 1)
    for topology, dice in (("standard", 0.6), ("dense", 0.7), ("none", 0.4)):
        genome = Genome.named(topology, depth=2)
        params = {f"skip_e{i}_d{j}": genome.skips[i][j] for i in range(2) for j in range(2)}
        study.add_trial(
            optuna.trial.create_trial(
                value=dice,
                params=params,
                distributions={key: link for key in params},
                user_attrs={"genome": genome.to_dict(), "topology": topology, "baseline": topology, "dice": dice, "predicted_peak_mib": 10.0 + dice},
            )
        )
    return url


def test_report_writes_the_page(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = _sqlite_study(tmp_path / "runs.db")
    out = tmp_path / "out" / "report.html"
    assert main(["report", "--storage", url, "--study", "demo-default", "--out", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    assert "Optimisation history" in page and "plotly" in page and "demo-default" in page
    assert str(out) in capsys.readouterr().out


def test_report_picks_the_only_study_and_a_default_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _sqlite_study(tmp_path / "runs" / "skipnas.db", name="only")
    monkeypatch.chdir(tmp_path)
    assert main(["report"]) == 0  # default storage: sqlite:///runs/skipnas.db
    assert (tmp_path / "runs" / "only" / "report.html").is_file()


def test_unknown_study_is_one_line_listing_the_studies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = _sqlite_study(tmp_path / "runs.db")
    _sqlite_study(tmp_path / "runs.db", name="second")
    out = tmp_path / "report.html"
    assert main(["report", "--storage", url, "--study", "nope", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "'nope'" in err and "demo-default" in err and "second" in err
    assert not out.exists()


def test_several_studies_need_a_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = _sqlite_study(tmp_path / "runs.db")
    _sqlite_study(tmp_path / "runs.db", name="second")
    assert main(["report", "--storage", url]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--study" in err and "second" in err


def test_missing_storage_is_a_user_error_and_creates_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["report", "--study", "x"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "skipnas search" in err
    assert not (tmp_path / "runs").exists()
    assert main(["report", "--storage", str(tmp_path / "journal.log")]) == 2
    assert "no such journal file" in capsys.readouterr().err
    assert not (tmp_path / "journal.log").exists()


def test_sqlite_file_given_as_a_journal_path_names_the_fix(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _sqlite_study(tmp_path / "runs.db")
    assert main(["report", "--storage", str(tmp_path / "runs.db")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"sqlite:///{tmp_path / 'runs.db'}" in err


def test_report_from_a_journal_file(tmp_path: Path) -> None:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    journal = tmp_path / "journal.log"
    study = optuna.create_study(storage=JournalStorage(JournalFileBackend(str(journal))), study_name="j", direction="maximize")
    study.add_trial(optuna.trial.create_trial(value=0.5, user_attrs={"genome": Genome.named("standard", depth=2).to_dict()}))
    assert main(["report", "--storage", str(journal), "--out", str(tmp_path / "j.html")]) == 0
    assert "Optimisation history" in (tmp_path / "j.html").read_text(encoding="utf-8")


def test_an_existing_file_that_is_not_a_report_is_replaced_only_with_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = _sqlite_study(tmp_path / "runs.db")
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes")
    args = ["report", "--storage", url, "--study", "demo-default", "--out", str(notes)]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"{notes}: exists and is not a report written by skipnas; choose another --out, or add --overwrite" in err
    assert notes.read_text() == "my notes"
    assert main([*args, "--overwrite"]) == 0
    assert "Optimisation history" in notes.read_text(encoding="utf-8")
    # a report skipnas wrote (with any title) is simply written again
    notes.write_text(notes.read_text(encoding="utf-8").replace("Optimisation history", "stale"), encoding="utf-8")
    assert main([*args, "--title", "another title"]) == 0
    assert "Optimisation history" in notes.read_text(encoding="utf-8")
