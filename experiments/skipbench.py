"""SkipBench: every skip topology of a small space trained at an equal number of steps, and search
strategies replayed on the table.

    # the table: every genome of search_spaces/skipbench-depth3.toml (512), each seed a study
    python experiments/skipbench.py run --data ../shared/data/sem-fibres-shi2022/extracted --steps 150 \
        --seeds 0,1 --out experiments/results/skipbench_depth3.csv
    # search strategies replayed on it: a lookup instead of training, searching on val Dice (the
    # search's default objective) and on the val count error
    python experiments/skipbench.py replay experiments/results/skipbench_depth3.csv --metric dice \
        --out experiments/results/skipbench_depth3_regret_dice.csv
    python experiments/skipbench.py replay experiments/results/skipbench_depth3.csv --metric relative_count_error \
        --out experiments/results/skipbench_depth3_regret_count.csv
    python experiments/skipbench.py run --smoke --out /tmp/skipbench.csv   # the demo, depth 2: 16 genomes, one seed
    # figures and tables, of a finished or a partial table
    python experiments/skipbench.py analyse experiments/results/skipbench_depth3.csv \
        --regret experiments/results/skipbench_depth3_regret_dice.csv \
        --regret experiments/results/skipbench_depth3_regret_count.csv \
        --summary experiments/results/skipbench_depth3_summary.md --figure experiments/results/skipbench_depth3.html

``run`` trains through the search's own code: one study per training seed, Optuna's
``BruteForceSampler`` over the space's link genes, a step budget (``--steps``), so each run repeats
exactly. After every trial the finished genomes are scored on the test split, and the table (one row
per genome and seed: validation scores, which chose each run's weights and counting, and test
scores) is rewritten atomically. Running it again resumes: the rows of the table go back into the
studies as finished trials, so only the missing genomes train, even where the studies are gone.

``replay`` runs each strategy (random, skipnas's multivariate TPE, a univariate TPE, NSGA-II) against the table
as ``skipnas search`` runs: the named baselines first, then the strategy's own queries; a query
returns the validation score of one seed drawn at random, as a search sees it, and a genome queried
again reuses its first result without training. After each trial the strategy's choice (its best
query so far) is scored by its genome's test mean over seeds. The regret is the gap between that and
the best test mean of the table; its mean and 5th-95th percentiles over the repetitions, and the
genomes trained so far, are written per strategy and trial.

``analyse`` ranks the genomes by their test mean over seeds, estimates the seed-to-seed noise from
genomes run with several seeds (how many are within noise of the best), places the named
baselines, measures each link's effect (mean with it minus mean without) and its fANOVA importance,
and draws the replay's regret curves against the noise floor.
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
from figure_page import write_figure_page

from skipnas.errors import SkipnasError
from skipnas.fileio import write_csv_atomic, write_text_atomic
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
    brute-force sampler skips their genomes and the queued baselines reuse them; how many were added."""
    done = {
        "".join(str(t.params.get(link_param_name(i, j), "")) for i, j in space.searchable_links())
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    }
    from skipnas.study.objective import candidate_hash

    distributions = {link_param_name(i, j): optuna.distributions.IntDistribution(0, 1) for i, j in space.searchable_links()}
    added = 0
    for row in rows:
        if row["genome"] in done:
            continue
        params = {link_param_name(i, j): int(bit) for (i, j), bit in zip(space.searchable_links(), row["genome"], strict=True)}
        genome, hyperparameters = space.suggest(optuna.trial.FixedTrial(params))
        # the candidate's hash and val scores: a queued baseline of this genome then reuses them instead of training
        attrs = {"restored_from_table": True, "genome_bits": row["genome"], "candidate_hash": candidate_hash(genome, hyperparameters),
                 **{name: float(row[f"val_{name}"]) for name in ("dice", "count_mae", "relative_count_error")}}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions, value=float(row["val_dice"]), user_attrs=attrs))
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
    import torch

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
    threads = args.threads or torch.get_num_threads()
    comment = (
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {describe_machine()}, data {index.root}, space {space.name} "
        f"({space.num_candidates()} genomes), {args.steps} steps per run, training seeds {args.seeds}, {threads} torch threads; "
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
            jobs_per_gpu=args.jobs_per_gpu, threads=threads,
        )
        search(settings, on_study=on_study)


