"""Training speed against the reference U-Net: skipnas's ``standard`` genome and the classic U-Net
as the widely used reference implementation builds it, trained in one run on the same machine.

    python experiments/bench_reference.py                      # CPU: width 16, 128 px, batch 8, 2 threads
    python experiments/bench_reference.py --device cuda        # GPU: width 64, 256 px, batch 16
    python experiments/bench_reference.py --smoke              # tiny sizes, seconds

The reference (:class:`skipnas.models.reference.ClassicUNet`) trains in fp32, channels-first, with
biased convolutions and bilinear upsampling; skipnas's model trains as skipnas's trainer trains it:
:func:`skipnas.runtime.device.select_device` (channels_last on CPU and CUDA, bf16 autocast on CUDA) and
the trainer's own :func:`skipnas.train.step.train_step`. Both get the same loss (skipnas's default
BCE + soft Dice), Adam at 1e-3 and the same random batches. Blocks of ``--steps`` steps alternate
between the two models for ``--rounds`` rounds (which goes first alternates too), so load from other
work on the machine hits both alike; each model's step time is the median over its blocks.
Writes one row per model and a ratio row (skipnas images/s over reference images/s).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from skipnas.fileio import write_csv_atomic
from skipnas.genome import Genome
from skipnas.models import build_model
from skipnas.models.reference import ClassicUNet
from skipnas.runtime.device import DeviceSetup, cpu_name, place_model, select_device
from skipnas.train.losses import LossConfig, build_loss
from skipnas.train.step import train_step

# the targets: skipnas images/s over the reference's
TARGETS = {"cpu": 1.2, "cuda": 5.0}
DEFAULTS: dict[str, dict[str, int]] = {
    "cpu": {"width": 16, "tile": 128, "batch": 8, "steps": 8, "rounds": 30, "warmup": 4, "threads": 2},
    "cuda": {"width": 64, "tile": 256, "batch": 16, "steps": 20, "rounds": 10, "warmup": 10, "threads": 0},
}
# one thread: tiny tensors gain nothing from more, and the test suite may share the cores
SMOKE = {"width": 4, "tile": 32, "batch": 2, "steps": 2, "rounds": 2, "warmup": 1, "threads": 1}
DATA_BATCHES = 4  # distinct random batches, cycled: data is the same for both models, never the bottleneck


@dataclass
class Contender:
    name: str
    model: nn.Module
    setup: DeviceSetup
    optimizer: torch.optim.Optimizer
    block_seconds: list[float] = field(default_factory=list)  # mean step time of each timed block

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.setup.channels_last else torch.contiguous_format

    @property
    def precision(self) -> str:
        return "fp32" if self.setup.amp_dtype is None else str(self.setup.amp_dtype).removeprefix("torch.")

    @property
    def median_step(self) -> float:
        return statistics.median(self.block_seconds)



def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_block(contender: Contender, batches: list[tuple[torch.Tensor, torch.Tensor]], steps: int, loss_fn: Any) -> float:
    """Mean seconds per step over ``steps`` steps, as the trainer runs them (memory-format conversion included)."""
    device = contender.setup.device
    _sync(device)
    started = time.perf_counter()
    for step in range(steps):
        images, targets = batches[step % len(batches)]
        images = images.contiguous(memory_format=contender.memory_format)
        train_step(contender.model, contender.optimizer, images, targets, loss_fn, contender.setup.amp_dtype)
    _sync(device)
    return (time.perf_counter() - started) / steps


def make_contenders(device: str, width: int) -> list[Contender]:
    """The reference exactly as it is built and trained elsewhere, and skipnas as its trainer sets it up."""
    torch.manual_seed(0)
    reference_setup = DeviceSetup(torch.device(device), amp_dtype=None, channels_last=False)
    reference = place_model(ClassicUNet(in_channels=1, classes=1, width=width, conv_bias=True), reference_setup)
    torch.manual_seed(0)
    skipnas_setup = select_device(device)
    skipnas_model = place_model(build_model(Genome.named("standard", base_width=width), in_channels=1, classes=1), skipnas_setup)
    return [
        Contender("reference", reference, reference_setup, torch.optim.Adam(reference.parameters(), lr=1e-3)),
        Contender("skipnas standard", skipnas_model, skipnas_setup, torch.optim.Adam(skipnas_model.parameters(), lr=1e-3)),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--width", type=int, help="base width (channels of level 0); CPU 16, CUDA 64")
    parser.add_argument("--tile", type=int, help="tile side in px; CPU 128, CUDA 256")
    parser.add_argument("--batch", type=int, help="CPU 8, CUDA 16")
    parser.add_argument("--steps", type=int, help="timed steps per block; CPU 8, CUDA 20")
    parser.add_argument("--rounds", type=int, help="blocks per model, alternating; CPU 30, CUDA 10")
    parser.add_argument("--warmup", type=int, help="untimed steps per model first; CPU 4, CUDA 10")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads; CPU 2, CUDA: torch's default (0)")
    parser.add_argument(
        "--max-seconds", type=float, default=240.0,
        help="stop after the round that passes this many seconds of timing (a loaded machine is slow; default 240)",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU, seconds")
    parser.add_argument("--out", type=Path, help="CSV to write; default experiments/results/reference_DEVICE.csv")
    args = parser.parse_args()
    if args.smoke:
        args.device = "cpu"
    out = args.out or Path(f"experiments/results/reference_{args.device}.csv")
    settings = dict(SMOKE if args.smoke else DEFAULTS[args.device])
    for name in settings:
        if getattr(args, name) is not None:
            settings[name] = getattr(args, name)
    if settings["threads"] > 0:
        torch.set_num_threads(settings["threads"])
    width, tile, batch, steps, rounds = (settings[k] for k in ("width", "tile", "batch", "steps", "rounds"))

    load_before = os.getloadavg()[0]
    contenders = make_contenders(args.device, width)
    loss_fn = build_loss(LossConfig())
    generator = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(DATA_BATCHES):
        images = torch.randn(batch, 1, tile, tile, generator=generator)
        # sparse binary targets, as micrographs' particle masks are
        targets = (torch.rand(batch, 1, tile, tile, generator=generator) < 0.05).float()
        batches.append((images.to(args.device), targets.to(args.device)))

    for contender in contenders:
        run_block(contender, batches, settings["warmup"], loss_fn)
    timing_started = time.perf_counter()
    for round_index in range(rounds):
        # alternate which model goes first, so neither always follows the other's cache state
        order = contenders if round_index % 2 == 0 else contenders[::-1]
        for contender in order:
            contender.block_seconds.append(run_block(contender, batches, steps, loss_fn))
        if time.perf_counter() - timing_started > args.max_seconds:
            break
    rounds = len(contenders[0].block_seconds)

    threads = torch.get_num_threads()
    rows: list[dict[str, Any]] = []
    for contender in contenders:
        rows.append(
            {
                "device": args.device,
                "model": contender.name,
                "width": width,
                "tile": tile,
                "batch": batch,
                "threads": threads,
                "precision": contender.precision,
                "memory_format": "channels_last" if contender.setup.channels_last else "channels_first",
                "params": sum(p.numel() for p in contender.model.parameters()),
                "median_step_s": round(contender.median_step, 5),
                "images_per_s": round(batch / contender.median_step, 2),
                "ratio": "",
                "round_ratio_median": "",
                "round_ratio_min": "",
                "round_ratio_max": "",
            }
        )
    reference, ours = contenders
    ratio = reference.median_step / ours.median_step  # images/s ratio: the batch is the same
    # each round's own ratio: both blocks ran back to back, so they saw nearly the same machine load
    per_round = [r / s for r, s in zip(reference.block_seconds, ours.block_seconds)]
    rows.append(
        {
            **{key: "" for key in rows[0]},
            **{key: rows[0][key] for key in ("device", "width", "tile", "batch", "threads")},
            "model": "skipnas / reference",
            "ratio": round(ratio, 3),
            "round_ratio_median": round(statistics.median(per_round), 3),
            "round_ratio_min": round(min(per_round), 3),
            "round_ratio_max": round(max(per_round), 3),
        }
    )

    print(f"{'model':<22}{'precision':>10}{'format':>16}{'step s':>10}{'img/s':>10}")
    for row in rows[:-1]:
        print(f"{row['model']:<22}{row['precision']:>10}{row['memory_format']:>16}{row['median_step_s']:>10.4f}{row['images_per_s']:>10.1f}")
    verdict = "" if args.smoke else f"; target {TARGETS[args.device]:g}x: {'met' if ratio >= TARGETS[args.device] else 'missed'}"
    print(f"skipnas / reference images/s: {ratio:.2f}x (per round: median {statistics.median(per_round):.2f}x, "
          f"{min(per_round):.2f}-{max(per_round):.2f}x{verdict})")

    if args.device == "cuda":
        machine = f"{torch.cuda.get_device_name()}, cudnn.allow_tf32={torch.backends.cudnn.allow_tf32}"
    else:
        machine = f"{cpu_name()}, {os.cpu_count()} cores"
    comment = (
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {machine}, torch {torch.__version__}, load average "
        f"{load_before:.1f} at the start and {os.getloadavg()[0]:.1f} at the end; "
        f"{rounds} alternating rounds of {steps} steps per model after {settings['warmup']} warm-up steps"
    )
    write_csv_atomic(out, rows, comment=comment)


if __name__ == "__main__":
    main()
