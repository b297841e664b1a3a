"""``skipnas search`` on bad input: one line naming the value and the fix, exit 2, nothing written."""

from __future__ import annotations

from pathlib import Path

import pytest

import skipnas.cli
from skipnas.cli import main


@pytest.fixture(autouse=True)
def _search_command_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(skipnas.cli, "_COMMAND_MODULES", ("search",))


def _search(tiny_dataset: Path, tmp_path: Path, *flags: str) -> list[str]:
    return [
        "search", "--data", str(tiny_dataset), "--trials", "1", "--trial-seconds", "1", "--device", "cpu",
        "--runs-dir", str(tmp_path / "runs"), "--quiet", *flags,
    ]


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("skipnas: error: ") and "Traceback" not in err, err
    return lines[0]


def test_a_study_name_that_would_escape_the_runs_folder_is_refused(tmp_path: Path, tiny_dataset: Path, capsys) -> None:
    work = tmp_path / "a" / "b"
    work.mkdir(parents=True)
    assert main(_search(tiny_dataset, work, "--study", "../../escaped")) == 2
    line = _one_error_line(capsys)
    assert "--study '../../escaped'" in line and "e.g. --study escaped" in line
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a", "b"]  # no runs/, no escaped/


def test_a_storage_in_a_missing_folder_is_refused_and_no_folder_is_made(tmp_path: Path, tiny_dataset: Path, capsys) -> None:
    storage = f"sqlite:///{tmp_path / 'nonexistent_dir' / 'x' / 's.db'}"
    assert main(_search(tiny_dataset, tmp_path, "--storage", storage)) == 2
    assert f"{tmp_path / 'nonexistent_dir' / 'x'} does not exist; create it" in _one_error_line(capsys)
    assert list(tmp_path.iterdir()) == []


def test_a_garbage_journal_file_is_refused_and_left_as_it_was(tmp_path: Path, tiny_dataset: Path, capsys) -> None:
    journal = tmp_path / "journal.log"
    journal.write_bytes(b'{"not": "a journal"}\n')
    assert main(_search(tiny_dataset, tmp_path, "--storage", str(journal))) == 2
    assert "journal.log: not an Optuna journal file" in _one_error_line(capsys)
    assert journal.read_bytes() == b'{"not": "a journal"}\n' and not (tmp_path / "runs").exists()


def test_confirm_below_one_is_refused_before_anything_is_written(tmp_path: Path, tiny_dataset: Path, capsys) -> None:
    assert main(_search(tiny_dataset, tmp_path, "--confirm", "0")) == 2
    assert "--confirm must be at least 1" in _one_error_line(capsys)
    assert not (tmp_path / "runs").exists()


def test_search_with_confirm_prints_the_held_out_verdict(tmp_path: Path, tiny_dataset: Path, capsys) -> None:
    import json

    flags = _search(tiny_dataset, tmp_path, "--trial-steps", "4", "--synthetic", "4", "--confirm", "1", "--json")
    flags[flags.index("--trials") + 1] = "3"
    flags.remove("--quiet")
    assert main(flags) == 0
    summary = json.loads(capsys.readouterr().out)
    confirmation = summary["confirmation"]
    assert confirmation["seeds"] == 3 and confirmation["verdict"]["text"]
    assert {c["baseline"] for c in confirmation["candidates"]} >= {"standard", "semi-dense", "reverse"}