# replay ----------------------------------------------------------------------------------------


def load_lookup(rows: Sequence[dict[str, str]], metric: str) -> tuple[dict[str, list[float]], dict[str, float]]:
    """Per genome: the validation ``metric`` of each seed (what a query sees) and the test mean (the truth)."""
    truth = genome_means(rows, metric, split="test")
    return genome_means(rows, metric, split="val"), {genome: float(np.mean(values)) for genome, values in truth.items()}


def make_strategy(name: str, seed: int) -> optuna.samplers.BaseSampler:
    """``tpe``, ``random`` and ``nsga2`` are skipnas search's own samplers (its TPE multivariate, after
    10 random trials, as Optuna 5's default TPE); ``tpe-univariate`` models each gene on its own, as
    Optuna's TPE did by default before version 5."""
    from skipnas.study.driver import make_sampler

    if name == "tpe-univariate":
        return optuna.samplers.TPESampler(seed=seed, multivariate=False, n_startup_trials=10)
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; known: {', '.join(STRATEGIES)}")
    return make_sampler(name, seed)


def replay(
    queries: dict[str, list[float]], truth: dict[str, float], strategy: str, trials: int, repetitions: int,
    maximize: bool = False, seed: int = 0, first: Sequence[str] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """(repetitions, trials) regret of ``strategy`` searching the table, and how many genomes it had
    trained by each trial. After trial t the regret is the gap between the best truth of the table and
    the truth of the best genome queried so far. The genomes of ``first`` are queried first, as
    ``skipnas search`` queues its baselines. A genome queried again reuses its first result, as the
    search does, and costs no training."""
    genes = len(next(iter(queries)))
    sign = -1.0 if maximize else 1.0
    best_truth = min(sign * value for value in truth.values())
    regret = np.zeros((repetitions, trials))
    trained = np.zeros((repetitions, trials), dtype=int)
    for repetition in range(repetitions):
        rng = np.random.default_rng([seed, repetition])
        sampler = make_strategy(strategy, seed * 10_000 + repetition)
        study = optuna.create_study(direction="maximize" if maximize else "minimize", sampler=sampler)
        for bits in first:
            study.enqueue_trial({f"g{g}": int(bit) for g, bit in enumerate(bits)})
        seen: dict[str, float] = {}
        best_seen, chosen = np.inf, None
        for t in range(trials):
            trial = study.ask()
            bits = "".join(str(trial.suggest_int(f"g{g}", 0, 1)) for g in range(genes))
            if bits not in queries:
                raise ValueError(f"genome {bits} is not in the table; replay needs every genome of the space")
            if bits not in seen:
                seen[bits] = queries[bits][rng.integers(len(queries[bits]))]
            value = seen[bits]
            study.tell(trial, value)
            if sign * value < best_seen:
                best_seen, chosen = sign * value, bits
            regret[repetition, t] = sign * truth[chosen] - best_truth
            trained[repetition, t] = len(seen)
    return regret, trained


def replay_table(args: argparse.Namespace) -> None:
    rows = read_table(args.table)
    if not rows:
        raise SkipnasError(f"{args.table}: no rows; run `skipbench.py run` first")
    queries, truth = load_lookup(rows, args.metric)
    genes = len(next(iter(queries)))
    if len(queries) < 2**genes:
        raise SkipnasError(f"{args.table}: {len(queries)} of {2**genes} genomes; finish the table first (replay needs every genome)")
    space = load_space(str(args.space))
    if len(space.searchable_links()) != genes:
        raise SkipnasError(f"{args.table}: its genomes do not have the {len(space.searchable_links())} links of {args.space}; give the table's --space")
    # as skipnas search does: the named baselines first, each once
    first = [] if args.no_baselines else list(dict.fromkeys(baseline_bits(space.searchable_links(), space.depth).values()))
    maximize = args.metric == "dice"
    out_rows = []
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for strategy in args.strategies:
        regret, trained = replay(queries, truth, strategy, args.trials, args.repetitions, maximize, first=first)
        for t in range(args.trials):
            column = regret[:, t]
            out_rows.append({"metric": args.metric, "strategy": strategy, "trials": t + 1, "mean_regret": round(float(column.mean()), 5),
                             "p5": round(float(np.percentile(column, 5)), 5), "p95": round(float(np.percentile(column, 95)), 5),
                             "mean_trained": round(float(trained[:, t].mean()), 2)})
        print(f"{strategy}: mean regret after {args.trials} trials {regret[:, -1].mean():.4f} ({trained[:, -1].mean():.1f} genomes trained)")
    comment = (f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {args.table}, metric {args.metric} "
               f"(queries: one seed's val score; truth: test mean over seeds), {args.repetitions} repetitions, "
               f"{'no baselines first' if args.no_baselines else 'the baselines first'}; a repeated genome reuses its result")
    write_csv_atomic(args.out, out_rows, comment=comment)


# analysis --------------------------------------------------------------------------------------

BASELINE_NAMES = ("standard", "semi-dense", "reverse", "dense", "none")
METRIC_LABELS = {"relative_count_error": "relative count error", "count_mae": "count MAE", "dice": "Dice"}
# the summary's regret columns: trials a search of the default budget (50) passes on its way
REGRET_CHECKPOINTS = (5, 10, 20, 50)
# two genome means differ beyond the seed noise when their gap exceeds Z times its standard error
Z = 1.96


def _maximize(metric: str) -> bool:
    return metric == "dice"


def genome_means(rows: Sequence[dict[str, str]], metric: str, split: str = "test") -> dict[str, list[float]]:
    """Per genome, the ``split`` value of ``metric`` of each seed's run."""
    values: dict[str, list[float]] = {}
    for row in rows:
        values.setdefault(row["genome"], []).append(float(row[f"{split}_{metric}"]))
    return values


def seed_noise_sd(values: dict[str, list[float]]) -> float | None:
    """The seed-to-seed standard deviation of one run, pooled over the genomes run with several
    seeds (the mean of their sample variances); None when no genome has two runs."""
    variances = [float(np.var(runs, ddof=1)) for runs in values.values() if len(runs) >= 2]
    return float(np.sqrt(np.mean(variances))) if variances else None


def rank_agreement(first: Sequence[float], second: Sequence[float]) -> float | None:
    """Spearman's rank correlation of two scores of the same genomes; None with fewer than three, or
    where either score is the same for all (then no ranking exists)."""
    from scipy import stats

    if len(first) < 3 or len(set(first)) == 1 or len(set(second)) == 1:
        return None
    return float(stats.spearmanr(first, second).statistic)


def baseline_bits(links: Sequence[tuple[int, int]], depth: int) -> dict[str, str]:
    """The table key of each named baseline topology."""
    from skipnas.genome import named_skips

    return {name: "".join(str(int(named_skips(name, depth)[i][j])) for i, j in links) for name in BASELINE_NAMES}


def _distribution_info(rows: Sequence[dict[str, str]], metric: str, links: Sequence[tuple[int, int]], depth: int) -> dict[str, Any]:
    """The held-out (test) mean of every genome over its seeds, best first, with the seed noise, how
    many genomes are within noise of the best and where the named baselines rank (1 = best)."""
    values = genome_means(rows, metric)
    sign = -1.0 if _maximize(metric) else 1.0
    ranked = sorted(values, key=lambda genome: (sign * float(np.mean(values[genome])), genome))
    means = [float(np.mean(values[genome])) for genome in ranked]
    seeds = [len(values[genome]) for genome in ranked]
    noise = seed_noise_sd(values)
    within = None
    if noise is not None:
        best, best_seeds = means[0], seeds[0]
        within = sum(1 for mean, n in zip(means, seeds) if sign * (mean - best) <= Z * noise * np.sqrt(1 / n + 1 / best_seeds))
    # how far a genome's rank is topology rather than training noise: two seeds' runs, and val against test
    both = [runs[:2] for runs in values.values() if len(runs) >= 2]
    val = genome_means(rows, metric, split="val")
    rank = {genome: index + 1 for index, genome in enumerate(ranked)}
    baselines = {
        name: {"genome": bits, "rank": rank[bits], "mean": means[rank[bits] - 1]}
        for name, bits in baseline_bits(links, depth).items() if bits in rank
    }
    return {
        "metric": metric, "label": METRIC_LABELS[metric], "maximize": _maximize(metric), "genomes": ranked, "means": means,
        "seeds": seeds, "runs": sum(seeds), "space_size": 2 ** len(links), "noise_sd": noise, "within_noise": within,
        "baselines": baselines, "seed_agreement": rank_agreement([runs[0] for runs in both], [runs[1] for runs in both]),
        "val_test_agreement": rank_agreement([float(np.mean(val[genome])) for genome in ranked], means),
    }


def _link_effects_info(rows: Sequence[dict[str, str]], metric: str, links: Sequence[tuple[int, int]]) -> dict[str, Any]:
    """Per link: the mean test value of the genomes with it minus the mean of those without, with a
    95 % interval (Welch's standard error over genome means), and Optuna's fANOVA importance of the
    link genes for the genome means."""
    values = genome_means(rows, metric)
    genomes = sorted(values)
    means = np.array([np.mean(values[genome]) for genome in genomes])
    bits = np.array([[int(b) for b in genome] for genome in genomes], dtype=bool)
    effects, halfwidths = [], []
    for k in range(len(links)):
        on, off = means[bits[:, k]], means[~bits[:, k]]
        if len(on) < 2 or len(off) < 2:
            effects.append(None)
            halfwidths.append(None)
            continue
        effects.append(float(on.mean() - off.mean()))
        halfwidths.append(float(Z * np.sqrt(on.var(ddof=1) / len(on) + off.var(ddof=1) / len(off))))
    importance = _fanova_info(genomes, means, links, metric)
    return {"metric": metric, "label": METRIC_LABELS[metric], "maximize": _maximize(metric), "params": [link_param_name(i, j) for i, j in links],
            "effects": effects, "halfwidths": halfwidths, "importance": importance, "genomes": len(genomes)}


def _fanova_info(genomes: Sequence[str], means: np.ndarray, links: Sequence[tuple[int, int]], metric: str) -> dict[str, Any]:
    """skipnas report's importance data, by Optuna's fANOVA (not its default, PED-ANOVA, which looks only
    at the best trials), for a study holding one trial per genome (its test mean)."""
    from skipnas.study.report.importance import _importance_info

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if _maximize(metric) else "minimize")
    distributions = {link_param_name(i, j): optuna.distributions.IntDistribution(0, 1) for i, j in links}
    study.add_trials([
        optuna.trial.create_trial(
            params={link_param_name(i, j): int(bit) for (i, j), bit in zip(links, genome, strict=True)},
            distributions=distributions, value=float(mean),
        )
        for genome, mean in zip(genomes, means, strict=True)
    ])
    info = _importance_info(study, optuna.importance.FanovaImportanceEvaluator(seed=0))
    info["objective"] = f"test {METRIC_LABELS[metric]}, mean over seeds"
    return info


