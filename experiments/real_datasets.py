"""Counting on real datasets with skipnas's defaults, against the classical baseline: per test image.

    python experiments/real_datasets.py --data ../shared/data/polystyrene-beads-lmmp/extracted \
        --data ../shared/data/sem-fibres-shi2022/extracted --seeds 0,1 --out experiments/results/real_datasets.csv
    python experiments/real_datasets.py --data DIR --fixed   # the settings before data adaptation (scale 1, tile 64, ...)
    python experiments/real_datasets.py --data DIR --set scale=1 --set normalise=dataset   # a recipe (also tile, batch, auxiliary, invert=on|off)
    python experiments/real_datasets.py --data DIR --steps 300 --finetune-lr 1e-3   # equal steps, whatever the machine's speed; another rate
    python experiments/real_datasets.py --data DIR --ema-decay 0.99   # validate and keep a moving average of the weights
    python experiments/real_datasets.py --data DIR --selection objects   # each network also counted as another calibration rule chooses
    python experiments/real_datasets.py --smoke --out /tmp/smoke.csv

For each dataset and seed, ``skipnas train``'s defaults (standard topology, 180 s of
fine-tuning and no pretraining, every setting chosen from the training split as the command
does: input scale, tile, batch, width, normalisation, inversion, auxiliary head, calibration grid) train one network;
its counting is calibrated on val (and on train when val holds fewer than 100 particles, as the command
does; such a network is also counted with the setting val alone chooses, a paired comparison), and it
is scored on val (a selection score: val chose the weights and the counting) and on test (held out:
it chose nothing). The classical baseline
(``skipnas baseline-count``: adaptive threshold, the same counting, calibrated as the command does) is scored on
the same test images. ``--fixed`` trains with the settings every dataset got before they adapted to
the data (input scale 1, 64 px tiles, batch 8, width 16, dataset normalisation, no inversion, no auxiliary head, the default
calibration grid and the plain count-MAE choice), for a before/after comparison on the same machine.

``--per-image-scale`` also counts every test image a second way, to measure what a per-image scale
estimate at count time would add: the model counts it once at its input scale, the median width of
what it found gives the image's own particle size, and the image is counted again at the scale
that brings that size to the training particles' median width at the input scale (within half
and twice the input scale; an image where nothing was found keeps the input scale).

Cellpose from scratch is measured by ``experiments/cellpose_baseline.py`` (its own environment).

Output: one CSV row per dataset, method, seed, split and image (true and predicted count, object
tp/fp/fn), and a summary per dataset, method and split on stdout: relative count error, count MAE,
object precision and recall, and the seconds each run took (the rows also hold each network's
width and the steps it trained: a seconds budget trains as many as the machine allows).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from skipnas.candidate import (
    CandidateResult,
    PreparedData,
    adapt_config_to_dataset,
    calibrate_counting,
    evaluate_predictions,
    extra_calibration_images,
    open_dataset,
    prepare_data,
    train_candidate,
    training_images_for_counting,
)
from skipnas.counting.calibrate import SELECTIONS, CalibrationGrid, calibrate_each
from skipnas.counting.classical import ClassicalConfig, evaluate_classical
from skipnas.counting.postprocess import PostprocessConfig, count_particles
from skipnas.data.loading import LabeledImage, load_labeled
from skipnas.data.particles import measure_particles
from skipnas.data.statistics import particle_sizes
from skipnas.errors import SkipnasError
from skipnas.genome import DEFAULT_BASE_WIDTH, DEFAULT_DEPTH, Genome
from skipnas.predict import Prediction, auxiliary_maps, predict_image, predict_images
from skipnas.runtime.metrics import count_metrics, object_metrics
from skipnas.runtime.normalise import prepare_image
from skipnas.train.adapt import adapt_width
from skipnas.train.average import check_ema_decay
from skipnas.train.config import PhaseConfig, TrainConfig, split_steps

DEFAULTS = TrainConfig()
FIELDS = ["dataset", "method", "seed", "split", "image", "true_count", "pred_count", "object_tp", "object_fp", "object_fn", "seconds", "training_steps", "width"]


def train_config(
    seed: int, pretrain_seconds: float, finetune_seconds: float, finetune_lr: float = DEFAULTS.finetune.lr, steps: int | None = None,
    ema_decay: float = DEFAULTS.ema_decay,
) -> TrainConfig:
    """``skipnas train``'s defaults before the data-adapted choices; ``steps``: that many steps in all
    instead of the seconds, split between the phases as the seconds are (as ``skipnas train --steps``);
    ``ema_decay``: the weight average's (0: none)."""
    if steps is None:
        pretrain, finetune = PhaseConfig(seconds=pretrain_seconds), PhaseConfig(seconds=finetune_seconds)
    else:
        pretrain_steps, finetune_steps = split_steps(steps, pretrain_seconds / (pretrain_seconds + finetune_seconds))
        pretrain, finetune = PhaseConfig(steps=pretrain_steps), PhaseConfig(steps=finetune_steps)
    return TrainConfig(
        pretrain=dataclasses.replace(pretrain, lr=DEFAULTS.pretrain.lr),
        finetune=dataclasses.replace(finetune, lr=finetune_lr),
        seed=seed,
        calibrate_on="auto",
        ema_decay=ema_decay,
    )


