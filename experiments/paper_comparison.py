"""Paper-style comparison: named skip topologies, with and without semi-synthetic pretraining, several
seeds, scored on the TEST split, against the classical (no network) baseline.

    python experiments/paper_comparison.py --data demo --seconds 20 --out experiments/results/paper_demo.csv \\
        --summary experiments/results/paper_demo_summary.md --figure experiments/results/paper_demo.html
    python experiments/paper_comparison.py --data ../shared/data/sem-fibres-shi2022/extracted --seconds 60 \\
        --best-genome best-model/genome.json --out sem.csv --summary sem_summary.md --figure sem.html
    python experiments/paper_comparison.py --smoke --out smoke.csv      # demo, 2 topologies, 1 seed, seconds

Every run trains one topology at the same ``--width`` for the same wall-clock budget ``--seconds``:
with pretraining, the search's split (``SearchSettings.pretrain_fraction``, 30 %) pretrains on the
search's number of semi-synthetic images and the rest fine-tunes; without, the whole budget
fine-tunes, so both arms get the same time. Tile and batch are the default search space's, the other
training settings ``TrainConfig``'s defaults (those of ``skipnas train``). The seed is the
TrainConfig seed: weights, tile sampling, augmentation and the semi-synthetic images all change with
it. After training, :func:`skipnas.candidate.train_candidate` calibrates the counting on val and
writes a model folder, which :func:`skipnas.evaluate.evaluate_model_folder` (``skipnas evaluate``)
scores on the test split. The classical baseline is :func:`skipnas.counting.classical.evaluate_classical`
(``skipnas baseline-count``), calibrated as that command does, scored on the same test split.

A wall-clock budget on a shared machine gives different step counts, so each row records its steps
and wall time; ``--steps N`` instead gives every run N steps (the same split), so topologies that
cost more per step get the same training, as the paper compared them, and a rerun repeats exactly. ``--out`` is rewritten atomically after every run; re-running with the same ``--out``
skips the runs it already holds (a failed run is recorded with its reason and retried next time).
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from figure_page import write_figure_page

from skipnas.data.particles import DEFAULT_BATCH, DEFAULT_TILE
from skipnas.fileio import write_csv_atomic, write_text_atomic
from skipnas.genome import NAMED_TOPOLOGIES, Genome, GenomeError, load_genome
from skipnas.runtime.device import cpu_name

CLASSICAL = "classical baseline"
SEARCH_BEST = "search best"
# (CSV key, label); the metrics, plus the relative count error the project reports everywhere
METRICS: tuple[tuple[str, str], ...] = (
    ("dice", "Dice"),
    ("precision", "precision"),
    ("recall", "recall"),
    ("exact_count_accuracy", "exact-count accuracy"),
    ("count_mae", "count MAE"),
    ("count_mse", "count MSE"),
    ("relative_count_error", "relative count error"),
)
SCORES = (*(key for key, _ in METRICS), "iou", "object_precision", "object_recall")  # test metrics kept per run
EFFORT: tuple[tuple[str, str], ...] = (("steps", "steps"), ("wall_s", "wall s"))
LOWER_IS_BETTER = {"count_mae", "count_mse", "relative_count_error"}
FIGURE_METRICS = ("dice", "precision", "recall", "exact_count_accuracy", "count_mae", "count_mse")
KEY_FIELDS = ("data", "topology", "genome", "pretrain", "seed", "width", "budget_s")
FIELDS = (
    *KEY_FIELDS,
    "status",
    "pretrain_s",
    "finetune_s",
    "steps",
    "pretrain_steps",
    "finetune_steps",
    "train_s",
    "wall_s",
    *SCORES,
    "counting_method",
    "postprocess",
    "val_dice",
    "test_images",
    "stop_reasons",
    "reason",
    "finished_utc",
)
SMOKE = {"topologies": ["standard", "none"], "seeds": 1, "seconds": 2.0, "width": 4, "synthetic": 4, "threads": 1}


@dataclass(frozen=True)
class Run:
    """One training run: a topology (its label in the table and its genome), an arm and a seed."""

    label: str
    genome: Genome
    pretrain: bool
    seed: int


# the runs file ------------------------------------------------------------------------------------
def run_key(row: dict[str, Any]) -> tuple[str, ...]:
    """What identifies a run across re-runs: a changed genome, width or budget is another run."""
    return tuple(str(row.get(name, "")) for name in KEY_FIELDS)


def read_rows(path: Path) -> list[dict[str, str]]:
    """The rows of an earlier ``--out`` (comment lines skipped), or none."""
    if not path.exists():
        return []
    with path.open(encoding="utf-8", newline="") as handle:
        lines = [line for line in handle if not line.startswith("#")]
    return [dict(row) for row in csv.DictReader(lines)]


def write_rows(path: Path, rows: Sequence[dict[str, Any]], comment: str) -> None:
    write_csv_atomic(path, rows, FIELDS, f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {comment}")


# summary: plain data, tested without plotly ------------------------------------------------------
def _float(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def mean_sd(values: Iterable[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n - 1); the deviation is None below two values."""
    data = list(values)
    if not data:
        return None, None
    return statistics.fmean(data), statistics.stdev(data) if len(data) > 1 else None


