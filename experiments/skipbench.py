"""SkipBench: every skip topology of a small space trained at an equal number of steps, and search
strategies replayed on the table.

    # the table: every genome of search_spaces/skipbench-depth3.toml (512), each seed a study
    python experiments/skipbench.py run --data ../shared/data/sem-fibres-shi2022/extracted --steps 150 \
        --seeds 0,1 --out experiments/results/skipbench_depth3.csv
    # search strategies replayed on it: a lookup instead of training
    python experiments/skipbench.py replay experiments/results/skipbench_depth3.csv --trials 100 \
        --repetitions 100 --out experiments/results/skipbench_depth3_regret.csv
    python experiments/skipbench.py run --smoke --out /tmp/skipbench.csv   # the demo, depth 2: 16 genomes, one seed

``run`` trains through the search's own code: one study per training seed, Optuna's
``BruteForceSampler`` over the space's link genes, a step budget (``--steps``), so each run repeats
exactly. After every trial the finished genomes are scored on the test split, and the table (one row
per genome and seed: validation scores, which chose each run's weights and counting, and test
scores) is rewritten atomically. Running it again resumes: the rows of the table go back into the
studies as finished trials, so only the missing genomes train, even where the studies are gone.

``replay`` runs each strategy (random, skipnas's TPE, Optuna's univariate TPE, NSGA-II) against the table: a query
returns the validation score of one seed drawn at random, as a search sees it, and after each trial
the strategy's choice (its best query so far) is scored by its genome's test mean over seeds. The
regret is the gap between that and the best test mean of the table; its mean and 5th-95th
percentiles over the repetitions are written per strategy and trial.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from skipnas.errors import SkipnasError
from skipnas.fileio import write_csv_atomic
from skipnas.genome import Genome
from skipnas.space import SearchSpace, link_param_name, load_space

FIELDS = (
    "genome", "topology", "seed", "trial", "steps", "train_seconds", "params", "flops", "predicted_peak_mib",
    "val_dice", "val_count_mae", "val_relative_count_error",
    "test_dice", "test_count_mae", "test_relative_count_error", "test_object_precision", "test_object_recall",
)
STRATEGIES = ("random", "tpe", "tpe-univariate", "nsga2")
SPACE = Path(__file__).resolve().parents[1] / "search_spaces" / "skipbench-depth3.toml"
SMOKE_SPACE = """name = "skipbench-smoke"
depth = 2
searchable = "all"
fixed = "standard"
tile = 32
batch = 4
budget_mib = 4096

[hyperparameters]
base_width = 4
fusion = "concat"
lr = 1e-3
weight_decay = 1e-5
auxiliary = "none"
"""


def genome_bits(space: SearchSpace, genome: Genome) -> str:
    """The genome's searchable links as a string of 0/1, in the space's link order: the table's key."""
    return "".join(str(genome.skips[i][j]) for i, j in space.searchable_links())


def read_table(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(line for line in handle if not line.startswith("#")))


def restore_trials(study: optuna.Study, space: SearchSpace, rows: Sequence[dict[str, str]]) -> int:
    """Add the table's rows of this study's seed that the study lacks as finished trials, so the
    brute-force sampler skips their genomes; how many were added."""
    done = {
        "".join(str(t.params.get(link_param_name(i, j), "")) for i, j in space.searchable_links())
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    }
    distributions = {link_param_name(i, j): optuna.distributions.IntDistribution(0, 1) for i, j in space.searchable_links()}
    added = 0
    for row in rows:
        if row["genome"] in done:
            continue
        params = {link_param_name(i, j): int(bit) for (i, j), bit in zip(space.searchable_links(), row["genome"], strict=True)}
        study.add_trial(optuna.trial.create_trial(
            params=params, distributions=distributions, value=float(row["val_dice"]),
            user_attrs={"restored_from_table": True, "genome_bits": row["genome"]},
        ))
        done.add(row["genome"])
        added += 1
    return added


def scored_rows(study: optuna.Study, space: SearchSpace, seed: int, known: set[str], score: Callable[[str], dict[str, Any]]) -> list[dict]:
    """A row per finished, trained trial of ``study`` whose genome is not in ``known`` (test scores from ``score(model_dir)``)."""
    rows = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        attrs = trial.user_attrs
        if "genome" not in attrs or "duplicate_of" in attrs or "model_dir" not in attrs:
            continue
        genome = Genome.from_dict(attrs["genome"])
        bits = genome_bits(space, genome)
        if bits in known:
            continue
        test = score(attrs["model_dir"])
        rows.append({
            "genome": bits, "topology": attrs.get("topology", genome.name), "seed": seed, "trial": trial.number,
            "steps": attrs.get("steps"), "train_seconds": attrs.get("train_seconds"), "params": attrs.get("params"),
            "flops": attrs.get("flops"), "predicted_peak_mib": attrs.get("predicted_peak_mib"),
            "val_dice": attrs.get("dice"), "val_count_mae": attrs.get("count_mae"),
            "val_relative_count_error": attrs.get("relative_count_error"),
            **{f"test_{name}": test[name] for name in ("dice", "count_mae", "relative_count_error", "object_precision", "object_recall")},
        })
        known.add(bits)
    return rows