def network_rows(data: str, seed: int, args: argparse.Namespace, fixed: bool, recipe: dict[str, Any]) -> list[dict[str, Any]]:
    """Train one network as ``skipnas train`` does (with ``recipe``'s settings in place of the
    data-adapted ones) and score it on val and test, one row per image."""
    config = train_config(seed, args.pretrain_seconds, args.finetune_seconds, args.finetune_lr, args.steps, args.ema_decay)
    index = open_dataset(data)
    if fixed:
        # the fixed settings: neither the grid nor anything else follows the data
        config = dataclasses.replace(config, count_grid=CalibrationGrid(), calibration_selection="mean", calibrate_on="val")
        config, _ = adapt_config_to_dataset(
            index, config, DEFAULT_DEPTH, scale=1.0, tile=64, batch=8, auxiliary=None, normalise="dataset", invert=False
        )
    else:
        config, _ = adapt_config_to_dataset(index, config, DEFAULT_DEPTH, **recipe)
    genome = network_genome(args.width, config)
    started = time.perf_counter()
    prepared = prepare_data(index, config)
    with tempfile.TemporaryDirectory() as folder:
        result = train_candidate(genome, prepared, config, out=Path(folder) / "model", progress=False)
    seconds = time.perf_counter() - started
    method = ", ".join(["skipnas fixed settings", *training_changes(args)]) if fixed else recipe_name(recipe, args)
    countings = {method: result.postprocess}
    rows = []
    for split in ("val", "test"):
        images = load_labeled(index.samples(split))
        predictions = predict_images(
            result.training.model, images, prepared.normalisation, result.training.setup, config.val_tile,
            config.val_overlap, config.tta, config.scale,
        )
        if split == "val" and not fixed:
            countings |= {
                f"{method}, counting chosen by {selection}": postprocess
                for selection, postprocess in other_selections(args.selection, result, prepared, config, images, predictions).items()
            }
        if split == "val" and "calibrated_on" in result.calibration:
            # the same network counted as before the training images joined the calibration: a paired comparison
            countings[method + ", counting chosen on val alone"] = calibrate_counting(
                predictions, images, config.count_grid, config.calibration_selection
            ).postprocess
        for label, postprocess in countings.items():
            metrics = evaluate_predictions(predictions, images, postprocess)
            rows += [_row(data, label, seed, split, row, seconds, result.training.steps, genome.base_width) for row in metrics["rows"]]
        if split == "test" and args.per_image_scale and not fixed:
            target = particle_sizes(index, "train").width["p50"] * config.scale  # type: ignore[index]
            rescaled = [
                per_image_scale_prediction(result, prepared, config, item, prediction, target)
                for item, prediction in zip(images, predictions)
            ]
            metrics = evaluate_predictions(rescaled, images, result.postprocess)
            rows += [
                _row(data, method + " + per-image scale", seed, split, row, seconds, result.training.steps, genome.base_width)
                for row in metrics["rows"]
            ]
    return rows


