"""Optuna storages from what a user types: an RDB URL, or a plain file path for the journal storage."""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from skipnas.errors import SkipnasError
from skipnas.study.settings import DEFAULT_RUNS_DIR

DEFAULT_STORAGE_FILE = "skipnas.db"
RDB_SCHEMES = ("sqlite", "postgresql", "mysql")
_EXAMPLES = (
    "e.g. sqlite:///runs/skipnas.db, postgresql+psycopg://user@host/db, or a journal file path such as runs/journal.log"
)


_SQLITE_MAGIC = b"SQLite format 3\x00"


def default_storage_url(runs_dir: Path = DEFAULT_RUNS_DIR) -> str:
    return f"sqlite:///{runs_dir / DEFAULT_STORAGE_FILE}"


def is_rdb_url(spec: str) -> bool:
    return "://" in spec


def make_storage(spec: str | None, runs_dir: Path = DEFAULT_RUNS_DIR, heartbeat_seconds: int | None = None) -> Any:
    """An Optuna storage: ``None`` -> SQLite under ``runs_dir``; ``scheme://...`` -> RDBStorage;
    anything else -> the journal file storage at that path (as optuna-dashboard takes it).
    With ``heartbeat_seconds`` an RDB storage records a heartbeat of every running trial; a trial
    silent for twice that (its worker was killed) is failed by the next worker and queued again
    (:func:`skipnas.study.trials.retry_stale_trial`).

    A storage the user names must be in an existing folder or in ``runs_dir`` (created). Connection
    problems, unknown schemes and files that are not storages raise :class:`SkipnasError` naming them.
    """
    from optuna.exceptions import ExperimentalWarning

    if spec is None:
        runs_dir.mkdir(parents=True, exist_ok=True)  # the default lives in skipnas's own runs folder
        spec = default_storage_url(runs_dir)
    if not is_rdb_url(spec):
        return _journal_storage(spec, runs_dir)
    scheme = spec.split("://", 1)[0].split("+", 1)[0].lower()
    if scheme not in RDB_SCHEMES:
        raise SkipnasError(f"--storage {spec}: unknown scheme {scheme!r}; {_EXAMPLES}")
    engine_kwargs: dict[str, Any] = {}
    database = None
    if scheme == "sqlite":
        database = _sqlite_database(spec)
        if database is not None:
            _check_parent(spec, database, runs_dir)
        # several workers on one file: wait for the lock instead of failing at once
        engine_kwargs["connect_args"] = {"timeout": 60}
    else:
        engine_kwargs["pool_pre_ping"] = True
    kwargs: dict[str, Any] = {}
    if heartbeat_seconds is not None:
        from skipnas.study.trials import retry_stale_trial

        kwargs.update(
            heartbeat_interval=heartbeat_seconds,
            grace_period=2 * heartbeat_seconds,
            heartbeat_stale_trial_callback=retry_stale_trial,
        )
    try:
        with warnings.catch_warnings(), _folder_lock(database.parent if database is not None else None):
            # heartbeats are marked experimental; they are what we rely on
            warnings.simplefilter("ignore", ExperimentalWarning)
            return _rdb_storage_once_created(spec, engine_kwargs, kwargs)
    except ImportError as exc:
        raise SkipnasError(f"--storage {spec}: the database driver is missing ({exc.name}); for PostgreSQL: pip install 'psycopg[binary]'") from None
    except Exception as exc:  # sqlalchemy raises OperationalError, ArgumentError, ... for a wrong URL
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else exc.__class__.__name__
        raise SkipnasError(f"--storage {spec}: cannot connect ({reason}); check the URL, {_EXAMPLES}") from None


def _rdb_storage_once_created(spec: str, engine_kwargs: dict[str, Any], kwargs: dict[str, Any], attempts: int = 4) -> Any:
    """RDBStorage, trying again where another worker was creating the same database's tables at that
    moment (a server database has no file to lock): the next try finds the tables made."""
    from optuna.storages import RDBStorage
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    for attempt in range(1, attempts):
        try:
            return RDBStorage(spec, engine_kwargs=engine_kwargs, **kwargs)
        except (IntegrityError, ProgrammingError):
            time.sleep(0.5 * attempt)
    return RDBStorage(spec, engine_kwargs=engine_kwargs, **kwargs)