def read_regret(path: Path) -> tuple[str, dict[str, dict[str, list[float]]]]:
    """The replay's table: its metric and, per strategy, its trials, the mean, 5th and 95th percentile
    regret and the mean number of genomes trained by then."""
    rows = read_table(path)
    metrics = {row.get("metric") for row in rows}
    if len(metrics) != 1 or None in metrics or "" in metrics:
        raise SkipnasError(f"{path}: not one replay's table (one metric in a metric column); write it with `skipbench.py replay`")
    curves: dict[str, dict[str, list[float]]] = {}
    for row in rows:
        curve = curves.setdefault(row["strategy"], {"trials": [], "mean": [], "p5": [], "p95": [], "trained": []})
        curve["trials"].append(int(row["trials"]))
        for key, column in (("mean", "mean_regret"), ("p5", "p5"), ("p95", "p95"), ("trained", "mean_trained")):
            curve[key].append(float(row[column]))
    return metrics.pop(), curves


def _regret_info(curves: dict[str, dict[str, list[float]]], noise_floor: float | None, metric: str) -> dict[str, Any]:
    """The replayed regret curves and, per strategy, the first trial whose mean regret is at or below
    the noise floor (None: never within the trials replayed)."""
    reached = {}
    for strategy, curve in curves.items():
        reached[strategy] = (
            next((t for t, mean in zip(curve["trials"], curve["mean"]) if mean <= noise_floor), None) if noise_floor is not None else None
        )
    return {"metric": metric, "label": METRIC_LABELS[metric], "curves": curves, "noise_floor": noise_floor, "trials_to_floor": reached}


