"""Trials per hour for 1, 2 and 4 CPU worker processes on one machine, sharing one SQLite study.

    python experiments/bench_workers.py                 # 12 trials of 5 s per worker count, demo data
    python experiments/bench_workers.py --smoke         # 1 and 2 workers, 3 trials of 1 s

Trials have wall-clock budgets, so more workers finish more trials per hour while each trial gets a
share of the cores: the optimisation steps per trial show what a trial really trained. Expect
saturation at the number of cores.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import optuna

from skipnas.fileio import write_csv_atomic
from skipnas.runtime.device import describe_machine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--trial-seconds", type=float, default=5.0)
    parser.add_argument("--data", default="demo")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("experiments/results/workers.csv"))
    args = parser.parse_args()
    if args.smoke:
        args.workers, args.trials, args.trial_seconds = [1, 2], 3, 1.0

    from skipnas import search

    rows = []
    for jobs in args.workers:
        with tempfile.TemporaryDirectory() as runs:
            started = time.perf_counter()
            result = search(
                trials=args.trials, data=args.data, runs_dir=Path(runs), trial_seconds=args.trial_seconds, jobs=jobs,
                synthetic_images=8, pruner="none", study=f"workers-{jobs}",
            )
            wall = time.perf_counter() - started
            trials = [t for t in result.study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
            steps = [t.user_attrs["steps"] for t in trials if "steps" in t.user_attrs]
        rows.append(
            {
                "workers": jobs,
                "trials": len(trials),
                "wall_s": round(wall, 1),
                "trials_per_hour": round(len(trials) / wall * 3600, 1),
                "median_steps_per_trial": statistics.median(steps) if steps else "",
            }
        )
        print(rows[-1], flush=True)
    comment = (
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {describe_machine()}, "
        f"{args.trials} trials of {args.trial_seconds:g} s per worker count, demo data, SQLite"
    )
    write_csv_atomic(args.out, rows, comment=comment)


if __name__ == "__main__":
    main()
