"""Predicted peak training memory against the measured CUDA peak, over random genomes at two widths.

    python experiments/bench_cost_model.py                 # on a CUDA machine: 20 genomes x widths 16, 32
    python experiments/bench_cost_model.py --smoke         # anywhere: 3 tiny genomes, predictions only

Target: prediction within 10% of ``torch.cuda.max_memory_allocated`` for every genome. Writes a CSV
(``--out``) with one row per (genome, width) and prints the error distribution.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from skipnas.cost import CostConfig, estimate_cost, measure_peak_cuda
from skipnas.fileio import write_csv_atomic
from skipnas.train.device import describe_machine
from skipnas.genome import Genome


def random_genomes(n: int, depth: int, seed: int) -> list[Genome]:
    rng = random.Random(seed)
    named = [Genome.named(name, depth=depth) for name in ("standard", "semi-dense", "reverse", "dense", "none")]
    randoms = [Genome.from_genes([rng.randint(0, 1) for _ in range(depth * depth)], depth=depth) for _ in range(n)]
    return (named + randoms)[:n]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--genomes", type=int, default=20)
    parser.add_argument("--widths", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--dtype", choices=("float32", "bfloat16"), default="bfloat16")
    parser.add_argument("--channels-last", action="store_true", default=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, predictions only when there is no GPU")
    parser.add_argument("--out", type=Path, default=Path("experiments/results/cost_model.csv"))
    args = parser.parse_args()
    if args.smoke:
        args.genomes, args.widths, args.tile, args.batch = 3, [4], 32, 2

    cuda = torch.cuda.is_available()
    device = describe_machine()
    rows = []
    for width in args.widths:
        for genome in random_genomes(args.genomes, 4, args.seed):
            genome = genome.with_(base_width=width)
            config = CostConfig(tile=args.tile, batch=args.batch, dtype=args.dtype, channels_last=args.channels_last)
            started = time.perf_counter()
            cost = estimate_cost(genome, config)
            predict_s = time.perf_counter() - started
            measured = measure_peak_cuda(genome, config) if cuda else None
            error = (cost.predicted_peak_bytes - measured) / measured if measured else None
            rows.append(
                {
                    "genome": genome.name if genome.name != "custom" else "".join(map(str, genome.genes)),
                    "width": width,
                    "params": cost.params,
                    "predicted_mib": round(cost.predicted_peak_mib, 2),
                    "measured_mib": round(measured / 2**20, 2) if measured else "",
                    "relative_error": round(error, 4) if error is not None else "",
                    "predict_seconds": round(predict_s, 3),
                }
            )
            print(rows[-1], flush=True)

    comment = (
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {device}, tile {args.tile}, "
        f"batch {args.batch}, {args.dtype}, channels_last={args.channels_last}"
    )
    write_csv_atomic(args.out, rows, comment=comment)
    errors = [abs(r["relative_error"]) for r in rows if r["relative_error"] != ""]
    if errors:
        within = sum(e <= 0.10 for e in errors)
        print(f"|error| median {statistics.median(errors):.1%}, max {max(errors):.1%}; "
              f"{within}/{len(errors)} within 10% ({device})")
    else:
        print(f"no CUDA device: predictions only ({len(rows)} genomes) -> {args.out}")


if __name__ == "__main__":
    main()
