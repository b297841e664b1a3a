"""Wall time of a default search and the share of each trial that is not training.

    python experiments/bench_search.py                  # skipnas search --trials 50 with defaults (demo data)
    python experiments/bench_search.py --smoke          # 3 trials of 1 s, seconds

Targets: 50 trials with defaults in 20 minutes or less on a 2-core CPU; work that is not training
(cost model, calibration and evaluation, saving, storage and sampler) under 5% of a trial's wall time.
Writes one CSV row per trial (``--out``), the totals in its header line, and prints a summary.
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
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--trial-seconds", type=float, default=None, help="default: the search default")
    parser.add_argument("--data", default="demo")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("experiments/results/search.csv"))
    args = parser.parse_args()

    from skipnas import search

    overrides = {}
    if args.smoke:
        args.trials = 3
        overrides = {"trial_seconds": 1.0, "synthetic_images": 4}
    elif args.trial_seconds is not None:
        overrides["trial_seconds"] = args.trial_seconds
    with tempfile.TemporaryDirectory() as runs:
        started = time.perf_counter()
        result = search(trials=args.trials, data=args.data, runs_dir=Path(runs), **overrides)
        wall = time.perf_counter() - started
        rows = []
        for trial in result.study.get_trials(deepcopy=False):
            if trial.duration is None:
                continue
            duration = trial.duration.total_seconds()
            seconds = trial.user_attrs.get("seconds", {})
            trained = seconds.get("train", 0.0)
            rows.append(
                {
                    "trial": trial.number,
                    "state": trial.state.name.lower(),
                    "topology": trial.user_attrs.get("topology"),
                    "duration_s": round(duration, 3),
                    "train_s": round(trained, 3),
                    "cost_s": seconds.get("cost", ""),
                    "calibrate_evaluate_s": seconds.get("calibrate_evaluate", ""),
                    "save_s": seconds.get("save", ""),
                    "not_training_share": round((duration - trained) / duration, 4) if trained else "",
                }
            )
    trained_rows = [r for r in rows if r["not_training_share"] != ""]
    shares = [r["not_training_share"] for r in trained_rows]
    header = (
        f"# {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {describe_machine()}, "
        f"{args.trials} trials, wall {wall:.1f} s"
    )
    write_csv_atomic(args.out, rows, comment=header.removeprefix("# "))
    states = {s: sum(r["state"] == s for r in rows) for s in {r["state"] for r in rows}}
    print(header)
    print(f"trials by state: {states}")
    if shares:
        total_duration = sum(r["duration_s"] for r in trained_rows)
        total_train = sum(r["train_s"] for r in trained_rows)
        print(
            f"not training: {1 - total_train / total_duration:.1%} of trained trials' wall time "
            f"(median per trial {statistics.median(shares):.1%}, max {max(shares):.1%}); "
            f"search wall time {wall / 60:.1f} min"
        )
    optuna.logging.set_verbosity(optuna.logging.WARNING)


if __name__ == "__main__":
    main()