def other_selections(
    selections: list[str], result: CandidateResult, prepared: PreparedData, config: TrainConfig, val_images: list[LabeledImage],
    val_predictions: list[Prediction],
) -> dict[str, PostprocessConfig]:
    """The countings each of ``selections`` chooses for the trained network, named by what chose them:
    on the images the defaults' calibration chose on (val, and the same training images where they
    joined it), a paired comparison; and, with the defaults' rule too, on training images alone, drawn as a
    calibration draws them, so that val scores each rule on images that chose nothing."""
    if not selections:
        return {}

    predicted: dict[str, Prediction] = {}  # by stem: both calibrations may draw the same training images

    def predict(images: list[LabeledImage]) -> list[Prediction]:
        for item in images:
            if item.stem not in predicted:
                predicted[item.stem] = predict_images(
                    result.training.model, [item], prepared.normalisation, result.training.setup, config.val_tile, config.val_overlap,
                    config.tta, config.scale,
                )[0]
        return [predicted[item.stem] for item in images]

    def choose(predictions: list[Prediction], images: list[LabeledImage], rules: list[str]) -> dict[str, PostprocessConfig]:
        chosen = calibrate_each(
            [p.foreground for p in predictions], [item.instances for item in images], PostprocessConfig(), config.count_grid,
            auxiliary_maps(predictions), rules,
        )
        return {rule: setting for rule, (setting, _) in chosen.items()}

    extra, _ = extra_calibration_images(prepared, config.calibrate_on)
    countings = choose(val_predictions + predict(extra), [*val_images, *extra], selections)
    train = training_images_for_counting(prepared.index)
    rules = list(dict.fromkeys([config.calibration_selection, *selections]))
    countings |= {f"{rule} on train alone": setting for rule, setting in choose(predict(train), train, rules).items()}
    return countings


def network_genome(width: int | None, config: TrainConfig) -> Genome:
    """The standard genome at ``width``, or at the width ``skipnas train`` chooses for ``config``'s tiles (None)."""
    genome = Genome.named("standard", base_width=DEFAULT_BASE_WIDTH if width is None else width)
    return adapt_width(genome, config)[0] if width is None else genome


def _on_off(value: str) -> bool:
    if value not in ("on", "off"):
        raise ValueError(f"expected on or off, got {value!r}")
    return value == "on"


RECIPE_KEYS = {"scale": float, "tile": int, "batch": int, "auxiliary": str, "normalise": str, "invert": _on_off}


def parse_recipe(items: list[str]) -> dict[str, Any]:
    """``["scale=1", "normalise=dataset"]`` -> keyword overrides of :func:`adapt_config_to_dataset`."""
    recipe: dict[str, Any] = {}
    for item in items:
        key, _, value = item.partition("=")
        if key not in RECIPE_KEYS or not value:
            raise ValueError(f"--set takes KEY=VALUE with KEY one of {', '.join(RECIPE_KEYS)}, got {item!r}")
        recipe[key] = None if value == "none" and key == "auxiliary" else RECIPE_KEYS[key](value)
    return recipe


def training_changes(args: argparse.Namespace) -> list[str]:
    """How the run's budget, fine-tuning rate and width differ from ``skipnas train``'s."""
    changes = []
    if args.steps is not None:
        split = f" ({args.pretrain_seconds:g}:{args.finetune_seconds:g} pretraining:fine-tuning)" if args.pretrain_seconds > 0 else ""
        changes.append(f"{args.steps} steps{split}")
    elif (args.pretrain_seconds, args.finetune_seconds) != (DEFAULTS.pretrain.seconds, DEFAULTS.finetune.seconds):
        changes.append(f"pretrain {args.pretrain_seconds:g} s + fine-tune {args.finetune_seconds:g} s")
    if args.finetune_lr != DEFAULTS.finetune.lr:
        changes.append(f"fine-tuning rate {args.finetune_lr:g}")
    if args.width is not None:
        changes.append(f"width {args.width}")
    if args.ema_decay != DEFAULTS.ema_decay:
        changes.append(f"weight average {args.ema_decay:g}" if args.ema_decay > 0 else "no weight average")
    return changes


