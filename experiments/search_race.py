"""Two or more finished studies side by side on the clock: each one's best val score so far against
the wall time since its first trial started, the time each needed to reach the others' best, and
the confirmed (held-out) scores of its confirmation, where it has one.

    python experiments/search_race.py --storage sqlite:///runs/skipnas.db --study fixed --study hyperband \
        --out experiments/results/search_race.csv

Val scores are selection scores (they chose each study's winner); only the confirmation's are held out.
"""

from __future__ import annotations

import argparse
import csv
import datetime
from pathlib import Path
from typing import Any

import optuna


def race_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """One row per finished trial in the order they finished: seconds since the study's first trial
    started, its state and value (a pruned trial's last reported one), the best completed value so far."""
    trials = [t for t in study.get_trials(deepcopy=False) if t.datetime_complete is not None and t.datetime_start is not None]
    if not trials:
        return []
    start = min(t.datetime_start for t in trials)  # type: ignore[type-var]
    maximise = study.direction == optuna.study.StudyDirection.MAXIMIZE
    best: float | None = None
    rows = []
    for trial in sorted(trials, key=lambda t: t.datetime_complete):  # type: ignore[arg-type, return-value]
        value = trial.value
        if value is None and trial.intermediate_values:
            value = trial.intermediate_values[max(trial.intermediate_values)]
        if trial.state == optuna.trial.TrialState.COMPLETE and trial.value is not None:
            best = trial.value if best is None else (max if maximise else min)(best, trial.value)
        rows.append({
            "study": study.study_name, "trial": trial.number, "state": trial.state.name.lower(),
            "seconds": round((trial.datetime_complete - start).total_seconds(), 1),  # type: ignore[operator]
            "value": value, "best_so_far": best,
            "fine_tuning_steps": max(trial.intermediate_values) if trial.intermediate_values else "",
        })
    return rows


def seconds_to_reach(rows: list[dict[str, Any]], target: float, maximise: bool = True) -> float | None:
    """When the best so far first reached ``target`` (None: never)."""
    for row in rows:
        best = row["best_so_far"]
        if best is not None and (best >= target if maximise else best <= target):
            return float(row["seconds"])
    return None


def confirmed(study: optuna.Study) -> str:
    confirmation = study.user_attrs.get("confirmation")
    if not confirmation:
        return "no confirmation"
    best = min(confirmation["candidates"], key=lambda c: c["relative_count_error"]["mean"])
    verdict = confirmation.get("verdict", {}).get("text", "")
    return (f"best confirmed relative count error {100 * best['relative_count_error']['mean']:.1f} % "
            f"(trial {best['trial']}, {best['topology']}); verdict: {verdict}")


def smoke_storage() -> optuna.storages.InMemoryStorage:
    """Two small studies with known clocks, in memory: the second reaches the first's best sooner."""
    storage = optuna.storages.InMemoryStorage()
    begin = datetime.datetime(2026, 1, 1)
    for name, finishes in (("fixed", [(0.70, 10), (0.80, 20), (0.75, 30)]), ("pruned", [(0.72, 4), (0.81, 9), (0.60, 12)])):
        study = optuna.create_study(storage=storage, study_name=name, direction="maximize")
        elapsed = 0.0
        for value, at in finishes:
            trial = optuna.trial.create_trial(value=value, intermediate_values={105: value})
            trial.datetime_start = begin + datetime.timedelta(seconds=elapsed)
            trial.datetime_complete = begin + datetime.timedelta(seconds=at)
            elapsed = at
            study.add_trial(trial)
    return storage


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--storage", help="Optuna storage URL of the studies")
    parser.add_argument("--study", action="append", default=[], help="a study to race (give two or more)")
    parser.add_argument("--smoke", action="store_true", help="two small made-up studies in memory")
    parser.add_argument("--out", type=Path, default=Path("experiments/results/search_race.csv"))
    args = parser.parse_args(argv)
    storage: Any = smoke_storage() if args.smoke else args.storage
    if args.smoke:
        args.study = ["fixed", "pruned"]
    if len(args.study) < 2 or storage is None:
        parser.error("give --storage and two or more --study (or --smoke)")
    studies = [optuna.load_study(study_name=name, storage=storage) for name in args.study]
    races = {study.study_name: race_rows(study) for study in studies}
    for study in studies:
        rows = races[study.study_name]
        maximise = study.direction == optuna.study.StudyDirection.MAXIMIZE
        final = rows[-1]["best_so_far"] if rows else None
        states = [row["state"] for row in rows]
        print(f"{study.study_name}: {len(rows)} trials ({states.count('complete')} complete, {states.count('pruned')} pruned) "
              f"in {rows[-1]['seconds'] if rows else 0:.0f} s, best val {final}")
        for other in studies:
            if other is study or not races[other.study_name]:
                continue
            target = races[other.study_name][-1]["best_so_far"]
            if target is None:
                continue
            reached = seconds_to_reach(rows, target, maximise)
            print(f"  reached {other.study_name}'s best ({target:.4f}) " + (f"after {reached:.0f} s" if reached is not None else "never"))
        print(f"  {confirmed(study)}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["study", "trial", "state", "seconds", "value", "best_so_far", "fine_tuning_steps"])
        writer.writeheader()
        for rows in races.values():
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
