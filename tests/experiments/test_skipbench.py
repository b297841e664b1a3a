"""SkipBench: the strategies' replay on a hand-made table, and a run that resumes from its table."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]


def _table(truth: dict[str, float], val: dict[str, list[float]] | None = None) -> tuple[dict[str, list[float]], dict[str, float]]:
    return (val or {genome: [value] for genome, value in truth.items()}), truth


# three genes: the truth is the number of links on, so 000 is best
TRUTH = {f"{i:03b}": float(f"{i:03b}".count("1")) for i in range(8)}


@pytest.mark.parametrize("strategy", ["random", "tpe", "tpe-univariate", "nsga2"])
def test_with_exact_queries_the_regret_falls_to_zero_and_never_rises(load_experiment, strategy: str) -> None:
    module = load_experiment("skipbench")
    queries, truth = _table(TRUTH)
    regret = module.replay(queries, truth, strategy, trials=60, repetitions=4)
    assert regret.shape == (4, 60) and (regret >= 0).all()
    assert (np.diff(regret, axis=1) <= 0).all()  # the choice only changes to a better query, which is better in truth
    assert (regret[:, -1] == 0).all()


def test_the_choice_follows_the_queries_and_the_regret_the_truth(load_experiment) -> None:
    module = load_experiment("skipbench")
    # validation ranks 111 first, the test truth ranks it last: a search that believes val ends 3 links off
    val = {genome: [-value] for genome, value in TRUTH.items()}
    regret = module.replay(*_table(TRUTH, val), "random", trials=60, repetitions=3)
    assert (regret[:, -1] == 3.0).all()
    # maximising (Dice): the best is the largest truth
    regret = module.replay(*_table(TRUTH), "random", trials=60, repetitions=3, maximize=True)
    assert (regret[:, -1] == 0).all() and (regret >= 0).all()


def test_a_query_draws_one_seed_of_the_genome(load_experiment) -> None:
    module = load_experiment("skipbench")
    # every genome but 000 looks best on one seed of two: over repetitions the first choice varies
    val = {genome: ([5.0, 5.0] if genome == "000" else [0.0, 9.0]) for genome in TRUTH}
    first = module.replay(*_table(TRUTH, val), "random", trials=1, repetitions=40)[:, 0]
    assert set(np.unique(first)) <= {0.0, 1.0, 2.0, 3.0} and len(np.unique(first)) > 1


def test_lookup_reads_val_queries_and_test_means(load_experiment) -> None:
    module = load_experiment("skipbench")
    rows = [{"genome": "01", "val_dice": "0.5", "test_dice": "0.6"}, {"genome": "01", "val_dice": "0.7", "test_dice": "0.8"}]
    queries, truth = module.load_lookup(rows, "dice")
    assert queries == {"01": [0.5, 0.7]} and truth == {"01": pytest.approx(0.7)}


def test_a_run_resumes_from_its_table_and_trains_only_the_missing_genomes(tmp_path: Path) -> None:
    out = tmp_path / "bench.csv"
    kept = [f"{i:04b}" for i in range(16) if i not in (5, 10)]  # 0101 and 1010 are missing
    fields = ["genome", "topology", "seed", "trial", "steps", "train_seconds", "params", "flops", "predicted_peak_mib",
              "val_dice", "val_count_mae", "val_relative_count_error", "test_dice", "test_count_mae",
              "test_relative_count_error", "test_object_precision", "test_object_recall"]
    with out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        for genome in kept:
            writer.writerow({**dict.fromkeys(fields, "0.5"), "genome": genome, "topology": "earlier", "seed": "0"})
    command = [sys.executable, str(REPO / "experiments" / "skipbench.py"), "run", "--smoke", "--runs-dir", str(tmp_path / "runs"), "--out", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    # restored after the first trial (the queued standard baseline, whose genome the table holds)
    assert "seed 0: 13 genome(s) restored" in result.stdout
    with out.open() as handle:
        rows = list(csv.DictReader(line for line in handle if not line.startswith("#")))
    assert sorted(row["genome"] for row in rows) == [f"{i:04b}" for i in range(16)]
    trained = {row["genome"]: row for row in rows if row["topology"] != "earlier"}
    assert set(trained) == {"0101", "1010"}  # the earlier rows stay as they were; the baselines' rows are not repeated
    for row in trained.values():
        assert row["steps"] == "6" and 0 <= float(row["test_dice"]) <= 1 and float(row["test_count_mae"]) >= 0
    assert "6 steps per run" in out.read_text().splitlines()[0]