def run(args: argparse.Namespace) -> None:
    from skipnas.candidate import open_dataset
    from skipnas.data.loading import load_labeled
    from skipnas.evaluate import evaluate_images
    from skipnas.runtime.device import describe_machine
    from skipnas.study.driver import search
    from skipnas.study.settings import BASELINES, SearchSettings

    space_path = Path(args.space)
    if args.smoke:
        space_path = args.out.with_suffix(".space.toml")
        space_path.write_text(SMOKE_SPACE)
    space = load_space(str(space_path))
    index = open_dataset(args.data)
    test_images = load_labeled(index.samples("test"))
    if not test_images:
        raise SkipnasError(f"{index.root}: no labelled test images; SkipBench scores every genome on test")
    table = [row for row in read_table(args.out) if row]
    comment = (
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {describe_machine()}, data {index.root}, space {space.name} "
        f"({space.num_candidates()} genomes), {args.steps} steps per run, training seeds {args.seeds}; "
        "val_*: selection scores (val chose each run's weights and counting), test_*: held out"
    )
    for seed in args.seeds:
        own_rows = [row for row in table if int(row["seed"]) == seed]
        known = {row["genome"] for row in own_rows}
        restored = False

        def on_study(study: optuna.Study, seed: int = seed, known: set[str] = known, own_rows: list = own_rows) -> None:
            """After every trial: on the first, put the table's rows back into the study; then score and write new genomes."""
            nonlocal restored
            if not restored:
                restored = True
                added = restore_trials(study, space, own_rows)
                if added:
                    print(f"seed {seed}: {added} genome(s) restored from {args.out}")
            new = scored_rows(study, space, seed, known, lambda folder: evaluate_images(folder, test_images, device=args.device))
            if new:
                table.extend(new)
                write_csv_atomic(args.out, sorted(table, key=lambda r: (int(r["seed"]), r["genome"])), comment=comment)
                print(f"seed {seed}: {len(known)} of {space.num_candidates()} genomes in the table")

        settings = SearchSettings(
            # room for the queued baselines again when the restored table holds their genomes
            data=str(index.root), space=str(space_path), trials=space.num_candidates() + len(BASELINES), trial_steps=args.steps,
            synthetic_images=args.synthetic, sampler="bruteforce", pruner="none", seed=seed, device=args.device,
            runs_dir=args.runs_dir, storage=args.storage, study=f"skipbench-{space.name}-steps{args.steps}-seed{seed}", jobs=args.jobs,
        )
        search(settings, on_study=on_study)


# replay ----------------------------------------------------------------------------------------


def load_lookup(rows: Sequence[dict[str, str]], metric: str) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Per genome: the validation ``metric`` of each seed (what a query sees) and the test mean (the truth)."""
    queries: dict[str, list[float]] = {}
    truth: dict[str, list[float]] = {}
    for row in rows:
        queries.setdefault(row["genome"], []).append(float(row[f"val_{metric}"]))
        truth.setdefault(row["genome"], []).append(float(row[f"test_{metric}"]))
    return queries, {genome: float(np.mean(values)) for genome, values in truth.items()}


def make_strategy(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """``tpe``, ``random`` and ``nsga2`` are skipnas search's own samplers (its TPE multivariate, after
    10 random trials); ``tpe-univariate`` is Optuna's default TPE."""
    from skipnas.study.driver import make_sampler

    if name == "tpe-univariate":
        return optuna.samplers.TPESampler(seed=seed)
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; known: {', '.join(STRATEGIES)}")
    return make_sampler(name, seed)


def replay(
    queries: dict[str, list[float]], truth: dict[str, float], strategy: str, trials: int, repetitions: int,
    maximize: bool = False, seed: int = 0,
) -> np.ndarray:
    """(repetitions, trials) regret of ``strategy`` searching the table: after trial t, the gap between
    the best truth of the table and the truth of the best genome the strategy has queried so far."""
    genes = len(next(iter(queries)))
    sign = -1.0 if maximize else 1.0
    best_truth = min(sign * value for value in truth.values())
    regret = np.zeros((repetitions, trials))
    for repetition in range(repetitions):
        rng = np.random.default_rng([seed, repetition])
        sampler = make_strategy(strategy, seed * 10_000 + repetition)
        study = optuna.create_study(direction="maximize" if maximize else "minimize", sampler=sampler)
        best_seen, chosen = np.inf, None
        for t in range(trials):
            trial = study.ask()
            bits = "".join(str(trial.suggest_int(f"g{g}", 0, 1)) for g in range(genes))
            if bits not in queries:
                raise ValueError(f"genome {bits} is not in the table; replay needs every genome of the space")
            value = queries[bits][rng.integers(len(queries[bits]))]
            study.tell(trial, value)
            if sign * value < best_seen:
                best_seen, chosen = sign * value, bits
            regret[repetition, t] = sign * truth[chosen] - best_truth
    return regret