def _sqlite_database(spec: str) -> Path | None:
    """The database file of an SQLite URL, or None for an in-memory one."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        database = make_url(spec).database
    except ArgumentError:
        raise SkipnasError(f"--storage {spec}: not a valid URL; {_EXAMPLES}") from None
    return Path(database) if database and database != ":memory:" else None


def _check_parent(spec: str, path: Path, runs_dir: Path) -> None:
    """A storage in a folder that does not exist is refused (a typo would otherwise create folders
    anywhere), unless that folder is ``runs_dir``, which the search creates anyway."""
    parent = path.parent
    if not parent.is_dir() and parent.resolve() == runs_dir.resolve():
        parent.mkdir(parents=True, exist_ok=True)
    if not parent.is_dir():
        raise SkipnasError(f"--storage {spec}: folder {parent} does not exist; create it (mkdir -p {parent}) or check the path")


def _journal_storage(spec: str, runs_dir: Path) -> Any:
    """Optuna's journal file storage at ``spec``, after checking that the file is one."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    path = Path(spec)
    if path.is_dir():
        raise SkipnasError(f"--storage {spec}: is a folder; give a journal file path or an RDB URL ({_EXAMPLES})")
    if path.suffix.lower() in (".db", ".sqlite", ".sqlite3"):
        raise SkipnasError(f"--storage {spec}: an SQLite file needs a URL: sqlite:///{spec}")
    _check_parent(spec, path, runs_dir)
    not_journal = f"--storage {spec}: not an Optuna journal file; give a journal path or an RDB URL ({_EXAMPLES})"
    if path.is_file():
        with path.open("rb") as handle:
            first = handle.readline(1 << 20)
        if first.startswith(_SQLITE_MAGIC):
            raise SkipnasError(f"--storage {spec}: is an SQLite database, not a journal file; give --storage sqlite:///{spec}")
        try:
            op = json.loads(first) if first.strip() else {"op_code": 0, "worker_id": ""}
        except ValueError:
            op = None
        # every journal line is one operation; check the first before Optuna replays (and appends to) the file
        if not (isinstance(op, dict) and isinstance(op.get("op_code"), int) and "worker_id" in op):
            raise SkipnasError(not_journal)
    try:
        return JournalStorage(JournalFileBackend(os.fspath(path)))
    except OSError as exc:
        raise SkipnasError(f"--storage {spec}: cannot open the journal file ({exc.strerror}); check the path") from None
    except Exception:  # replaying a damaged journal raises KeyError, TypeError, ValueError, AssertionError, ...
        raise SkipnasError(not_journal) from None


@contextmanager
def _folder_lock(folder: Path | None) -> Iterator[None]:
    """Holds an exclusive lock on ``folder`` (POSIX): two workers creating a new SQLite file at the same
    moment would otherwise both create its tables, and one fail on Optuna's version row."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock, the race stays
        fcntl = None  # type: ignore[assignment]
    descriptor = None
    if folder is not None and fcntl is not None:
        try:
            descriptor = os.open(folder, os.O_RDONLY)
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        except OSError:  # an unreadable folder: SQLite then names the problem
            if descriptor is not None:
                os.close(descriptor)
            descriptor = None
    try:
        yield
    finally:
        if descriptor is not None:
            os.close(descriptor)  # closing releases the lock


def fail_stale_trials(study: Any) -> None:
    """Fail the running trials whose worker stopped sending heartbeats, and queue them again where
    :func:`skipnas.study.trials.should_retry` says so; nothing without heartbeats (journal storage)."""
    import optuna
    from optuna.exceptions import ExperimentalWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def open_existing_storage(spec: str | None) -> tuple[Any, str]:
    """The storage and how to name it; a missing SQLite or journal file is an error, not a new empty one."""
    label = spec or default_storage_url()
    if label.startswith("sqlite:///"):
        database = label.split(":///", 1)[1].split("?", 1)[0]
        if database and database != ":memory:" and not Path(database).is_file():
            hint = "give --storage URL" if spec is None else "check the path"
            raise SkipnasError(f"{database}: no search storage there; run `skipnas search` first or {hint}")
    elif not is_rdb_url(label):
        path = Path(label)
        if not path.is_file():
            raise SkipnasError(f"--storage {label}: no such journal file; check the path or run `skipnas search --storage {label}` first")
        with path.open("rb") as handle:
            if handle.read(len(_SQLITE_MAGIC)) == _SQLITE_MAGIC:
                raise SkipnasError(f"--storage {label}: is an SQLite database, not a journal file; give --storage sqlite:///{label}")
    return make_storage(spec), label