def recipe_name(recipe: dict[str, Any], args: argparse.Namespace) -> str:
    """The method's label: "skipnas defaults", or what the run changed."""
    changes = [f"{key}={('on' if value else 'off') if isinstance(value, bool) else value}" for key, value in recipe.items()]
    changes += training_changes(args)
    return "skipnas defaults" if not changes else "skipnas " + ", ".join(changes)


def per_image_scale_prediction(result: Any, prepared: Any, config: TrainConfig, item: Any, first: Prediction, target: float) -> Prediction:
    """``item`` predicted again at the scale that brings the median width of what ``first`` found to ``target`` px."""
    found = count_particles(first.foreground, result.postprocess, first.auxiliary)
    if found.count == 0:
        return first
    widths = measure_particles(found.labels).widths  # at the input scale, where the counting ran
    scale = config.scale * target / max(float(np.median(widths)), 1e-6)
    scale = float(np.clip(scale, config.scale / 2, config.scale * 2))
    image = prepare_image(item.image, prepared.normalisation)
    return predict_image(result.training.model, image, result.training.setup, config.val_tile, config.val_overlap, tta=config.tta, scale=scale)


def classical_rows(data: str) -> list[dict[str, Any]]:
    started = time.perf_counter()
    result = evaluate_classical(data, "test", ClassicalConfig())
    seconds = time.perf_counter() - started
    return [_row(data, "classical baseline", 0, "test", row, seconds) for row in result["rows"]]


