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
    regret, trained = module.replay(queries, truth, strategy, trials=60, repetitions=4)
    assert regret.shape == trained.shape == (4, 60) and (regret >= 0).all()
    # each genome trains once: a repeated query reuses its result
    assert (trained[:, 0] == 1).all() and (np.diff(trained, axis=1) >= 0).all() and (trained <= 8).all()
    assert (np.diff(regret, axis=1) <= 0).all()  # the choice only changes to a better query, which is better in truth
    assert (regret[:, -1] == 0).all()


def test_the_univariate_tpe_is_another_strategy_than_the_searchs(load_experiment) -> None:
    # Optuna 5's default TPE is multivariate, as the search's: the univariate one must be asked for
    module = load_experiment("skipbench")
    rng = np.random.default_rng(3)
    truth = {f"{i:05b}": float(rng.random()) for i in range(32)}
    queries, _ = _table(truth)
    _, multivariate = module.replay(queries, truth, "tpe", trials=30, repetitions=2)
    _, univariate = module.replay(queries, truth, "tpe-univariate", trials=30, repetitions=2)
    assert (multivariate[:, :10] == univariate[:, :10]).all()  # the same 10 random trials first
    assert (multivariate != univariate).any()


def test_the_choice_follows_the_queries_and_the_regret_the_truth(load_experiment) -> None:
    module = load_experiment("skipbench")
    # validation ranks 111 first, the test truth ranks it last: a search that believes val ends 3 links off
    val = {genome: [-value] for genome, value in TRUTH.items()}
    regret, _ = module.replay(*_table(TRUTH, val), "random", trials=60, repetitions=3)
    assert (regret[:, -1] == 3.0).all()
    # maximising (Dice): the best is the largest truth
    regret, _ = module.replay(*_table(TRUTH), "random", trials=60, repetitions=3, maximize=True)
    assert (regret[:, -1] == 0).all() and (regret >= 0).all()


def test_a_query_draws_one_seed_of_the_genome(load_experiment) -> None:
    module = load_experiment("skipbench")
    # every genome but 000 looks best on one seed of two: over repetitions the first choice varies
    val = {genome: ([5.0, 5.0] if genome == "000" else [0.0, 9.0]) for genome in TRUTH}
    first = module.replay(*_table(TRUTH, val), "random", trials=1, repetitions=40)[0][:, 0]
    assert set(np.unique(first)) <= {0.0, 1.0, 2.0, 3.0} and len(np.unique(first)) > 1


def test_the_queued_genomes_come_first_and_a_repeat_reuses_the_first_draw(load_experiment) -> None:
    module = load_experiment("skipbench")
    # 000 is the best in truth; queued first, it is chosen at the first trial and never left
    regret, trained = module.replay(*_table(TRUTH), "tpe", trials=5, repetitions=3, first=["000", "111"])
    assert (regret[:, 0] == 0).all() and (trained[:, 1] == 2).all()


def test_a_repeated_genome_reuses_its_first_draw(load_experiment, monkeypatch: pytest.MonkeyPatch) -> None:
    module = load_experiment("skipbench")

    class Draws:  # the seed drawn for each new genome: seed 1 first, then seed 0
        def __init__(self, *args: object) -> None:
            self.draws = iter([1, 0, 0, 0])

        def integers(self, high: int) -> int:
            return next(self.draws)

    monkeypatch.setattr(module.np.random, "default_rng", Draws)
    # 111 reads 9 on seed 1, 0 on seed 0; 000 reads 4. Queried 111, 111, 000: reused, 111 stays at 9 and
    # 000 is chosen (regret 0); drawn again, 111 would read 0 and stay chosen (regret 3)
    val = {genome: ([0.0, 9.0] if genome == "111" else [4.0, 4.0]) for genome in TRUTH}
    regret, trained = module.replay(*_table(TRUTH, val), "random", trials=3, repetitions=1, first=["111", "111", "000"])
    assert trained.tolist() == [[1, 1, 2]] and regret.tolist() == [[3.0, 3.0, 0.0]]


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
    _write_rows(out, [{**dict.fromkeys(fields, "0.5"), "genome": genome, "topology": "earlier", "seed": "0"} for genome in kept])
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
    # only the first trial (the queued standard baseline) and the two missing genomes trained: the other
    # queued baselines found their genomes among the restored trials and reused them
    import optuna

    study = optuna.load_study(study_name="skipbench-skipbench-smoke-steps6-seed0", storage=f"sqlite:///{tmp_path / 'runs' / 'skipnas.db'}")
    ran = [t for t in study.trials if "restored_from_table" not in t.user_attrs and "duplicate_of" not in t.user_attrs]
    assert sorted(t.user_attrs["topology"] for t in ran) == ["custom", "custom", "standard"]
    assert sum("duplicate_of" in t.user_attrs and "baseline" in t.user_attrs for t in study.trials) == 4
    assert "6 steps per run" in out.read_text().splitlines()[0]


