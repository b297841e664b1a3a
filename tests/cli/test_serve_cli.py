"""``skipnas serve``: a model folder that does not load, a taken port or a bad limit is one line and exit 2."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

import skipnas.cli
from skipnas.cli import main
from tests.serve.conftest import write_bright_spot_model

pytest.importorskip("starlette")


@pytest.fixture(autouse=True)
def _serve_command_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(skipnas.cli, "_COMMAND_MODULES", ("serve",))


@pytest.fixture
def bright_spot_model(tmp_path: Path) -> Path:
    return write_bright_spot_model(tmp_path / "model")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_a_folder_that_is_no_model_is_one_line_and_exit_2(tmp_path: Path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["serve", str(tmp_path / "empty"), "--workdir", str(tmp_path / "work"), "--port", str(_free_port())]) == 2
    assert str(tmp_path / "empty") in _error_line(capsys)


def test_a_taken_port_is_one_line_and_exit_2(bright_spot_model: Path, tmp_path: Path, capsys) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", str(bright_spot_model), "--workdir", str(tmp_path / "work"), "--port", str(port)]) == 2
    assert f"cannot listen on 127.0.0.1:{port}" in _error_line(capsys)
    assert not (tmp_path / "work").exists()


def test_a_bad_upload_limit_is_one_line_and_exit_2(bright_spot_model: Path, tmp_path: Path, capsys) -> None:
    assert main(["serve", str(bright_spot_model), "--max-upload-mib", "0"]) == 2
    assert "--max-upload-mib must be above 0" in _error_line(capsys)
