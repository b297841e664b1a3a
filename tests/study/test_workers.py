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
from skipnas.study.trials import INTERRUPTED, counted_trials

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def _search(tiny_dataset: Path, runs: Path, storage: str, study: str, trials: int, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "skipnas", "search", "--data", str(tiny_dataset), "--trials", str(trials),
        "--trial-seconds", "1", "--synthetic", "4", "--device", "cpu", "--runs-dir", str(runs),
        "--storage", storage, "--study", study, "--quiet", *extra,
    ]


def _check_study(
    storage: str, study_name: str, trials: int, baselines: tuple[str, ...] = BASELINES
) -> list[optuna.trial.FrozenTrial]:
    study = optuna.load_study(study_name=study_name, storage=make_storage(storage))
    all_trials = study.get_trials(deepcopy=False)
    finished = [t for t in all_trials if t.state in FINISHED]
    assert len(finished) == trials == len({t.number for t in finished})
    surplus = [t for t in all_trials if t.user_attrs.get("surplus")]
    assert len(all_trials) == trials + len(surplus)  # nothing else: no trial lost, none run twice
    assert all(t.state == optuna.trial.TrialState.FAIL for t in surplus)
    assert sorted(t.user_attrs["baseline"] for t in all_trials if "baseline" in t.user_attrs) == sorted(baselines)
    return all_trials


# the journal run takes about 30 s on 2 cores: -m slow
@pytest.mark.parametrize("backend", ["postgresql", pytest.param("journal", marks=pytest.mark.slow)])
def test_three_workers_share_one_study(backend: str, tiny_dataset: Path, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if backend == "postgresql":
        storage = request.getfixturevalue("postgres_url")
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


@pytest.mark.slow  # about 45 s on 2 cores; tests/study/test_trials.py checks the stale rule without workers
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


# every baseline is a distinct candidate at depth 2, and a trial trains for a few seconds at width 4
ALL_BASELINES_SPACE = (Path(__file__).resolve().parents[1] / "fixtures" / "spaces" / "tiny-all.toml").read_text()


def _storage_for(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if backend == "postgresql":
        return request.getfixturevalue("postgres_url")
    return f"sqlite:///{tmp_path / 'study.db'}"


def _baseline_search(tiny_dataset: Path, tmp_path: Path, storage: str, study: str, trials: int) -> list[str]:
    space = tmp_path / "all.toml"
    space.write_text(ALL_BASELINES_SPACE)
    command = _search(
        tiny_dataset, tmp_path / "runs", storage, study, trials, "--space", str(space), "--heartbeat-seconds", "1",
        "--pruner", "none", "--sampler", "random",
    )
    command[command.index("--trial-seconds") + 1] = "3"
    return command


def _stop_in_training(command: list[str], storage: str, study_name: str, sig: int, retry: bool = False) -> int:
    """Run ``command`` and send ``sig`` once a trial (a retried one if ``retry``) is training; its number."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    victim = None
    try:
        deadline = time.monotonic() + 180
        while victim is None and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.3)
            try:
                trials = optuna.load_study(study_name=study_name, storage=storage).get_trials(deepcopy=False)
            except Exception:  # not created yet
                continue
            training = [
                t for t in trials
                if t.state == optuna.trial.TrialState.RUNNING and "predicted_peak_mib" in t.user_attrs
                and bool(t.system_attrs.get("retry_history")) == retry
            ]
            victim = training[0].number if training else None
        assert victim is not None, f"no trial reached training: {process.stderr.read() if process.poll() is not None else ''}"
        time.sleep(0.5)  # inside training
        process.send_signal(sig)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
        process.wait(timeout=30)
    assert "Traceback" not in stderr, stderr
    return victim


def _every_baseline_complete_once(storage: str, study_name: str, trials: int) -> list[optuna.trial.FrozenTrial]:
    all_trials = optuna.load_study(study_name=study_name, storage=storage).get_trials(deepcopy=False)
    assert not [t.number for t in all_trials if t.state in (optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)]
    complete = [t.user_attrs.get("baseline") for t in all_trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert sorted(complete) == sorted(BASELINES[:trials])
    assert counted_trials(optuna.load_study(study_name=study_name, storage=storage)) == trials
    return all_trials


@pytest.mark.slow  # three runs of a worker, two of them killed: about a minute on 2 cores
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_a_worker_killed_twice_mid_baseline_then_run_again_completes_every_baseline(
    backend: str, tiny_dataset: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    storage = _storage_for(backend, tmp_path, request)
    study_name = f"killed-twice-{uuid.uuid4().hex[:8]}"
    command = _baseline_search(tiny_dataset, tmp_path, storage, study_name, len(BASELINES))
    try:
        first = _stop_in_training(command, storage, study_name, signal.SIGKILL)
        time.sleep(2.5)  # past the grace period (2 heartbeats): the next run finds it stale
        # the same baseline again: its retry runs after the other queued baselines, and is killed too
        second = _stop_in_training(command, storage, study_name, signal.SIGKILL, retry=True)
        # at once, inside the grace period: the run waits until the dead trial is found stale, then runs it
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr
        trials = _every_baseline_complete_once(storage, study_name, len(BASELINES))
        assert trials[first].state == trials[second].state == optuna.trial.TrialState.FAIL
        third = next(t for t in trials if t.system_attrs.get("retry_history") == [first, second])
        assert third.state == optuna.trial.TrialState.COMPLETE and third.params == trials[first].params
        assert len(trials) == len(BASELINES) + 2
    finally:
        if backend == "postgresql":
            optuna.delete_study(study_name=study_name, storage=storage)


@pytest.mark.slow  # two runs of a worker: about 25 s on 2 cores
def test_ctrl_c_during_a_baseline_then_run_again_completes_every_baseline(tiny_dataset: Path, tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    command = _baseline_search(tiny_dataset, tmp_path, storage, "interrupted", 2)
    victim = _stop_in_training(command, storage, "interrupted", signal.SIGINT)
    trials = optuna.load_study(study_name="interrupted", storage=storage).trials
    assert trials[victim].state == optuna.trial.TrialState.FAIL and trials[victim].user_attrs["fail_reason"] == INTERRUPTED
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    trials = _every_baseline_complete_once(storage, "interrupted", 2)
    assert len(trials) == 3  # the two baselines --trials 2 has room for, and the interrupted attempt


def test_two_workers_started_at_once_on_a_new_sqlite_file_both_run(tiny_dataset: Path, tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'new.db'}"
    command = _search(tiny_dataset, tmp_path / "runs", storage, "at-once", 2, "--space", str(tmp_path / "all.toml"))
    (tmp_path / "all.toml").write_text(ALL_BASELINES_SPACE)
    processes = [subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    for process in processes:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr
    _check_study(storage, "at-once", 2, baselines=("standard", "semi-dense"))
