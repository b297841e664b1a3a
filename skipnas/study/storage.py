"""Optuna storages from what a user types: an RDB URL, or a plain file path for the journal storage."""

from __future__ import annotations

import os
import warnings
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
    silent for twice that (its worker was killed) is failed by the next worker and retried once.

    Connection problems and unknown schemes raise :class:`SkipnasError` naming the URL.
    """
    from optuna.exceptions import ExperimentalWarning
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend

    spec = spec or default_storage_url(runs_dir)
    if not is_rdb_url(spec):
        path = Path(spec)
        if path.is_dir():
            raise SkipnasError(f"--storage {spec}: is a folder; give a journal file path or an RDB URL ({_EXAMPLES})")
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix.lower() in (".db", ".sqlite", ".sqlite3"):
            raise SkipnasError(f"--storage {spec}: an SQLite file needs a URL: sqlite:///{spec}")
        try:
            return JournalStorage(JournalFileBackend(os.fspath(path)))
        except OSError as exc:
            raise SkipnasError(f"--storage {spec}: cannot open the journal file ({exc.strerror}); check the path") from None
        except (UnicodeDecodeError, ValueError):
            raise SkipnasError(f"--storage {spec}: not an Optuna journal file; give a journal path or an RDB URL ({_EXAMPLES})") from None
    scheme = spec.split("://", 1)[0].split("+", 1)[0].lower()
    if scheme not in RDB_SCHEMES:
        raise SkipnasError(f"--storage {spec}: unknown scheme {scheme!r}; {_EXAMPLES}")
    engine_kwargs: dict[str, Any] = {}
    if scheme == "sqlite":
        database = spec.split(":///", 1)[-1]
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        # several workers on one file: wait for the lock instead of failing at once
        engine_kwargs["connect_args"] = {"timeout": 60}
    else:
        engine_kwargs["pool_pre_ping"] = True
    kwargs: dict[str, Any] = {}
    if heartbeat_seconds is not None:
        from optuna.storages import RetryHeartbeatStaleTrialCallback

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            retry = RetryHeartbeatStaleTrialCallback(max_retry=1)
        kwargs.update(
            heartbeat_interval=heartbeat_seconds,
            grace_period=2 * heartbeat_seconds,
            heartbeat_stale_trial_callback=retry,
        )
    try:
        with warnings.catch_warnings():
            # heartbeats and their retry callback are marked experimental; they are what we rely on
            warnings.simplefilter("ignore", ExperimentalWarning)
            return RDBStorage(spec, engine_kwargs=engine_kwargs, **kwargs)
    except ImportError as exc:
        raise SkipnasError(f"--storage {spec}: the database driver is missing ({exc.name}); for PostgreSQL: pip install 'psycopg[binary]'") from None
    except Exception as exc:  # sqlalchemy raises OperationalError, ArgumentError, ... for a wrong URL
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else exc.__class__.__name__
        raise SkipnasError(f"--storage {spec}: cannot connect ({reason}); check the URL, {_EXAMPLES}") from None


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
