"""Packing trials on one GPU: aggregate training images/s of K concurrent width-16 trials against one.

    python experiments/bench_packing.py --out experiments/results/packing_gpu.csv      # K = 1, 2, 4, 8 on cuda
    python experiments/bench_packing.py --smoke --out /tmp/packing.csv                 # CPU, tiny, seconds

A small candidate leaves most of a modern GPU idle, which is what ``skipnas search --jobs-per-gpu K``
uses: K worker processes train their trials on the same GPU at once. This runs K processes, each
training the ``standard`` genome exactly as a search trial does (the trainer's optimisation step,
its loss, bf16 autocast and channels_last on CUDA) on random batches of ``--tile`` px, all starting
together after a warm-up; after ``--seconds`` each reports how many images it trained on. The
aggregate images/s of K processes over that of one is the packing speed-up (target: at least 3x
for K = 4). Random batches keep data loading out of the measurement: it is the GPU's share that is
measured, not the input pipeline's.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import queue
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from skipnas.fileio import write_csv_atomic


def _train_worker(
    device: str, width: int, tile: int, batch: int, warmup_steps: int, seconds: float, barrier: Any, results: Any
) -> None:
    """One packed trial: warm up, wait for the others, train for ``seconds``, report (steps, seconds)."""
    import torch

    from skipnas.genome import Genome
    from skipnas.models import build_model
    from skipnas.runtime.device import place_model, select_device
    from skipnas.train.config import TrainConfig
    from skipnas.train.step import train_step
    from skipnas.train.trainer import training_loss

    torch.set_num_threads(1)  # K processes share the host's cores; the GPU does the work
    setup = select_device(device)
    model = place_model(build_model(Genome.named("standard", base_width=width)), setup)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = training_loss(TrainConfig(device=device))
    memory_format = torch.channels_last if setup.channels_last else torch.contiguous_format
    images = torch.randn(batch, 1, tile, tile, device=setup.device).contiguous(memory_format=memory_format)
    targets = (torch.rand(batch, 1, tile, tile, device=setup.device) > 0.8).float()

    def synchronise() -> None:
        if setup.device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(warmup_steps):
        train_step(model, optimizer, images, targets, loss_fn, setup.amp_dtype)
    synchronise()
    barrier.wait()
    started = time.perf_counter()
    steps = 0
    while time.perf_counter() - started < seconds:
        # a sync every few steps: the clock then measures finished work, at little cost to the queue
        for _ in range(4):
            train_step(model, optimizer, images, targets, loss_fn, setup.amp_dtype)
        steps += 4
        synchronise()
    results.put((steps, time.perf_counter() - started))


def measure_packing(
    packs: list[int], device: str, width: int, tile: int, batch: int, warmup_steps: int, seconds: float
) -> list[dict[str, Any]]:
    """One row per K: aggregate images/s of K concurrent trials and its ratio (speedup) to the first K, normally 1."""
    context = mp.get_context("spawn")  # CUDA cannot be used in forked children
    rows: list[dict[str, Any]] = []
    for k in packs:
        barrier, results = context.Barrier(k), context.Queue()
        workers = [
            context.Process(target=_train_worker, args=(device, width, tile, batch, warmup_steps, seconds, barrier, results))
            for _ in range(k)
        ]
        for worker in workers:
            worker.start()
        reports: list[tuple[int, float]] = []
        while len(reports) < k:
            try:
                reports.append(results.get(timeout=5))
            except queue.Empty:
                if any(worker.exitcode not in (None, 0) for worker in workers):
                    for worker in workers:  # the others wait at the barrier for the one that died
                        worker.terminate()
                    raise RuntimeError(f"a packed trial failed (K = {k}); see its output above") from None
        for worker in workers:
            worker.join()
        images_per_s = sum(steps * batch / elapsed for steps, elapsed in reports)
        rows.append(
            {
                "k": k,
                "device": device,
                "width": width,
                "tile": tile,
                "batch": batch,
                "seconds": seconds,
                "steps_per_trial": "/".join(str(steps) for steps, _ in reports),
                "aggregate_images_per_s": round(images_per_s, 1),
                "per_trial_images_per_s": round(images_per_s / k, 1),
                "speedup": round(images_per_s / rows[0]["aggregate_images_per_s"], 2) if rows else 1.0,
            }
        )
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--packs", type=int, nargs="+", default=[1, 2, 4, 8], help="numbers of concurrent trials (default 1 2 4 8)")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--warmup-steps", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=20.0, help="measured training time per K (default 20)")
    parser.add_argument("--smoke", action="store_true", help="CPU, width 4, 32 px, K = 1 and 2, one second each")
    parser.add_argument("--out", type=Path, default=Path("experiments/results/packing_gpu.csv"))
    args = parser.parse_args()
    if args.smoke:
        args.packs, args.device, args.width, args.tile, args.batch, args.warmup_steps, args.seconds = [1, 2], "cpu", 4, 32, 2, 1, 1.0
    if sorted(set(args.packs)) != args.packs or args.packs[0] < 1:
        parser.error("--packs: increasing positive integers, e.g. 1 2 4 8")

    from skipnas.runtime.device import describe_machine

    rows = measure_packing(args.packs, args.device, args.width, args.tile, args.batch, args.warmup_steps, args.seconds)
    comment = f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {describe_machine()}, standard genome, random batches"
    write_csv_atomic(args.out, rows, comment=comment)


if __name__ == "__main__":
    main()
