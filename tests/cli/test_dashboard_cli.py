"""``skipnas dashboard``: a port out of range is one line; serving beyond this machine warns (no login)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest

import skipnas.cli
from skipnas.cli import main


@pytest.fixture(autouse=True)
def _dashboard_command_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(skipnas.cli, "_COMMAND_MODULES", ("dashboard",))


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Where the dashboard would have been served; nothing binds a port."""
    import optuna_dashboard

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(optuna_dashboard, "run_server", lambda storage, host, port: calls.append({"host": host, "port": port}))
    return calls


@pytest.fixture
def storage(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 's.db'}"
    optuna.create_study(storage=url, study_name="s")
    return url


@pytest.mark.parametrize("port", ["70000", "0", "-1"])
def test_a_port_out_of_range_exits_2_in_one_line(storage: str, served: list, capsys, port: str) -> None:
    assert main(["dashboard", "--storage", storage, "--port", port]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"skipnas: error: --port {port}: a port is a whole number from 1 to 65535; e.g. --port 8080"
    assert served == []


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5", "dashboard.example.org"])
def test_serving_beyond_this_machine_warns_that_there_is_no_login(storage: str, served: list, capsys, host: str) -> None:
    assert main(["dashboard", "--storage", storage, "--host", host, "--port", "8123"]) == 0
    err = capsys.readouterr().err
    assert f"warning: --host {host} serves the dashboard beyond this machine, and it has no login" in err
    assert "proxy with authentication" in err
    assert served == [{"host": host, "port": 8123}]


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.0.0.2"])
def test_this_machine_only_serves_without_a_warning(storage: str, served: list, capsys, host: str) -> None:
    assert main(["dashboard", "--storage", storage, "--host", host]) == 0
    assert "warning" not in capsys.readouterr().err and served == [{"host": host, "port": 8080}]