def summarise(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and sample standard deviation of every metric per (data, topology, pretraining, width,
    budget) over the successful runs (seeds). Order: topologies as they first appear, pretraining
    before none, the classical baseline last within its data set."""
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        key = (str(row["data"]), str(row["topology"]), str(row["pretrain"]), str(row.get("width", "")), str(row.get("budget_s", "")))
        groups.setdefault(key, []).append(row)
    data_order = list(dict.fromkeys(key[0] for key in groups))
    topology_order = list(dict.fromkeys(key[1] for key in groups))

    def order(key: tuple[str, ...]) -> tuple[int, int, int, str, str]:
        topology = len(topology_order) if key[1] == CLASSICAL else topology_order.index(key[1])
        return data_order.index(key[0]), topology, {"yes": 0, "no": 1}.get(key[2], 2), key[3], key[4]

    table = []
    for key in sorted(groups, key=order):
        members = groups[key]
        ok = [row for row in members if row.get("status", "ok") == "ok"]
        entry: dict[str, Any] = {
            "data": key[0], "topology": key[1], "pretrain": key[2], "width": key[3], "budget_s": key[4],
            "runs": len(ok), "failed": len(members) - len(ok),
        }
        for metric, _ in (*METRICS, *EFFORT):
            values = [v for row in ok if (v := _float(row.get(metric))) is not None]
            entry[f"{metric}_mean"], entry[f"{metric}_sd"] = mean_sd(values)
        table.append(entry)
    return table


def _cell(mean: float | None, sd: float | None, digits: int = 3) -> str:
    if mean is None:
        return ""
    return f"{mean:.{digits}f}" if sd is None else f"{mean:.{digits}f} ± {sd:.{digits}f}"


def _arm(entry: dict[str, Any]) -> str:
    return {"yes": "yes", "no": "no"}.get(entry["pretrain"], "n/a")


def summary_markdown(table: Sequence[dict[str, Any]]) -> str:
    """One markdown table per data set: mean ± sample standard deviation over the seeds."""
    header = ["topology", "pretraining", "runs", *(label for _, label in METRICS), "steps", "wall s"]
    parts = []
    for data in dict.fromkeys(entry["data"] for entry in table):
        lines = [f"**{data}** (test split; mean ± sample standard deviation over seeds)", "",
                 "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for entry in (e for e in table if e["data"] == data):
            runs = str(entry["runs"]) + (f" ({entry['failed']} failed)" if entry["failed"] else "")
            cells = [entry["topology"], _arm(entry), runs]
            cells += [_cell(entry[f"{key}_mean"], entry[f"{key}_sd"]) for key, _ in METRICS]
            cells += [_cell(entry["steps_mean"], entry["steps_sd"], 0), _cell(entry["wall_s_mean"], entry["wall_s_sd"], 1)]
            lines.append("| " + " | ".join(cells) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts) + "\n"


def write_summary(path: Path, table: Sequence[dict[str, Any]], comment: str) -> None:
    """Markdown for a ``.md`` path, else CSV (comment line first)."""
    stamp = f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {comment}"
    if path.suffix.lower() in (".md", ".markdown"):
        write_text_atomic(path, f"<!-- {stamp} -->\n\n{summary_markdown(table)}")
    else:
        write_csv_atomic(path, table, list(table[0]) if table else ["data"], stamp)


def figure_info(table: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per data set (one figure per summary table): for every metric, one bar series per pretraining
    arm (mean and sample standard deviation per topology, None where an arm lacks the topology) and
    the classical baseline's value."""
    figures = []
    for data in dict.fromkeys(entry["data"] for entry in table):
        entries = [e for e in table if e["data"] == data]
        networks = [e for e in entries if e["topology"] != CLASSICAL]
        classical = next((e for e in entries if e["topology"] == CLASSICAL), None)
        topologies = list(dict.fromkeys(e["topology"] for e in networks))
        arms = []
        for arm, name in (("yes", "with pretraining"), ("no", "without pretraining")):
            by_topology = {e["topology"]: e for e in networks if e["pretrain"] == arm}
            if not by_topology:
                continue
            arms.append(
                {
                    "name": name,
                    "runs": [by_topology[t]["runs"] if t in by_topology else 0 for t in topologies],
                    "mean": {m: [by_topology[t][f"{m}_mean"] if t in by_topology else None for t in topologies] for m in FIGURE_METRICS},
                    "sd": {m: [by_topology[t][f"{m}_sd"] if t in by_topology else None for t in topologies] for m in FIGURE_METRICS},
                }
            )
        labels = dict(METRICS)
        figures.append(
            {
                "data": data,
                "topologies": topologies,
                "metrics": [{"key": m, "label": labels[m], "lower_is_better": m in LOWER_IS_BETTER} for m in FIGURE_METRICS],
                "arms": arms,
                "classical": {m: classical[f"{m}_mean"] for m in FIGURE_METRICS} if classical else None,
            }
        )
    return figures


def plot_comparison(info: dict[str, Any]) -> Any:
    """A plotly figure: one panel per metric, grouped bars (mean, sample SD as error bars) per
    topology and pretraining arm, the classical baseline as a dashed line."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    metrics = info["metrics"]
    cols = 3
    rows = math.ceil(len(metrics) / cols)
    titles = [f"{m['label']} ({'lower' if m['lower_is_better'] else 'higher'} is better)" for m in metrics]
    figure = make_subplots(rows=rows, cols=cols, subplot_titles=titles, horizontal_spacing=0.07, vertical_spacing=0.16)
    colours = {"with pretraining": "#1f77b4", "without pretraining": "#ff7f0e"}
    for index, metric in enumerate(metrics):
        row, col = index // cols + 1, index % cols + 1
        key = metric["key"]
        for arm in info["arms"]:
            figure.add_trace(
                go.Bar(
                    x=info["topologies"],
                    y=arm["mean"][key],
                    error_y={"type": "data", "array": [sd or 0.0 for sd in arm["sd"][key]], "visible": True},
                    name=arm["name"],
                    legendgroup=arm["name"],
                    showlegend=index == 0,
                    marker_color=colours.get(arm["name"]),
                    customdata=arm["runs"],
                    hovertemplate="%{x}: %{y:.3f} ± %{error_y.array:.3f} (%{customdata} runs)<extra>" + arm["name"] + "</extra>",
                ),
                row=row,
                col=col,
            )
        baseline = (info["classical"] or {}).get(key)
        if baseline is not None:
            figure.add_hline(
                y=baseline, line_dash="dash", line_color="#444", row=row, col=col,
                annotation_text=f"classical {baseline:.3g}", annotation_position="top left", annotation_font_size=10,
            )
    figure.update_layout(
        barmode="group",
        title=f"Test split of {info['data']}: mean ± sample SD over seeds; dashed: classical baseline",
        height=330 * rows + 120,
        legend={"orientation": "h", "y": -0.08},
        margin={"t": 90},
    )
    return figure


# training and evaluation -----------------------------------------------------------------------
def train_config(seconds: float, pretrain: bool, seed: int, synthetic: int, steps: int | None = None) -> Any:
    """The search's budget split and tile/batch (the default space's); skipnas train's other defaults.
    With ``steps``, every run trains that many steps (without pretraining, all of them fine-tuning)."""
    from skipnas.data.tiling import TileConfig
    from skipnas.space import load_space
    from skipnas.study.settings import SearchSettings
    from skipnas.train.config import PhaseConfig, TrainConfig, split_steps

    space = load_space("default")
    fraction = SearchSettings().pretrain_fraction if pretrain else 0.0
    if steps is not None:
        pretrain_steps, finetune_steps = split_steps(steps, fraction)
        budgets = {"steps": pretrain_steps}, {"steps": finetune_steps}
    else:
        budgets = {"seconds": seconds * fraction}, {"seconds": seconds - seconds * fraction}
    return TrainConfig(
        pretrain=PhaseConfig(**budgets[0], lr=TrainConfig().pretrain.lr),
        finetune=PhaseConfig(**budgets[1], lr=TrainConfig().finetune.lr),
        synthetic_images=synthetic if pretrain else 0,
        batch_size=space.batch or DEFAULT_BATCH,
        tile=TileConfig(size=space.tile or DEFAULT_TILE),
        seed=seed,
    )


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{exc.__class__.__name__}: {text.splitlines()[0] if text else ''}"[:300]


def skips_text(genome: Genome) -> str:
    return "/".join("".join(str(g) for g in row) for row in genome.skips)


def train_and_test(run: Run, data: Any, data_spec: str, config: Any) -> dict[str, Any]:
    """Train, calibrate on val, save a throw-away model folder, score it on test as ``skipnas evaluate`` does."""
    from skipnas.candidate import train_candidate
    from skipnas.evaluate import evaluate_model_folder

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="paper-comparison-") as folder:
        candidate = train_candidate(run.genome, data, config, out=Path(folder) / "model", progress=False)
        test = evaluate_model_folder(Path(folder) / "model", data_spec, split="test", device=config.device)
    wall = time.perf_counter() - started
    training = candidate.training
    pretrain_steps = max((h.step for h in training.history if h.phase == "pretrain"), default=0)
    return {
        "status": "ok",
        "pretrain_s": round(training.phase_seconds.get("pretrain", 0.0), 2),
        "finetune_s": round(training.phase_seconds.get("finetune", 0.0), 2),
        "steps": training.steps,
        "pretrain_steps": pretrain_steps,
        "finetune_steps": training.steps - pretrain_steps,
        "train_s": round(candidate.seconds["train"], 2),
        "wall_s": round(wall, 2),
        **{key: round(test[key], 4) for key in SCORES},
        "counting_method": test["counting_method"],
        "postprocess": test["postprocess"],
        "val_dice": round(candidate.metrics["dice"], 4),
        "test_images": test["images"],
        "stop_reasons": "; ".join(f"{phase}: {why}" for phase, why in training.stop_reasons.items()),
    }


def classical_row(data_spec: str) -> dict[str, Any]:
    from skipnas.counting.classical import evaluate_classical

    started = time.perf_counter()
    result = evaluate_classical(data_spec, "test")
    return {
        "status": "ok",
        "steps": 0,
        "wall_s": round(time.perf_counter() - started, 2),
        **{key: round(result[key], 4) for key in SCORES},
        "counting_method": result["postprocess"]["method"],
        "postprocess": result["postprocess_text"],
        "test_images": result["images"],
        "reason": "; ".join(result["notes"]),
    }


def plan_runs(topologies: Sequence[str], best: Genome | None, seeds: int, width: int) -> list[Run]:
    """Seed by seed, topology by topology, both arms back to back, so load drift on a shared machine
    hits a topology's two arms alike."""
    genomes = [(name, load_genome(name, base_width=width)) for name in topologies]
    if best is not None:
        genomes.append((SEARCH_BEST, best))
    return [Run(label, genome, pretrain, seed) for seed in range(seeds) for label, genome in genomes for pretrain in (True, False)]


