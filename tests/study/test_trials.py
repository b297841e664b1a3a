"""Which trials count toward --trials, and which unfinished trials are queued again (no training here)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import optuna
import pytest

from skipnas.study.settings import BASELINE_ATTR, SURPLUS_ATTR
from skipnas.study.storage import fail_stale_trials, make_storage
from skipnas.study.trials import (
    BASELINE_ATTEMPTS,
    INTERRUPTED,
    counted_trials,
    retry,
    retry_failed_trial,
    should_retry,
)

State = optuna.trial.TrialState
# study.ask() on a storage with heartbeats: these tests stand in for optimize's heartbeat thread
ASK_WITH_HEARTBEAT = pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used")
PARAMS = {"skip_e0_d1": 1}


def _study() -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    return optuna.create_study(storage=optuna.storages.InMemoryStorage())


def _failed(
    study: optuna.Study, reason: str | None, baseline: str | None = "standard", user: dict[str, Any] | None = None, **system: Any
) -> optuna.trial.FrozenTrial:
    """A failed trial as Optuna leaves it: ``reason`` is the objective's fail_reason (None: its worker died)."""
    user_attrs: dict[str, Any] = {**(user or {}), **({} if baseline is None else {BASELINE_ATTR: baseline})}
    if reason is not None:
        user_attrs["fail_reason"] = reason
    study.add_trial(
        optuna.trial.create_trial(
            state=State.FAIL, params=PARAMS, distributions={"skip_e0_d1": optuna.distributions.CategoricalDistribution([0, 1])},
            user_attrs=user_attrs, system_attrs={"fixed_params": PARAMS, **system},
        )
    )
    return study.get_trials(deepcopy=False)[-1]


def _run_waiting(study: optuna.Study, fail_reason: str | None) -> optuna.trial.FrozenTrial:
    """Pop the queued trial and fail it the way a run would (None: as a dead worker's stale trial)."""
    trial = study.ask()
    assert trial.suggest_categorical("skip_e0_d1", [0, 1]) == 1  # the queued parameters, not a new draw
    if fail_reason is not None:
        trial.set_user_attr("fail_reason", fail_reason)
    study.tell(trial, state=State.FAIL)
    return study.get_trials(deepcopy=False)[trial.number]


def test_an_interrupted_baseline_is_queued_again_and_stops_counting() -> None:
    study = _study()
    first = _failed(study, INTERRUPTED)
    assert counted_trials(study) == 0  # stopped by the user: it does not count
    retry_failed_trial(study, first)
    queued = study.get_trials(deepcopy=False)[-1]
    assert queued.state == State.WAITING and queued.user_attrs == {BASELINE_ATTR: "standard"}
    assert queued.system_attrs["fixed_params"] == PARAMS and queued.system_attrs["retry_history"] == [first.number]
    assert counted_trials(study) == 0  # the queued retry counts once it runs
    errored = _failed(study, "RuntimeError: loss is NaN", baseline="reverse")
    assert counted_trials(study) == 1
    retry_failed_trial(study, errored)
    assert counted_trials(study) == 0  # the failed attempt no longer counts; its retry will


def test_a_baseline_runs_at_most_three_times_and_once_more_after_its_own_error() -> None:
    study = _study()
    attempt = _failed(study, None)  # killed
    for expected_retry in (True, True):
        assert should_retry(study, attempt, stale=True) is expected_retry
        retry(study, attempt)
        attempt = _run_waiting(study, None)
    assert len(attempt.system_attrs["retry_history"]) + 1 == BASELINE_ATTEMPTS
    assert not should_retry(study, attempt, stale=True)  # a baseline that kills its worker every time stops
    assert counted_trials(study) == 1  # the two retried attempts do not count

    errors = _study()
    first = _failed(errors, "RuntimeError: loss is NaN")
    assert should_retry(errors, first, stale=False)
    retry(errors, first)
    second = _run_waiting(errors, "RuntimeError: loss is NaN")
    assert not should_retry(errors, second, stale=False)  # run again once after an error, not twice


def test_other_trials_run_again_only_when_their_worker_died_and_only_once() -> None:
    study = _study()
    interrupted = _failed(study, INTERRUPTED, baseline=None)
    assert not should_retry(study, interrupted, stale=False)
    killed = _failed(study, None, baseline=None)
    assert should_retry(study, killed, stale=True)
    retry(study, killed)
    again = _run_waiting(study, None)
    assert not should_retry(study, again, stale=True)
    surplus = _failed(study, "StudyFull: full", user={SURPLUS_ATTR: True})  # a baseline started after the study was full
    assert not should_retry(study, surplus, stale=False)


def test_a_sampled_trial_stopped_by_ctrl_c_does_not_count_but_one_that_failed_does() -> None:
    study = _study()
    _failed(study, INTERRUPTED, baseline=None)
    assert counted_trials(study) == 0  # the resumed search draws another candidate in its place
    _failed(study, "RuntimeError: loss is NaN", baseline=None)
    _failed(study, None, baseline=None)  # a dead worker's trial, not retried
    assert counted_trials(study) == 2


def test_counting_follows_a_chain_of_retries() -> None:
    """Optuna's own retry callback keeps ``failed_trial`` at the first attempt: later attempts are in the history."""
    study = _study()
    _failed(study, None)
    _failed(study, None, failed_trial=0, retry_history=[0])
    _failed(study, None, failed_trial=0, retry_history=[0, 1])
    assert counted_trials(study) == 1


@ASK_WITH_HEARTBEAT
def test_the_stale_check_fails_a_dead_workers_trial_and_queues_it_again(tmp_path: Path) -> None:
    storage = make_storage(f"sqlite:///{tmp_path / 's.db'}", heartbeat_seconds=1)
    study = optuna.create_study(storage=storage, study_name="stale")
    study.enqueue_trial(PARAMS, user_attrs={BASELINE_ATTR: "standard"})
    trial = study.ask()
    trial.suggest_categorical("skip_e0_d1", [0, 1])
    storage.record_heartbeat(trial._trial_id)  # then the worker "dies": no more heartbeats
    assert counted_trials(study) == 1
    time.sleep(3.2)  # past the grace period (2 heartbeats; SQLite's clock has whole seconds)
    fail_stale_trials(study)
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [State.FAIL, State.WAITING]
    assert trials[1].user_attrs[BASELINE_ATTR] == "standard" and trials[1].system_attrs["retry_history"] == [0]
    assert counted_trials(study) == 0


@ASK_WITH_HEARTBEAT
@pytest.mark.parametrize("heartbeat", [None, 1])
def test_the_stale_check_does_nothing_to_live_or_heartbeat_less_trials(tmp_path: Path, heartbeat: int | None) -> None:
    study = optuna.create_study(storage=make_storage(f"sqlite:///{tmp_path / 's.db'}", heartbeat_seconds=heartbeat))
    trial = study.ask()
    if heartbeat is not None:
        study._storage.record_heartbeat(trial._trial_id)
    fail_stale_trials(study)
    assert [t.state for t in study.get_trials(deepcopy=False)] == [State.RUNNING]
