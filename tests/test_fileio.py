from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from skipnas.fileio import atomic_open, atomic_path, install_files, staging_dir, write_json_atomic


def test_atomic_write_replaces_the_file_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "a.json"
    write_json_atomic(target, {"a": 1})
    write_json_atomic(target, {"a": 2})
    assert target.read_text().strip().endswith("}") and '"a": 2' in target.read_text()
    assert [p.name for p in target.parent.iterdir()] == ["a.json"]


def test_an_interrupted_write_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt), atomic_open(target) as handle:
        handle.write("half")
        raise KeyboardInterrupt
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_files_get_the_usual_permissions_not_mkstemps_0600(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        write_json_atomic(tmp_path / "a.json", {})
        with atomic_path(tmp_path / "b.png") as tmp:
            tmp.write_bytes(b"x")
    finally:
        os.umask(umask)
    for name in ("a.json", "b.png"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644


def _staged(root: Path, files: dict[str, str]) -> Path:
    staging = root / ".staging"
    for name, text in files.items():
        (staging / name).parent.mkdir(parents=True, exist_ok=True)
        (staging / name).write_text(text)
    return staging


def test_install_replaces_only_the_named_files_and_removes_only_the_stale_ones(tmp_path: Path) -> None:
    target = tmp_path / "out"
    (target / "run1").mkdir(parents=True)
    (target / "run1" / "log.txt").write_text("mine")
    (target / "notes.txt").write_text("mine")
    (target / "a.csv").write_text("old")
    (target / "old.csv").write_text("old")
    staging = _staged(tmp_path, {"a.csv": "new", "sub/b.png": "new"})
    install_files(staging, target, ["a.csv", "sub/b.png"], stale=["old.csv", "notes-not-there.txt"])
    assert (target / "a.csv").read_text() == "new" and (target / "sub" / "b.png").read_text() == "new"
    assert not (target / "old.csv").exists()
    assert (target / "notes.txt").read_text() == "mine" and (target / "run1" / "log.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".staging", "out"]  # no backup folder left
    assert not any(staging.rglob("*.*"))


def test_install_into_a_missing_folder_renames_the_staging_folder(tmp_path: Path) -> None:
    staging = _staged(tmp_path, {"a.csv": "new"})
    install_files(staging, tmp_path / "deep" / "out", ["a.csv"])
    assert (tmp_path / "deep" / "out" / "a.csv").read_text() == "new" and not staging.exists()


def test_an_install_failing_half_way_puts_every_file_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "out"
    target.mkdir()
    for name in ("a.csv", "b.csv", "stale.csv", "notes.txt"):
        (target / name).write_text(f"old {name}")
    staging = _staged(tmp_path, {"a.csv": "new", "b.csv": "new", "sub/c.png": "new"})
    real_replace, calls = os.replace, []

    def failing_replace(source: str | os.PathLike[str], destination: str | os.PathLike[str]) -> None:
        calls.append(destination)
        if len(calls) == 5:  # stale moved out, a.csv swapped, b.csv's old one moved out: then the disk "fails"
            raise OSError(28, "No space left on device")
        real_replace(source, destination)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="No space"):
        install_files(staging, target, ["a.csv", "b.csv", "sub/c.png"], stale=["stale.csv"])
    monkeypatch.undo()
    assert {p.name: p.read_text() for p in target.iterdir()} == {n: f"old {n}" for n in ("a.csv", "b.csv", "stale.csv", "notes.txt")}
    assert sorted(p.name for p in tmp_path.iterdir()) == [".staging", "out"]


def test_staging_dir_creates_none_of_the_targets_missing_parents(tmp_path: Path) -> None:
    staging = staging_dir(tmp_path / "a" / "b" / "out")
    assert staging.parent == tmp_path and staging.name.startswith(".out.") and not (tmp_path / "a").exists()
    assert staging_dir(tmp_path / "out").parent == tmp_path


def test_scratch_folders_go_inside_an_existing_target_whose_parent_is_read_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    (target / "a.csv").write_text("old")
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != tmp_path)  # as for --out . under /home
    staging = staging_dir(target)
    assert staging.parent == target
    (staging / "a.csv").write_text("new")
    install_files(staging, target, ["a.csv"])
    staging.rmdir()
    assert {p.name: p.read_text() for p in target.iterdir()} == {"a.csv": "new", "notes.txt": "mine"}