def noise_floor(distribution: dict[str, Any]) -> float | None:
    """The gap two genome means of the table's usual seed count can show by seed noise alone
    (Z standard errors of their difference): a regret below it is as good as the best."""
    if distribution["noise_sd"] is None:
        return None
    seeds = int(np.median(distribution["seeds"]))
    return float(Z * distribution["noise_sd"] * np.sqrt(2 / seeds))


def plot_distribution(info: dict[str, Any]) -> Any:
    """Every genome's test mean, best first, the band of the seed noise around the best, the
    baselines marked."""
    import plotly.graph_objects as go

    figure = go.Figure()
    ranks = list(range(1, len(info["genomes"]) + 1))
    figure.add_trace(go.Scatter(
        x=ranks, y=info["means"], mode="markers", name="topology (mean over its seeds)", marker={"size": 5, "color": "#1f77b4"},
        customdata=np.stack([info["genomes"], info["seeds"]], axis=1),
        hovertemplate="%{customdata[0]} (%{customdata[1]} seeds): %{y:.4f}, rank %{x}<extra></extra>",
    ))
    for name, baseline in info["baselines"].items():
        figure.add_trace(go.Scatter(
            x=[baseline["rank"]], y=[baseline["mean"]], mode="markers+text", name=name, text=[name], textposition="top center",
            marker={"size": 11, "symbol": "diamond-open", "line": {"width": 2}},
        ))
    if info["noise_sd"] is not None:
        sign = -1.0 if info["maximize"] else 1.0
        edge = info["means"][0] + sign * noise_floor(info)
        figure.add_hline(
            y=edge, line_dash="dash", line_color="#444",
            annotation_text=f"within seed noise of the best: {info['within_noise']} topologies (run SD {info['noise_sd']:.3f})",
            annotation_position="top right",
        )
    better = "higher" if info["maximize"] else "lower"
    figure.update_layout(
        template="plotly_white", height=450,
        title=f"Test {info['label']} of {len(info['genomes'])} of {info['space_size']} topologies ({info['runs']} runs), best first ({better} is better)",
        xaxis_title="rank by test mean", yaxis_title=f"test {info['label']}",
    )
    return figure


