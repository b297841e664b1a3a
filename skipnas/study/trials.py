"""Which trials count toward ``--trials``, shared by every worker of a study."""

from __future__ import annotations

import optuna

from skipnas.study.settings import SURPLUS_ATTR


def _counts(trial: optuna.trial.FrozenTrial, retried: set[int]) -> bool:
    """A trial counts toward ``--trials`` unless it was a surplus start or a failure that was retried."""
    if trial.user_attrs.get(SURPLUS_ATTR):
        return False
    return not (trial.state == optuna.trial.TrialState.FAIL and trial.number in retried)


def _retried(trials: list[optuna.trial.FrozenTrial]) -> set[int]:
    return {t.system_attrs["failed_trial"] for t in trials if t.system_attrs.get("failed_trial") is not None}


def counted_trials(study: optuna.Study) -> int:
    """Trials toward ``--trials``: every trial that ran or runs, except surplus starts and failed trials
    that were retried (their retry counts instead)."""
    trials = study.get_trials(deepcopy=False)
    retried = _retried(trials)
    return sum(1 for t in trials if t.state != optuna.trial.TrialState.WAITING and _counts(t, retried))


def counted_before(study: optuna.Study, number: int) -> int:
    """Counted trials numbered below ``number`` (queued ones included: they will run). Optuna numbers
    trials atomically, so workers agree on which trial is the N+1-th."""
    trials = study.get_trials(deepcopy=False)
    retried = _retried(trials)
    return sum(1 for t in trials if t.number < number and _counts(t, retried))
