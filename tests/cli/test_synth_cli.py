from __future__ import annotations

from pathlib import Path

import pytest

import skipnas.cli as cli
from skipnas.data.io import read_mask


@pytest.fixture(autouse=True)
def _synth_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """The command runs through the real ``main`` even while the command list is being assembled."""
    if "synth" not in cli._COMMAND_MODULES:
        monkeypatch.setattr(cli, "_COMMAND_MODULES", (*cli._COMMAND_MODULES, "synth"))


def test_synth_on_the_demo_writes_n_pairs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "synth"
    assert cli.main(["synth", "--from", "demo", "--n", "3", "--out", str(out), "--seed", "2"]) == 0
    images = sorted(p.name for p in (out / "images").glob("*.tif"))
    assert len(images) == 3
    assert images == sorted(p.name for p in (out / "masks").glob("*.tif"))
    assert all(read_mask(out / "masks" / name).count >= 1 for name in images)
    assert "wrote 3 image/mask pairs" in capsys.readouterr().out


def test_synth_semi_mode_with_json_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    out = tmp_path / "synth"
    assert cli.main(["synth", "--from", "demo", "--n", "2", "--out", str(out), "--mode", "semi", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["pairs"] == 2 and summary["mode"] == "semi" and Path(summary["out"]) == out


@pytest.mark.parametrize("problem", ["missing", "empty", "foreign-out"])
def test_synth_errors_are_one_line_and_exit_2(
    problem: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, out = tmp_path / "nope", tmp_path / "out"
    if problem == "empty":
        source.mkdir()
    if problem == "foreign-out":
        source = Path("demo")  # type: ignore[assignment]
        out.mkdir()
        (out / "notes.txt").write_text("mine")
    assert cli.main(["synth", "--from", str(source), "--n", "2", "--out", str(out)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("skipnas: error: ")
    assert "Traceback" not in captured.err
    assert captured.out == ""