def replay_table(args: argparse.Namespace) -> None:
    rows = read_table(args.table)
    if not rows:
        raise SkipnasError(f"{args.table}: no rows; run `skipbench.py run` first")
    queries, truth = load_lookup(rows, args.metric)
    genes = len(next(iter(queries)))
    if len(queries) < 2**genes:
        raise SkipnasError(f"{args.table}: {len(queries)} of {2**genes} genomes; finish the table first (replay needs every genome)")
    maximize = args.metric == "dice"
    out_rows = []
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for strategy in args.strategies:
        regret = replay(queries, truth, strategy, args.trials, args.repetitions, maximize)
        for t in range(args.trials):
            column = regret[:, t]
            out_rows.append({"strategy": strategy, "trials": t + 1, "mean_regret": round(float(column.mean()), 5),
                             "p5": round(float(np.percentile(column, 5)), 5), "p95": round(float(np.percentile(column, 95)), 5)})
        print(f"{strategy}: mean regret after {args.trials} trials {regret[:, -1].mean():.4f}")
    comment = (f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {args.table}, metric {args.metric} "
               f"(queries: one seed's val score; truth: test mean over seeds), {args.repetitions} repetitions")
    write_csv_atomic(args.out, out_rows, comment=comment)


def _seeds(text: str) -> list[int]:
    try:
        seeds = sorted({int(value) for value in text.split(",") if value.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"comma-separated whole numbers, got {text!r}") from None
    if not seeds or min(seeds) < 0:
        raise argparse.ArgumentTypeError(f"at least one seed, none negative, got {text!r}")
    return seeds


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    runner = commands.add_parser("run", help="train every genome of the space (resumes)")
    runner.add_argument("--data", default="demo", help="dataset folder with a labelled test split (default the demo)")
    runner.add_argument("--space", default=str(SPACE), help="the search space (default search_spaces/skipbench-depth3.toml)")
    runner.add_argument("--steps", type=int, default=150, help="training steps per run, pretraining included (default 150)")
    runner.add_argument("--seeds", type=_seeds, default=[0, 1], help="training seeds, one study each (default 0,1)")
    runner.add_argument("--synthetic", type=int, default=16, help="semi-synthetic images to pretrain on (default 16)")
    runner.add_argument("--jobs", type=int, default=1, help="worker processes per study (default 1)")
    runner.add_argument("--device", default="cpu", help="where to train (default cpu)")
    runner.add_argument("--storage", default=None, help="Optuna storage (default SQLite under --runs-dir)")
    runner.add_argument("--runs-dir", type=Path, default=Path("runs/skipbench"), help="model folders and the default storage")
    runner.add_argument("--smoke", action="store_true", help="the demo, a depth-2 space (16 genomes), one seed, a few steps")
    runner.add_argument("--out", type=Path, default=Path("experiments/results/skipbench_depth3.csv"))
    replayer = commands.add_parser("replay", help="replay search strategies on a finished table")
    replayer.add_argument("table", type=Path)
    replayer.add_argument("--metric", choices=("relative_count_error", "count_mae", "dice"), default="relative_count_error")
    replayer.add_argument(
        "--strategies", type=lambda text: text.split(","), default=list(STRATEGIES), help=f"comma-separated: {','.join(STRATEGIES)}"
    )
    replayer.add_argument("--trials", type=int, default=100)
    replayer.add_argument("--repetitions", type=int, default=100)
    replayer.add_argument("--out", type=Path, default=Path("experiments/results/skipbench_depth3_regret.csv"))
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("run", "replay", "-h", "--help"):
        argv = ["run", *argv]  # `skipbench.py --smoke` is `skipbench.py run --smoke`
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            if args.smoke:
                args.steps, args.seeds, args.synthetic, args.data = 6, [0], 4, "demo"
            if args.steps < 1:
                parser.error(f"--steps must be at least 1, got {args.steps}")
            run(args)
        else:
            unknown = sorted(set(args.strategies) - set(STRATEGIES))
            if unknown:
                parser.error(f"--strategies: unknown {', '.join(unknown)}; known: {', '.join(STRATEGIES)}")
            replay_table(args)
    except SkipnasError as error:
        print(f"skipbench: error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