def load_best_genome(spec: str, width: int) -> Genome:
    """A genome JSON, a model folder holding ``genome.json`` (``skipnas export``), or a topology name; at ``width``."""
    path = Path(spec)
    if path.is_dir():
        path = path / "genome.json"
    return load_genome(path if path.exists() else spec, base_width=width)


# main ------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="demo", metavar="DIR|demo", help="dataset with train/val/test splits (default demo)")
    parser.add_argument("--topologies", default=",".join(NAMED_TOPOLOGIES), help="comma-separated named topologies (default all five)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per topology and arm (default 3)")
    parser.add_argument("--width", type=int, default=16, help="base width of every network (default 16)")
    parser.add_argument("--seconds", type=float, default=60.0, help="training budget per run, pretraining included (default 60)")
    parser.add_argument("--steps", type=int, default=None, metavar="N", help="instead of --seconds: every run trains N steps, pretraining included (equal work, repeatable)")
    parser.add_argument("--synthetic", type=int, default=None, metavar="N", help="semi-synthetic images to pretrain on (default: the search's)")
    parser.add_argument("--best-genome", default=None, metavar="FILE_OR_NAME", help="genome JSON or model folder (skipnas export): one more row, 'search best'")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--smoke", action="store_true", help="demo data, 2 topologies, 1 seed, 2 s runs, width 4")
    parser.add_argument("--out", type=Path, default=Path("experiments/results/paper_comparison.csv"), help="one row per run; resumed")
    parser.add_argument("--summary", type=Path, default=None, help="mean and SD per topology and arm: .md for markdown, else CSV")
    parser.add_argument("--figure", type=Path, default=None, help="plotly HTML (and a PNG beside it when kaleido imports)")
    parser.add_argument("--inline-plotlyjs", action="store_true", help="inline plotly.js in the HTML (offline, about 4.6 MB)")
    args = parser.parse_args()
    if args.smoke:
        args.data = "demo"
        args.topologies = ",".join(SMOKE["topologies"])
        for name in ("seeds", "seconds", "width", "synthetic", "threads"):
            setattr(args, name, SMOKE[name])
    if args.seeds < 1 or args.seconds <= 0 or args.width < 1 or (args.steps is not None and args.steps < 1):
        parser.error("--seeds, --width and --steps must be at least 1 and --seconds positive")
    topologies = [name.strip() for name in args.topologies.split(",") if name.strip()]

    import torch

    from skipnas.candidate import prepare_data
    from skipnas.study.settings import SearchSettings

    if args.threads:
        torch.set_num_threads(args.threads)
    synthetic = args.synthetic if args.synthetic is not None else SearchSettings().synthetic_images
    try:
        best = load_best_genome(args.best_genome, args.width) if args.best_genome else None
        runs = plan_runs(topologies, best, args.seeds, args.width)
    except GenomeError as exc:
        parser.error(str(exc))
    data_label = "demo" if args.data == "demo" else os.path.normpath(args.data)
    budget = f"{args.steps} steps" if args.steps is not None else f"{args.seconds:g}"
    comment = (
        f"paper comparison on {data_label} (test split), {cpu_name()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}; width {args.width}, {budget if args.steps is not None else budget + ' s'} per run, {SearchSettings().pretrain_fraction:.0%} of it pretraining "
        f"on {synthetic} semi-synthetic images in the pretrain arm"
    )

    def key_of(run: Run) -> dict[str, Any]:
        return {"data": data_label, "topology": run.label, "pretrain": "yes" if run.pretrain else "no", "seed": run.seed,
                "width": args.width, "budget_s": budget, "genome": skips_text(run.genome)}

    classical_key = {"data": data_label, "topology": CLASSICAL, "genome": "", "pretrain": "", "seed": "", "width": "", "budget_s": ""}
    planned = {run_key(key_of(run)) for run in runs} | {run_key(classical_key)}
    rows: list[dict[str, Any]] = [
        row for row in read_rows(args.out) if row.get("status") == "ok" or run_key(row) not in planned  # failed planned runs: retried
    ]
    done = {run_key(row) for row in rows if row.get("status") == "ok"}
    if done & planned:
        print(f"{args.out}: resuming, {len(done & planned)} of {len(planned)} runs already done")

    def record(row: dict[str, Any]) -> None:
        row["finished_utc"] = f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S}"
        rows.append(row)
        write_rows(args.out, rows, comment)

    if run_key(classical_key) not in done:
        try:
            record({**classical_key, **classical_row(args.data)})
        except Exception as exc:
            traceback.print_exc()
            record({**classical_key, "status": "failed", "reason": _reason(exc)})
        print(f"{CLASSICAL}: test Dice {rows[-1].get('dice', '')}, count MAE {rows[-1].get('count_mae', '')} {rows[-1].get('reason', '')}")

    prepared: dict[tuple[bool, int | None], Any] = {}
    todo = [run for run in runs if run_key(key_of(run)) not in done]
    for number, run in enumerate(todo, 1):
        config = train_config(args.seconds, run.pretrain, run.seed, synthetic, args.steps)
        # the semi-synthetic images depend on the seed; without pretraining one load serves every seed
        cache_key = (run.pretrain, run.seed if run.pretrain else None)
        key = key_of(run)
        try:
            if cache_key not in prepared:
                for stale in [k for k in prepared if k[0] and k != cache_key]:
                    del prepared[stale]  # another seed's pretraining images are not needed again
                prepared[cache_key] = prepare_data(args.data, config)
            row = {**key, **train_and_test(run, prepared[cache_key], args.data, config)}
            print(
                f"[{number}/{len(todo)}] {run.label}, pretraining {key['pretrain']}, seed {run.seed}: {row['steps']} steps "
                f"({row['pretrain_steps']} pretraining) in {row['wall_s']:.1f} s; test Dice {row['dice']:.3f}, "
                f"count MAE {row['count_mae']:.2f} ({row['counting_method']})",
                flush=True,
            )
        except Exception as exc:
            traceback.print_exc()
            row = {**key, "status": "failed", "reason": _reason(exc)}
            print(f"[{number}/{len(todo)}] {run.label}, pretraining {key['pretrain']}, seed {run.seed}: FAILED {row['reason']}", flush=True)
        record(row)

    mine = [row for row in rows if run_key(row) in planned]
    table = summarise(mine)
    print(summary_markdown(table))
    if args.summary:
        write_summary(args.summary, table, comment)
    if args.figure:
        figures = [plot_comparison(info) for info in figure_info(table)]
        written = write_figure_page(args.figure, figures, "skipnas paper comparison", comment, args.inline_plotlyjs)
        print("figure: " + ", ".join(str(p) for p in written))
    failed = [row for row in mine if row.get("status") != "ok"]
    if failed:
        print(f"{len(failed)} run(s) failed; re-run the same command to retry them", file=sys.stderr)


if __name__ == "__main__":
    main()
