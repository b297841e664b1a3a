"""Storages from what a user types: missing folders, files that are not storages, workers starting at once."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from skipnas.errors import SkipnasError
from skipnas.study.storage import make_storage


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_a_storage_in_a_missing_folder_is_refused_and_nothing_is_created(tmp_path: Path, kind: str) -> None:
    target = tmp_path / "nonexistent_dir" / "x" / ("s.db" if kind == "sqlite" else "journal.log")
    spec = f"sqlite:///{target}" if kind == "sqlite" else str(target)
    with pytest.raises(SkipnasError, match=r"folder .*nonexistent_dir/x does not exist; create it \(mkdir -p"):
        make_storage(spec, runs_dir=tmp_path / "runs")
    assert list(tmp_path.iterdir()) == []


def test_the_runs_folder_is_created_for_the_default_storage_and_for_one_inside_it(tmp_path: Path) -> None:
    make_storage(None, runs_dir=tmp_path / "runs")
    assert (tmp_path / "runs" / "skipnas.db").is_file()
    make_storage(f"sqlite:///{tmp_path / 'other' / 's.db'}", runs_dir=tmp_path / "other")
    assert (tmp_path / "other" / "s.db").is_file()


@pytest.mark.parametrize(
    "content",
    [b'{"x": 1}\n', b"[1, 2]\n", b'{"op_code": 99, "worker_id": "w"}\n', b"42\n", b"\x00\x00\x00\n", bytes(range(256)) * 2],
    ids=["object", "list", "unknown-op", "number", "nul-bytes", "binary"],
)
def test_a_garbage_journal_file_is_refused_in_one_line_and_left_as_it_was(tmp_path: Path, content: bytes) -> None:
    journal = tmp_path / "journal.log"
    journal.write_bytes(content)
    with pytest.raises(SkipnasError, match="journal.log: not an Optuna journal file"):
        optuna.create_study(storage=make_storage(str(journal)), study_name="s")
    assert journal.read_bytes() == content


def test_an_sqlite_file_given_as_a_journal_names_the_url(tmp_path: Path) -> None:
    make_storage(f"sqlite:///{tmp_path / 'study.sqlite'}")
    (tmp_path / "study.sqlite").rename(tmp_path / "study.log")
    with pytest.raises(SkipnasError, match=r"is an SQLite database, not a journal file; give --storage sqlite:///"):
        make_storage(str(tmp_path / "study.log"))


# each round, both processes open a new storage at the same instant (they spin on the clock)
_AT_ONCE = """
import sys, time
import optuna.storages
from skipnas.study.storage import make_storage
print("ready", flush=True)
start = float(sys.stdin.readline())
for round, url in enumerate(sys.argv[1:]):
    while time.time() < start + 0.3 * round:
        pass
    make_storage(url, heartbeat_seconds=60)
print("ok")
"""


def _create_at_once(urls: list[str]) -> None:
    """Two processes create each storage in ``urls`` at the same moment; both must succeed."""
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _AT_ONCE, *urls],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for _ in range(2)
    ]
    for process in processes:  # both have imported optuna
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    start = f"{time.time() + 0.5}\n"
    for process in processes:
        assert process.stdin is not None
        process.stdin.write(start)
        process.stdin.close()
    outputs = [(p.stdout.read(), p.stderr.read()) for p in processes if p.stdout and p.stderr]
    for process in processes:
        process.wait(timeout=120)
    for process, (out, err) in zip(processes, outputs):
        assert process.returncode == 0 and out.strip() == "ok", err[-1500:]


def test_two_processes_creating_a_new_sqlite_storage_at_once_both_succeed(tmp_path: Path) -> None:
    _create_at_once([f"sqlite:///{tmp_path}/s{round}.db" for round in range(3)])


def test_two_processes_creating_the_tables_of_a_new_postgresql_database_at_once_both_succeed(new_postgres_database: str) -> None:
    _create_at_once([new_postgres_database])