# analysis: a hand-made depth-2 table (4 links, 16 genomes, 2 seeds): the first link adds 0.1 to the
# relative count error, nothing else matters, and the two seeds sit DELTA either side of the mean
DELTA = 0.01


def _analysis_rows() -> list[dict[str, str]]:
    rows = []
    for number in range(16):
        genome = f"{number:04b}"
        mean = 0.1 + 0.1 * int(genome[0]) + 0.001 * number  # a small spread, so the ranking is strict
        for seed, offset in ((0, -DELTA), (1, DELTA)):
            test = {"test_relative_count_error": str(mean + offset), "test_dice": str(0.9 - mean - offset)}
            rows.append({"genome": genome, "seed": str(seed), **test, **{name.replace("test", "val"): value for name, value in test.items()}})
    return rows


@pytest.fixture
def depth2(load_experiment, tmp_path: Path):
    module = load_experiment("skipbench")
    space = tmp_path / "space.toml"
    space.write_text(module.SMOKE_SPACE)
    from skipnas.space import load_space

    return module, load_space(str(space)), space


def _write_rows(path: Path, rows: list[dict[str, str]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_the_distribution_ranks_genomes_and_counts_those_within_seed_noise(depth2) -> None:
    module, space, _ = depth2
    info = module._distribution_info(_analysis_rows(), "relative_count_error", space.searchable_links(), space.depth)
    assert info["genomes"][0] == "0000" and info["means"][0] == pytest.approx(0.1)
    assert info["runs"] == 32 and info["space_size"] == 16 and info["means"] == sorted(info["means"])
    assert info["noise_sd"] == pytest.approx(DELTA * np.sqrt(2))  # the sample SD of two values DELTA either side
    # within noise: a gap of at most 1.96 * SD * sqrt(1/2 + 1/2) = 0.0277, i.e. genomes 0000 to 0111 (gaps 0 to 0.007)
    assert info["within_noise"] == 8
    # the baselines by their skip matrices: standard links e0->d0 and e1->d1 (genes 1 and 4: 1001)
    assert info["baselines"]["standard"]["genome"] == "1001" and info["baselines"]["none"] == {"genome": "0000", "rank": 1, "mean": pytest.approx(0.1)}
    assert info["baselines"]["standard"]["rank"] == 10  # after the eight 0xxx genomes and 1000
    assert info["seed_agreement"] == pytest.approx(1.0) and info["val_test_agreement"] == pytest.approx(1.0)
    dice = module._distribution_info(_analysis_rows(), "dice", space.searchable_links(), space.depth)
    assert dice["maximize"] and dice["genomes"][0] == "0000"  # Dice is 0.9 - error: the highest first


def test_link_effects_find_the_one_link_that_matters(depth2) -> None:
    module, space, _ = depth2
    info = module._link_effects_info(_analysis_rows(), "relative_count_error", space.searchable_links())
    assert info["params"] == ["skip_e0_d0", "skip_e0_d1", "skip_e1_d0", "skip_e1_d1"]
    assert info["effects"][0] == pytest.approx(0.1 + 0.001 * 8)  # the link, plus the spread's share (numbers 8-15 against 0-7)
    assert all(abs(effect) < 0.01 for effect in info["effects"][1:])
    assert info["halfwidths"][0] > 0
    importance = info["importance"]
    assert importance["params"][0] == "skip_e0_d0" and importance["importances"][0] > 0.9


def test_regret_reaches_the_noise_floor_at_the_first_trial_at_or_below_it(load_experiment) -> None:
    module = load_experiment("skipbench")
    curves = {"random": {"trials": [1, 2, 3], "mean": [0.3, 0.05, 0.01], "p5": [0, 0, 0], "p95": [0.5, 0.1, 0.02], "trained": [1, 2, 3]},
              "tpe": {"trials": [1, 2, 3], "mean": [0.3, 0.2, 0.1], "p5": [0, 0, 0], "p95": [0.5, 0.3, 0.2], "trained": [1, 2, 2]}}
    info = module._regret_info(curves, noise_floor=0.05, metric="dice")
    assert info["trials_to_floor"] == {"random": 2, "tpe": None} and info["label"] == "Dice"
    distribution = {"noise_sd": 0.1, "seeds": [2, 2, 1]}
    assert module.noise_floor(distribution) == pytest.approx(1.96 * 0.1)  # two means of 2 seeds: SE of the gap 0.1


def test_analyse_writes_the_summary_and_the_figures(depth2, tmp_path: Path, capsys) -> None:
    module, _, space = depth2
    table, regret = tmp_path / "bench.csv", tmp_path / "regret.csv"
    _write_rows(table, _analysis_rows())
    header = "metric,strategy,trials,mean_regret,p5,p95,mean_trained\n"
    regret.write_text(header + "relative_count_error,random,1,0.2,0.0,0.4,1\nrelative_count_error,random,2,0.01,0.0,0.02,1.5\n")
    dice_regret = tmp_path / "regret_dice.csv"
    dice_regret.write_text(header + "dice,tpe,1,0.05,0.0,0.1,1\n")
    summary, figure = tmp_path / "summary.md", tmp_path / "figure.html"
    module.main(["analyse", str(table), "--space", str(space), "--regret", str(regret), "--regret", str(dice_regret),
                 "--summary", str(summary), "--figure", str(figure)])
    text = summary.read_text()
    assert "| relative count error | 16 of 16 | 32 | 0.014 | 1.00 / 1.00 | 0000: 0.100 | 8 |" in text
    assert "| e0 -> d0 | +0.1080" in text and "| random | 2 | 1.5 | - | - | - | - | 0.0100 (0.0200) |" in text
    # each replay against its own metric's noise floor (Dice's noise here equals the count error's)
    assert "Searching on val Dice: trials until the mean regret in test Dice" in text and "| tpe | not within 1 | - | - | - | - | - | 0.0500 (0.1000) |" in text
    page = figure.read_text()
    assert page.count('class="plotly-graph-div"') == 6  # two distributions, two link figures, two regrets


def test_analyse_refuses_a_replay_of_a_metric_it_does_not_analyse(depth2, tmp_path: Path, capsys) -> None:
    module, _, space = depth2
    table, regret = tmp_path / "bench.csv", tmp_path / "regret.csv"
    _write_rows(table, _analysis_rows())
    regret.write_text("metric,strategy,trials,mean_regret,p5,p95,mean_trained\ncount_mae,random,1,0.2,0.0,0.4,1\n")
    with pytest.raises(SystemExit) as exit_info:
        module.main(["analyse", str(table), "--space", str(space), "--regret", str(regret), "--metrics", "dice"])
    assert exit_info.value.code == 2
    assert "a replay on count_mae; add it to --metrics" in capsys.readouterr().err


def test_analyse_refuses_a_table_of_another_space(depth2, tmp_path: Path, capsys) -> None:
    module, _, _ = depth2
    table = tmp_path / "bench.csv"
    table.write_text("genome,seed,test_relative_count_error,test_dice\n010,0,0.1,0.8\n")
    with pytest.raises(SystemExit) as exit_info:
        module.main(["analyse", str(table)])  # the default space has 9 links
    assert exit_info.value.code == 2
    assert "do not have the 9 links" in capsys.readouterr().err


def test_a_replay_table_names_its_metric_and_analyse_draws_it(depth2, tmp_path: Path, capsys) -> None:
    module, _, space = depth2
    table, regret, summary = tmp_path / "bench.csv", tmp_path / "regret.csv", tmp_path / "summary.md"
    _write_rows(table, _analysis_rows())
    module.main(["replay", str(table), "--space", str(space), "--metric", "dice", "--strategies", "random,tpe",
                 "--trials", "20", "--repetitions", "2", "--out", str(regret)])
    rows = module.read_table(regret)
    assert len(rows) == 2 * 20 and {row["metric"] for row in rows} == {"dice"}
    assert [row["trials"] for row in rows[:3]] == ["1", "2", "3"] and all(float(row["mean_regret"]) >= 0 for row in rows)
    module.main(["analyse", str(table), "--space", str(space), "--regret", str(regret), "--summary", str(summary)])
    text = summary.read_text()
    assert "Searching on val Dice:" in text
    at_10 = next(row for row in rows if row["strategy"] == "tpe" and row["trials"] == "10")
    assert f"{float(at_10['mean_regret']):.4f} ({float(at_10['p95']):.4f})" in text.split("| tpe |")[1].split("\n")[0]


def test_rank_agreement_tells_topology_from_noise(depth2) -> None:
    module, space, _ = depth2
    links, metric = space.searchable_links(), "relative_count_error"
    reversed_seed = _analysis_rows()
    for row in reversed_seed:  # seed 1 ranks the genomes in reverse: the seeds disagree
        if row["seed"] == "1":
            row["test_relative_count_error"] = str(1.0 - float(row["test_relative_count_error"]))
    info = module._distribution_info(reversed_seed, metric, links, space.depth)
    assert info["seed_agreement"] == pytest.approx(-1.0)
    assert info["val_test_agreement"] is None  # every genome's test mean is now the same: nothing to rank
    reversed_val = _analysis_rows()
    for row in reversed_val:  # val ranks the genomes in reverse: choosing on val picks the worst on test
        row["val_relative_count_error"] = str(-float(row["test_relative_count_error"]))
    info = module._distribution_info(reversed_val, metric, links, space.depth)
    assert info["val_test_agreement"] == pytest.approx(-1.0) and info["seed_agreement"] == pytest.approx(1.0)
    assert module.rank_agreement([0.1, 0.2], [0.2, 0.1]) is None
