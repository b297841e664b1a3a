"""Atomic file writes: a temp file in the same folder, then a rename.

A crash or Ctrl-C mid-write leaves the previous file (or none), never half a file. Outputs of
several files are written to a staging folder first (:func:`staging_dir`) and moved into place
together (:func:`install_files`), never touching other files in the target folder.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _file_mode() -> int:
    """The mode a plain ``open`` would give a new file: 0o666 less the umask (mkstemp gives 0o600)."""
    return 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temp file beside ``path``; on clean exit it replaces ``path`` in one rename."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open supports 'w' and 'wb', not {mode!r}")
    with atomic_path(path) as tmp, open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    with atomic_open(path, "w") as handle:
        handle.write(text)


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_csv_atomic(
    path: str | os.PathLike[str],
    rows: Sequence[Mapping[str, Any]],
    fields: Sequence[str] | None = None,
    comment: str | None = None,
) -> None:
    """A CSV of ``rows`` (columns ``fields``, default the first row's keys; other keys are left out),
    after a ``# comment`` line when given (date, machine, command of a result file)."""
    if fields is None and not rows:
        raise ValueError(f"{path}: no rows to write and no columns given")
    with atomic_open(path) as handle:
        if comment is not None:
            handle.write(f"# {comment}\n")
        writer = csv.DictWriter(handle, fieldnames=list(fields if fields is not None else rows[0]), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temp path beside ``path`` for libraries that write by file name (tifffile, cv2, torch)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=target.suffix, dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp_name)
        os.chmod(tmp_name, _file_mode())
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def _scratch_base(target: Path) -> Path:
    """Where scratch folders for ``target`` go: beside it, or in its nearest existing ancestor (so a
    failure creates none of its missing parents); inside an existing ``target`` whose parent is not
    writable (``--out .`` in a folder of a read-only one)."""
    base = target.parent
    while not base.is_dir():
        base = base.parent
    return target if target.is_dir() and not os.access(base, os.W_OK | os.X_OK) else base


def staging_dir(target: str | os.PathLike[str]) -> Path:
    """A new hidden folder on ``target``'s file system for writing ``target``'s files before
    :func:`install_files`."""
    path = Path(target).absolute()
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=_scratch_base(path)))
    # it may become the target itself: the mode mkdir gives, not mkdtemp's 0o700
    os.chmod(staging, 0o777 & ~_umask())
    return staging


def install_files(staging: Path, target: Path, names: Sequence[str], stale: Sequence[str] = ()) -> None:
    """Move the files ``names`` (paths relative to ``staging``) into ``target`` and the files
    ``stale`` (relative to ``target``) out of it, all or none: on an error (Ctrl-C included) every
    file moved so far is moved back. Nothing else in ``target`` is touched.

    A missing ``target`` is ``staging`` renamed, in one step, so ``staging`` must hold only ``names``.
    """
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging, target)
        return
    backup = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=_scratch_base(target.absolute())))
    moved: list[tuple[Path, Path]] = []  # (from, to), undone last first
    created: list[Path] = []  # sub-folders made in target, removed again on an error

    def move(source: Path, destination: Path) -> None:
        missing = [p for p in (destination.parent, *destination.parent.parents) if not p.exists()]
        destination.parent.mkdir(parents=True, exist_ok=True)
        created.extend(reversed(missing))  # outermost first
        os.replace(source, destination)
        moved.append((source, destination))

    try:
        for name in stale:
            if (target / name).is_file() and name not in names:
                move(target / name, backup / name)
        for name in names:
            if (target / name).is_file() or (target / name).is_symlink():
                move(target / name, backup / name)
            move(staging / name, target / name)
    except BaseException:
        restored = True
        for source, destination in reversed(moved):
            try:
                os.replace(destination, source)
            except OSError:
                restored = False
        for folder in reversed(created):
            with contextlib.suppress(OSError):
                folder.rmdir()
        if restored:  # else the backup may hold the only copy of an old file
            shutil.rmtree(backup, ignore_errors=True)
        raise
    # backup holds only the files moved out above
    shutil.rmtree(backup, ignore_errors=True)