def _row(
    data: str, method: str, seed: int, split: str, row: dict[str, Any], seconds: float, steps: int | str = "", width: int | str = ""
) -> dict[str, Any]:
    return {
        "dataset": Path(data).resolve().parent.name if Path(data).name == "extracted" else str(data),
        "method": method,
        "seed": seed,
        "split": split,
        "image": row["stem"],
        "true_count": row["true_count"],
        "pred_count": row["pred_count"],
        "object_tp": row.get("object_tp", ""),
        "object_fp": row.get("object_fp", ""),
        "object_fn": row.get("object_fn", ""),
        "seconds": round(seconds, 1),
        "training_steps": steps,  # a seconds budget trains as many steps as the machine allows
        "width": width,
    }


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per dataset, method and split, pooled over seeds: relative count error, count MAE, object precision and recall."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["dataset"], row["method"], row["split"]), []).append(row)
    summary = []
    for (dataset, method, split), members in groups.items():
        counts = count_metrics([r["pred_count"] for r in members], [r["true_count"] for r in members])
        objects = object_metrics((r["object_tp"], r["object_fp"], r["object_fn"]) for r in members if r["object_tp"] != "")
        summary.append(
            {
                "dataset": dataset, "method": method, "split": split, "seeds": len({r["seed"] for r in members}),
                "images": len(members), "relative_count_error": counts["relative_count_error"], "count_mae": counts["count_mae"],
                "object_precision": objects["object_precision"], "object_recall": objects["object_recall"],
            }
        )
    return summary


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(handle, "w", newline="") as stream:
        writer = csv.DictWriter(stream, FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(temporary, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", action="append", default=None, metavar="DIR", help="dataset folder (repeat for several)")
    parser.add_argument("--seeds", default="0", help="training seeds, comma-separated (default 0)")
    parser.add_argument(
        "--width", type=int, default=None, help="base width (default: chosen from the tiles' cost, as skipnas train's --width auto)"
    )
    parser.add_argument("--pretrain-seconds", type=float, default=DEFAULTS.pretrain.seconds, help="semi-synthetic pretraining (default: skipnas train's)")
    parser.add_argument("--finetune-seconds", type=float, default=DEFAULTS.finetune.seconds, help="fine-tuning (default: skipnas train's)")
    parser.add_argument(
        "--steps", type=int, default=None, metavar="N",
        help="train N steps in all instead of for the seconds (split as they are): runs that do not depend on the machine's speed",
    )
    parser.add_argument(
        "--finetune-lr", type=float, default=DEFAULTS.finetune.lr, help="fine-tuning learning rate (default: skipnas train's)"
    )
    parser.add_argument(
        "--ema-decay", type=float, default=DEFAULTS.ema_decay, metavar="DECAY",
        help="validate and keep a moving average of the weights of this decay, 0: none (default: skipnas train's)",
    )
    parser.add_argument("--fixed", action="store_true", help="also train with the settings before data adaptation")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="a recipe: override one data-adapted setting (scale, tile, batch, auxiliary, normalise, invert=on|off); repeatable",
    )
    parser.add_argument("--per-image-scale", action="store_true", help="also count each test image at its own estimated scale")
    parser.add_argument(
        "--selection", action="append", default=[], choices=SELECTIONS,
        help="also count each network with the counting this rule chooses on the same calibration images (repeatable)",
    )
    parser.add_argument("--no-classical", action="store_true", help="leave the classical baseline out")
    parser.add_argument("--smoke", action="store_true", help="the demo data, 2 s budgets: checks the plumbing")
    parser.add_argument("--out", type=Path, required=True, help="CSV of per-image rows")
    args = parser.parse_args(argv)
    if args.smoke:
        args.data = args.data or ["demo"]
        args.pretrain_seconds, args.finetune_seconds, args.width = 1.0, 2.0, 4
        args.per_image_scale = True
    if not args.data:
        parser.error("give --data DIR (or --smoke)")
    if args.width is not None and args.width < 1:
        parser.error(f"--width must be at least 1, got {args.width}")
    if args.steps is not None and args.steps < 1:
        parser.error(f"--steps must be at least 1, got {args.steps}")
    if args.steps is not None and args.pretrain_seconds + args.finetune_seconds <= 0:
        parser.error("--steps are split as --pretrain-seconds and --finetune-seconds are: give one of them above 0")
    try:
        check_ema_decay(args.ema_decay, "--ema-decay")
    except SkipnasError as exc:
        parser.error(str(exc))
    if not (math.isfinite(args.finetune_lr) and args.finetune_lr > 0):
        parser.error(f"--finetune-lr must be above 0 (e.g. 5e-4), got {args.finetune_lr:g}")
    try:
        seeds = [int(seed) for seed in args.seeds.split(",")]
    except ValueError:
        print(f"real_datasets: --seeds must be comma-separated integers, got {args.seeds!r}", file=sys.stderr)
        return 2
    try:
        recipe = parse_recipe(args.set)
    except ValueError as exc:
        print(f"real_datasets: {exc}", file=sys.stderr)
        return 2
    rows: list[dict[str, Any]] = []
    try:
        for data in args.data:
            for seed in seeds:
                rows += network_rows(data, seed, args, fixed=False, recipe=recipe)
                if args.fixed:
                    rows += network_rows(data, seed, args, fixed=True, recipe={})
                write_csv(args.out, rows)  # after each network, so a long run keeps what it finished
            if not args.no_classical:
                rows += classical_rows(data)
                write_csv(args.out, rows)
    except SkipnasError as exc:
        print(f"real_datasets: {exc}", file=sys.stderr)
        return 2
    for line in summarise(rows):
        print(
            f"{line['dataset']:32s} {line['method']:38s} {line['split']:4s} seeds {line['seeds']} images {line['images']:3d}  "
            f"relative count error {line['relative_count_error']:.3f}  count MAE {line['count_mae']:.2f}  "
            f"object precision {line['object_precision']:.3f} recall {line['object_recall']:.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
