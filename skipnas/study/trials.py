"""Which trials count toward ``--trials``, and which unfinished trials run again; shared by every worker."""

from __future__ import annotations

import optuna

from skipnas.study.settings import BASELINE_ATTR, SURPLUS_ATTR

# a baseline that did not finish (Ctrl-C, a killed worker, an error) is queued again up to this many
# attempts in all, and after at most one error of its own: every report compares against the baselines
BASELINE_ATTEMPTS = 3
INTERRUPTED = "interrupted (Ctrl-C)"  # the fail_reason of a trial ended by Ctrl-C
_FAILED_TRIAL = "failed_trial"  # system attrs Optuna's own retry callback uses too
_RETRY_HISTORY = "retry_history"


def _counts(trial: optuna.trial.FrozenTrial, retried: set[int]) -> bool:
    """A trial counts toward ``--trials`` unless it was a surplus start, a failure that was retried, or
    stopped by Ctrl-C (the user's stop says nothing of the candidate: the resumed search draws another)."""
    if trial.user_attrs.get(SURPLUS_ATTR):
        return False
    if trial.state != optuna.trial.TrialState.FAIL:
        return True
    return trial.number not in retried and trial.user_attrs.get("fail_reason") != INTERRUPTED


def _retried(trials: list[optuna.trial.FrozenTrial]) -> set[int]:
    """Numbers of the trials that were queued again: every earlier attempt in a retry's history."""
    retried: set[int] = set()
    for trial in trials:
        retried.update(trial.system_attrs.get(_RETRY_HISTORY) or ())
        if trial.system_attrs.get(_FAILED_TRIAL) is not None:
            retried.add(trial.system_attrs[_FAILED_TRIAL])
    return retried


def counted_trials(study: optuna.Study) -> int:
    """Trials toward ``--trials``: every trial that ran or runs, except surplus starts, failed trials that
    were retried (their retry counts instead) and trials stopped by Ctrl-C."""
    trials = study.get_trials(deepcopy=False)
    retried = _retried(trials)
    return sum(1 for t in trials if t.state != optuna.trial.TrialState.WAITING and _counts(t, retried))


def counted_before(study: optuna.Study, number: int) -> int:
    """Counted trials numbered below ``number`` (queued ones included: they will run). Optuna numbers
    trials atomically, so workers agree on which trial is the N+1-th."""
    trials = study.get_trials(deepcopy=False)
    retried = _retried(trials)
    return sum(1 for t in trials if t.number < number and _counts(t, retried))


def should_retry(study: optuna.Study, trial: optuna.trial.FrozenTrial, stale: bool) -> bool:
    """Whether a failed trial is queued again: a baseline up to :data:`BASELINE_ATTEMPTS` attempts (once
    after an error of its own), any other trial once when its worker died (``stale``)."""
    if trial.user_attrs.get(SURPLUS_ATTR):
        return False
    attempts = [*trial.system_attrs.get(_RETRY_HISTORY, []), trial.number]
    if BASELINE_ATTR not in trial.user_attrs:
        return stale and len(attempts) < 2
    if len(attempts) >= BASELINE_ATTEMPTS:
        return False
    reasons = {t.number: t.user_attrs.get("fail_reason") for t in study.get_trials(deepcopy=False) if t.number in attempts}
    reasons[trial.number] = trial.user_attrs.get("fail_reason")
    errors = sum(1 for reason in reasons.values() if reason is not None and reason != INTERRUPTED)
    return errors < 2


def retry(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """Queue ``trial``'s parameters again; the failed attempt then stops counting toward ``--trials``."""
    history = [*trial.system_attrs.get(_RETRY_HISTORY, []), trial.number]
    fixed = trial.system_attrs.get("fixed_params") or trial.params
    user_attrs = {BASELINE_ATTR: trial.user_attrs[BASELINE_ATTR]} if BASELINE_ATTR in trial.user_attrs else {}
    system_attrs = {"fixed_params": dict(fixed), _FAILED_TRIAL: history[0], _RETRY_HISTORY: history}
    study.add_trial(
        optuna.trial.create_trial(state=optuna.trial.TrialState.WAITING, system_attrs=system_attrs, user_attrs=user_attrs)
    )


def retry_stale_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """The storage's heartbeat callback: Optuna calls it in the one worker that failed the stale trial."""
    if should_retry(study, trial, stale=True):
        retry(study, trial)


def retry_failed_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """After a trial failed in this worker (an error or Ctrl-C): a baseline is queued again."""
    if trial.state == optuna.trial.TrialState.FAIL and should_retry(study, trial, stale=False):
        retry(study, trial)