def plot_link_effects(info: dict[str, Any]) -> Any:
    """Each link's effect (mean with it minus mean without, 95 % interval) beside its fANOVA importance."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from skipnas.study.report._trials import _link_label

    importance = info["importance"]
    better = "higher" if info["maximize"] else "lower"
    figure = make_subplots(rows=1, cols=2, subplot_titles=(
        f"effect on test {info['label']} ({better} is better)", "fANOVA importance (sums to 1)",
    ))
    figure.add_trace(go.Bar(
        x=[_link_label(param) for param in info["params"]], y=info["effects"], error_y={"type": "data", "array": [h or 0.0 for h in info["halfwidths"]]},
        name="with minus without", marker_color="#1f77b4",
    ), row=1, col=1)
    figure.add_trace(go.Bar(x=[_link_label(param) for param in importance["params"]], y=importance["importances"], name="fANOVA", marker_color="#ff7f0e"), row=1, col=2)
    figure.update_layout(
        template="plotly_white", height=420, showlegend=False,
        title=f"What each link does to the test {info['label']} ({info['genomes']} topologies, means over seeds)",
    )
    return figure


def plot_regret(info: dict[str, Any]) -> Any:
    """Mean regret against trials, 5th-95th percentile band, per strategy; the noise floor dashed."""
    import plotly.graph_objects as go

    figure = go.Figure()
    palette = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd")
    for index, (strategy, curve) in enumerate(info["curves"].items()):
        colour = palette[index % len(palette)]
        figure.add_trace(go.Scatter(
            x=curve["trials"] + curve["trials"][::-1], y=curve["p95"] + curve["p5"][::-1], fill="toself", line={"width": 0},
            fillcolor=colour, opacity=0.15, hoverinfo="skip", showlegend=False, legendgroup=strategy,
        ))
        figure.add_trace(go.Scatter(x=curve["trials"], y=curve["mean"], mode="lines", name=strategy, line={"color": colour}, legendgroup=strategy))
    if info["noise_floor"] is not None:
        figure.add_hline(y=info["noise_floor"], line_dash="dash", line_color="#444", annotation_text="seed noise floor")
    figure.update_layout(
        template="plotly_white", height=450,
        title=f"Regret in test {info['label']} against trials, searching on val {info['label']} (mean, 5th-95th percentile)",
        xaxis_title="trials", yaxis_title=f"regret (test {info['label']})",
    )
    return figure


def summary_markdown(distributions: Sequence[dict[str, Any]], effects: Sequence[dict[str, Any]], regrets: Sequence[dict[str, Any]] = ()) -> str:
    """The analysis as markdown tables, for RESULTS."""
    from skipnas.study.report._trials import _link_label

    lines = ["| metric (test, mean over seeds) | topologies | runs | run SD (seed noise) | rank correlation: seed 0 / 1, val / test | best | "
             "within noise of the best | " + " | ".join(BASELINE_NAMES) + " |", "|---|---|---|---|---|---|---|" + "---|" * len(BASELINE_NAMES)]
    for info in distributions:
        ranks = [f"{b['mean']:.3f} (#{b['rank']})" if (b := info["baselines"].get(name)) else "-" for name in BASELINE_NAMES]
        noise = "-" if info["noise_sd"] is None else f"{info['noise_sd']:.3f}"
        agreement = " / ".join("-" if rho is None else f"{rho:.2f}" for rho in (info["seed_agreement"], info["val_test_agreement"]))
        lines.append(f"| {info['label']} | {len(info['genomes'])} of {info['space_size']} | {info['runs']} | {noise} | {agreement} | "
                     f"{info['genomes'][0]}: {info['means'][0]:.3f} | {info['within_noise'] if info['within_noise'] is not None else '-'} | "
                     + " | ".join(ranks) + " |")
    for info in effects:
        lines += ["", f"Links and the test {info['label']} (with minus without, 95 % interval; fANOVA importance):", "",
                  "| link | effect | fANOVA |", "|---|---|---|"]
        importance = dict(zip(info["importance"]["params"], info["importance"]["importances"]))
        for param, effect, half in zip(info["params"], info["effects"], info["halfwidths"]):
            value = importance.get(param)
            shown = "-" if effect is None else f"{effect:+.4f} ± {half:.4f}"
            lines.append(f"| {_link_label(param)} | {shown} | {'-' if value is None else f'{value:.3f}'} |")
    for regret in regrets:
        floor = regret["noise_floor"]
        heading = (f"Searching on val {regret['label']}: trials until the mean regret in test {regret['label']} is within "
                   f"the seed noise floor ({'-' if floor is None else f'{floor:.4f}'}):")
        lines += ["", heading, "",
                  "| strategy | trials | genomes trained by then | " + " | ".join(f"mean regret (p95) at {t} trials" for t in REGRET_CHECKPOINTS)
                  + " | at the last trial |", "|---|---|---|" + "---|" * (len(REGRET_CHECKPOINTS) + 1)]
        for strategy, curve in regret["curves"].items():
            reached = regret["trials_to_floor"][strategy]
            shown = reached if reached is not None else f"not within {curve['trials'][-1]}"
            cost = f"{curve['trained'][curve['trials'].index(reached)]:.1f}" if reached is not None else "-"
            at = [curve["trials"].index(t) if t in curve["trials"] else None for t in (*REGRET_CHECKPOINTS, curve["trials"][-1])]
            cells = " | ".join("-" if i is None else f"{curve['mean'][i]:.4f} ({curve['p95'][i]:.4f})" for i in at)
            lines.append(f"| {strategy} | {shown} | {cost} | {cells} |")
    return "\n".join(lines) + "\n"


def analyse(args: argparse.Namespace) -> None:
    rows = read_table(args.table)
    if not rows:
        raise SkipnasError(f"{args.table}: no rows; run `skipbench.py run` first")
    space = load_space(str(args.space))
    links = space.searchable_links()
    if any(len(row["genome"]) != len(links) for row in rows):
        raise SkipnasError(f"{args.table}: its genomes do not have the {len(links)} links of {args.space}; give the table's --space")
    distributions = [_distribution_info(rows, metric, links, space.depth) for metric in args.metrics]
    effects = [_link_effects_info(rows, metric, links) for metric in args.metrics]
    regrets = []
    for path in args.regret:
        if not path.is_file():
            raise SkipnasError(f"{path}: no such file; run `skipbench.py replay` first, or leave out --regret")
        metric, curves = read_regret(path)
        if metric not in args.metrics:
            raise SkipnasError(f"{path}: a replay on {metric}; add it to --metrics (now {','.join(args.metrics)})")
        regrets.append(_regret_info(curves, noise_floor(distributions[args.metrics.index(metric)]), metric))
    summary = summary_markdown(distributions, effects, regrets)
    print(summary)
    comment = f"{args.table}: {len(rows)} runs, test metrics (held out; val chose each run's weights and counting)"
    if args.summary:
        write_text_atomic(args.summary, f"<!-- {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {comment} -->\n\n{summary}")
    if args.figure:
        figures = [plot_distribution(info) for info in distributions] + [plot_link_effects(info) for info in effects]
        figures += [plot_regret(regret) for regret in regrets]
        written = write_figure_page(args.figure, figures, "SkipBench", comment, args.inline_plotlyjs)
        print("figure: " + ", ".join(str(p) for p in written))


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
    runner.add_argument("--jobs-per-gpu", type=int, default=None, help="with CUDA: this many workers per GPU")
    runner.add_argument(
        "--threads", type=int, default=None,
        help="torch CPU threads per worker (default torch's own, all cores, whatever --jobs is: another thread count "
        "sums in another order and moves a run's scores as much as a seed does)",
    )
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
    replayer.add_argument("--space", default=str(SPACE), help="the table's search space (default search_spaces/skipbench-depth3.toml)")
    replayer.add_argument("--no-baselines", action="store_true", help="do not query the named baselines first, as skipnas search does")
    replayer.add_argument("--trials", type=int, default=100)
    replayer.add_argument("--repetitions", type=int, default=100)
    replayer.add_argument("--out", type=Path, default=Path("experiments/results/skipbench_depth3_regret.csv"))
    analyser = commands.add_parser("analyse", help="figures and tables of a (possibly partial) table: distribution, baselines, links, regret")
    analyser.add_argument("table", type=Path)
    analyser.add_argument("--space", default=str(SPACE), help="the table's search space (default search_spaces/skipbench-depth3.toml)")
    analyser.add_argument(
        "--metrics", type=lambda text: text.split(","), default=["relative_count_error", "dice"],
        help=f"comma-separated test metrics: {','.join(METRIC_LABELS)}",
    )
    analyser.add_argument(
        "--regret", type=Path, action="append", default=[], help="a replay's table, for its regret curves against its metric's noise floor (repeatable)"
    )
    analyser.add_argument("--summary", type=Path, default=None, help="markdown tables")
    analyser.add_argument("--figure", type=Path, default=None, help="plotly HTML (and a PNG per figure when kaleido imports)")
    analyser.add_argument("--inline-plotlyjs", action="store_true", help="plotly's library inside the HTML, for reading offline")
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("run", "replay", "analyse", "-h", "--help"):
        argv = ["run", *argv]  # `skipbench.py --smoke` is `skipbench.py run --smoke`
    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            if args.smoke:
                args.steps, args.seeds, args.synthetic, args.data = 6, [0], 4, "demo"
            if args.steps < 1:
                parser.error(f"--steps must be at least 1, got {args.steps}")
            run(args)
        elif args.command == "analyse":
            unknown = sorted(set(args.metrics) - set(METRIC_LABELS))
            if unknown:
                parser.error(f"--metrics: unknown {', '.join(unknown)}; known: {', '.join(METRIC_LABELS)}")
            analyse(args)
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
