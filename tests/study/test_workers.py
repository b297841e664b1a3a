"""Several workers on one study: PostgreSQL, the journal file storage, and a worker killed mid-trial."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest

from skipnas.study.settings import BASELINES
from skipnas.study.storage import make_storage

PG_URL = os.environ.get("SKIPNAS_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def _postgres_answers() -> str | None:
    """None when the server answers, else why not."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install 'psycopg[binary]')"
    try:
        with psycopg.connect(PG_URL.replace("postgresql+psycopg", "postgresql"), connect_timeout=3):
            return None
    except Exception as exc:
        return f"no PostgreSQL server answers at {PG_URL} ({exc.__class__.__name__})"


def _search(tiny_dataset: Path, runs: Path, storage: str, study: str, trials: int, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "skipnas", "search", "--data", str(tiny_dataset), "--trials", str(trials),
        "--trial-seconds", "1", "--synthetic", "4", "--device", "cpu", "--runs-dir", str(runs),
        "--storage", storage, "--study", study, "--quiet", *extra,
    ]


def _check_study(storage: str, study_name: str, trials: int) -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name=study_name, storage=make_storage(storage))
    all_trials = study.get_trials(deepcopy=False)
    finished = [t for t in all_trials if t.state in FINISHED]
    assert len(finished) == trials == len({t.number for t in finished})
    surplus = [t for t in all_trials if t.user_attrs.get("surplus")]
    assert len(all_trials) == trials + len(surplus)  # nothing else: no trial lost, none run twice
    assert all(t.state == optuna.trial.TrialState.FAIL for t in surplus)
    baselines = sorted(t.user_attrs["baseline"] for t in all_trials if "baseline" in t.user_attrs)
    assert baselines == sorted(BASELINES)
    return all_trials


@pytest.mark.parametrize("backend", ["postgresql", "journal"])
def test_three_workers_share_one_study(backend: str, tiny_dataset: Path, tmp_path: Path) -> None:
    if backend == "postgresql":
        reason = _postgres_answers()
        if reason:
            pytest.skip(reason)
        storage = PG_URL
    else:
        storage = str(tmp_path / "journal.log")
    study_name = f"workers-{backend}-{uuid.uuid4().hex[:8]}"
    result = subprocess.run(
        _search(tiny_dataset, tmp_path / "runs", storage, study_name, 12, "--jobs", "3"),
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stderr
    try:
        _check_study(storage, study_name, 12)
    finally:
        if backend == "postgresql":
            optuna.delete_study(study_name=study_name, storage=storage)


def test_a_killed_worker_trial_is_failed_and_retried(tiny_dataset: Path, tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    command = _search(tiny_dataset, tmp_path / "runs", storage, "killed", 7, "--heartbeat-seconds", "1")
    command[command.index("--trial-seconds") + 1] = "3"
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    victim = None
    try:
        deadline = time.monotonic() + 120
        while victim is None and time.monotonic() < deadline:
            time.sleep(0.3)
            try:
                study = optuna.load_study(study_name="killed", storage=storage)
            except (KeyError, Exception):
                continue
            finished = [t for t in study.trials if t.state in FINISHED]
            running = [t for t in study.trials if t.state == optuna.trial.TrialState.RUNNING and "predicted_peak_mib" in t.user_attrs]
            if finished and running:  # kill it inside training, with finished work to keep
                victim = running[0].number
                before = {t.number: t.state for t in finished}
        assert victim is not None, "no trial reached training"
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=30)
    time.sleep(2.5)  # past the grace period (2 heartbeats)
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    trials = optuna.load_study(study_name="killed", storage=storage).trials
    assert trials[victim].state == optuna.trial.TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == victim]
    assert len(retries) == 1 and retries[0].state in FINISHED
    assert retries[0].params == trials[victim].params
    for number, state in before.items():
        assert trials[number].state == state  # finished work survives
    assert sum(t.state in FINISHED for t in trials) == 7
