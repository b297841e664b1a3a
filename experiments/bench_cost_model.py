"""A trial's predicted peak memory (training step, validation, the trial) against traces and measurements.

    python experiments/bench_cost_model.py                 # 20 genomes x widths 16, 32
    python experiments/bench_cost_model.py --smoke         # 3 tiny genomes: checks the plumbing

For each genome and width the cost model predicts, on fake tensors, the peak bytes of a training
step and of a validation batch with the training state held (``skipnas.cost.estimate_cost``). The
same trace on real CPU tensors checks that fake tensors see the same storages; on a CUDA machine
``measure_peak_cuda`` runs both stages for real (``torch.cuda.max_memory_allocated``), the
prediction of each stage is compared with its measurement, and the trial's prediction (the larger
stage plus ``CUDA_WORKSPACE_BYTES``) with the larger measurement.

Target: every prediction at or above its measured peak, and within 15 % of it. Writes a CSV
(``--out``) with one row per (genome, width) and prints the ratios' range per stage.
"""

from __future__ import annotations

import argparse
import random
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from skipnas.cost import CostConfig, estimate_cost, measure_peak_cuda
from skipnas.fileio import write_csv_atomic
from skipnas.genome import Genome
from skipnas.runtime.device import describe_machine

MIB = 2**20


def random_genomes(n: int, depth: int, seed: int) -> list[Genome]:
    rng = random.Random(seed)
    named = [Genome.named(name, depth=depth) for name in ("standard", "semi-dense", "reverse", "dense", "none")]
    randoms = [Genome.from_genes([rng.randint(0, 1) for _ in range(depth * depth)], depth=depth) for _ in range(n)]
    return (named + randoms)[:n]


def _ratio(predicted: int, actual: int | None) -> float | str:
    return round(predicted / actual, 4) if actual else ""


def bench_row(genome: Genome, config: CostConfig, cpu_trace: bool, cuda: bool) -> dict[str, Any]:
    started = time.perf_counter()
    cost = estimate_cost(genome, config)
    predict_seconds = time.perf_counter() - started
    traced = estimate_cost(genome, config, tensors="cpu") if cpu_trace else None
    measured = measure_peak_cuda(genome, config) if cuda else None
    measured_trial = max(measured.train_step_bytes, measured.validation_bytes) if measured else None
    return {
        "genome": genome.name if genome.name != "custom" else "".join(map(str, genome.genes)),
        "width": genome.base_width,
        "params": cost.params,
        "predicted_train_step_mib": round(cost.predicted_train_step_bytes / MIB, 2),
        "predicted_validation_mib": round(cost.predicted_validation_bytes / MIB, 2),
        "predicted_trial_mib": round(cost.predicted_peak_mib, 2),
        "cpu_trace_train_step_ratio": _ratio(cost.predicted_train_step_bytes, traced.predicted_train_step_bytes if traced else None),
        "cpu_trace_validation_ratio": _ratio(cost.predicted_validation_bytes, traced.predicted_validation_bytes if traced else None),
        "measured_train_step_mib": round(measured.train_step_bytes / MIB, 2) if measured else "",
        "measured_validation_mib": round(measured.validation_bytes / MIB, 2) if measured else "",
        "train_step_ratio": _ratio(cost.predicted_train_step_bytes, measured.train_step_bytes if measured else None),
        "validation_ratio": _ratio(cost.predicted_validation_bytes, measured.validation_bytes if measured else None),
        "trial_ratio": _ratio(cost.predicted_peak_bytes, measured_trial),
        "predict_seconds": round(predict_seconds, 3),
    }


def summarise(rows: list[dict[str, Any]]) -> None:
    """Per ratio column: its range, and how many predictions are at or above and within 15 %."""
    for column in ("cpu_trace_train_step_ratio", "cpu_trace_validation_ratio", "train_step_ratio", "validation_ratio", "trial_ratio"):
        ratios = [row[column] for row in rows if row[column] != ""]
        if not ratios:
            continue
        within = sum(1.0 <= ratio <= 1.15 for ratio in ratios)
        print(f"{column:28s} predicted/actual {min(ratios):.3f} to {max(ratios):.3f}; {within}/{len(ratios)} at or above and within 15 %")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--genomes", type=int, default=20)
    parser.add_argument("--widths", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--tile", type=int, default=256, help="training tile (default 256)")
    parser.add_argument("--batch", type=int, default=16, help="training batch (default 16)")
    parser.add_argument("--val-tile", type=int, default=512, help="validation tile (default 512, as the trainer's)")
    parser.add_argument("--val-batch", type=int, default=8, help="validation batch (default 8, as the trainer's)")
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="bfloat16")
    parser.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    parser.add_argument("--no-cpu-trace", dest="cpu_trace", action="store_false", help="skip the trace on real CPU tensors")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="3 tiny genomes, small tiles")
    parser.add_argument("--out", type=Path, default=Path("experiments/results/cost_model.csv"))
    args = parser.parse_args()
    if args.smoke:
        args.genomes, args.widths, args.tile, args.batch, args.val_tile, args.val_batch = 3, [4], 32, 2, 64, 2

    cuda = torch.cuda.is_available()
    config = CostConfig(
        tile=args.tile, batch=args.batch, dtype=args.dtype, channels_last=args.channels_last, val_tile=args.val_tile,
        val_batch=args.val_batch, device_type="cuda" if cuda else "cpu",
    )
    rows = []
    for width in args.widths:
        for genome in random_genomes(args.genomes, 4, args.seed):
            rows.append(bench_row(genome.with_(base_width=width), config, args.cpu_trace, cuda))
            print(rows[-1], flush=True)
    comment = (
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {describe_machine()}, tile {args.tile}, batch {args.batch}, "
        f"validation tile {args.val_tile}, batch {args.val_batch}, {args.dtype}, channels_last={args.channels_last}"
    )
    write_csv_atomic(args.out, rows, comment=comment)
    summarise(rows)
    if not cuda:
        print(f"no CUDA device: predictions and CPU traces only -> {args.out}")


if __name__ == "__main__":
    main()
