"""``skipnas count`` on one large image on the CPU: wall time and peak memory against the tile size.

    python experiments/bench_count_large.py                 # 4096 x 4096 px, tiles 128, 256, 512, 1024
    python experiments/bench_count_large.py --smoke         # 256 x 256 px, tiles 64 and 128, seconds

A seeded synthetic 8-bit grey micrograph (fibres, discs and fragments drawn with OpenCV on a noisy,
unevenly lit background) and a ``standard`` genome trained briefly on a smaller image drawn the same
way (skipnas's own train step; enough to segment the drawn particles, so the counting has realistic
work) saved with skipnas's ``save_model_folder``, once per tile size, since ``skipnas count`` reads
the tile from the model folder. Each ``skipnas count --device cpu`` runs in a fresh process, started
by a small launcher that reads its peak resident memory (``ru_maxrss`` of its one child), so no
run's peak hides another's and this process's own memory hides none. A first row counts a 64 x 64
image: the fixed cost of starting the command (Python, torch, the model) that every row includes.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from skipnas.counting.postprocess import AUXILIARY_METHODS, METHODS, PostprocessConfig
from skipnas.fileio import write_csv_atomic
from skipnas.genome import Genome
from skipnas.modelio import save_model_folder
from skipnas.models import build_model
from skipnas.runtime.device import describe_machine, place_model, select_device
from skipnas.runtime.normalise import Normalisation
from skipnas.train.losses import LossConfig, build_loss
from skipnas.train.step import train_step

OBJECTS_PER_MPX = 45  # about 12 particles in a 512 x 512 field: sparse, some touching
TRAIN_SIZE = 1024
TRAIN_TILE = 64  # skipnas's default training tile


def draw_scene(size: int, seed: int) -> tuple[np.ndarray, np.ndarray, int]:
    """A ``size`` x ``size`` uint8 micrograph, its binary particle mask and the number of particles drawn."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    # uneven illumination: a tilted plane and one broad bump, as under a microscope lamp
    background = 45 + 25 * xx + 15 * yy + 20 * np.exp(-((xx - rng.random()) ** 2 + (yy - rng.random()) ** 2) / 0.2)
    mask = np.zeros((size, size), np.uint8)
    shade = np.zeros((size, size), np.uint8)
    objects = max(3, round(OBJECTS_PER_MPX * size * size / 1e6))
    for _ in range(objects):
        brightness = int(rng.integers(110, 200))
        centre = rng.uniform(0, size, 2)
        kind = rng.choice(["fibre", "disc", "fragment"], p=[0.5, 0.3, 0.2])
        layer = np.zeros_like(mask)
        if kind == "fibre":
            # a gently curving strand: a random walk of the heading
            points, heading = [centre], rng.uniform(0, 2 * math.pi)
            for _ in range(int(rng.integers(4, 10))):
                heading += rng.normal(0, 0.35)
                points.append(points[-1] + rng.uniform(8, 20) * np.array([math.cos(heading), math.sin(heading)]))
            polyline = np.round(np.array(points)).astype(np.int32).reshape(-1, 1, 2)
            cv2.polylines(layer, [polyline], False, 1, thickness=int(rng.integers(2, 5)), lineType=cv2.LINE_8)
        elif kind == "disc":
            cv2.circle(layer, tuple(int(c) for c in centre), int(rng.integers(4, 12)), 1, thickness=-1)
        else:
            angles = np.sort(rng.uniform(0, 2 * math.pi, int(rng.integers(5, 9))))
            radii = rng.uniform(5, 16, len(angles))
            polygon = centre + np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)
            cv2.fillPoly(layer, [np.round(polygon).astype(np.int32)], 1)
        shade[layer > 0] = brightness
        mask |= layer
    image = background + shade.astype(np.float32)
    image = cv2.GaussianBlur(image, (3, 3), 0.8) + rng.normal(0, 8, (size, size)).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8), mask, objects


def train_model(steps: int, width: int, seed: int, size: int = TRAIN_SIZE) -> tuple[torch.nn.Module, Genome, Normalisation, float]:
    """A ``standard`` genome trained for ``steps`` steps of batch 8 on random crops, as skipnas trains a step.

    Returns the model, its genome, the normalisation and the last 10 steps' mean loss.
    """
    image, mask, _ = draw_scene(size, seed + 1)
    scaled = image.astype(np.float32) / 255
    normalisation = Normalisation((float(scaled.mean()),), (float(scaled.std()),), 255.0)
    inputs = (scaled - normalisation.mean[0]) / normalisation.std[0]
    torch.manual_seed(seed)
    genome = Genome.named("standard", base_width=width)
    setup = select_device("cpu")
    model = place_model(build_model(genome, in_channels=1, classes=1), setup)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = build_loss(LossConfig())
    rng = np.random.default_rng(seed)
    tile = min(TRAIN_TILE, size)
    losses = []
    model.train()
    for _ in range(steps):
        corners = rng.integers(0, size - tile + 1, size=(8, 2))
        images = np.stack([inputs[y : y + tile, x : x + tile] for y, x in corners])[:, None]
        targets = np.stack([mask[y : y + tile, x : x + tile] for y, x in corners])[:, None].astype(np.float32)
        batch = torch.from_numpy(images).contiguous(memory_format=torch.channels_last)
        losses.append(float(train_step(model, optimizer, batch, torch.from_numpy(targets), loss_fn)))
    return model.eval(), genome, normalisation, float(np.mean(losses[-10:]))


# Runs the command and writes its wall seconds and peak RSS to argv[1]. A child's ru_maxrss starts at
# the RSS of the process it was forked from (Linux keeps the old high-water mark across exec), so
# forking ``skipnas count`` straight from this process (torch and a model loaded) would report this
# process's size; forked from this small launcher instead, it reports its own peak.
LAUNCHER = """
import json, resource, subprocess, sys, time
started = time.perf_counter()
code = subprocess.call(sys.argv[2:])
seconds = time.perf_counter() - started
with open(sys.argv[1], "w") as handle:
    json.dump({"code": code, "seconds": seconds, "maxrss_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}, handle)
"""



def run_count(model_dir: Path, image: Path, out: Path, threads: int | None = None) -> dict[str, Any]:
    """``skipnas count`` in a fresh process: wall seconds, that process's peak RSS (MiB) and the count.

    ``threads`` sets OMP_NUM_THREADS for it (None: torch's default, one per core).
    """
    command = [sys.executable, "-m", "skipnas", "count", str(model_dir), str(image), "--out", str(out), "--device", "cpu", "--json"]
    with tempfile.TemporaryDirectory(prefix="launch-") as tmp:
        report = Path(tmp) / "usage.json"
        env = dict(os.environ) if threads is None else {**os.environ, "OMP_NUM_THREADS": str(threads)}
        result = subprocess.run([sys.executable, "-c", LAUNCHER, str(report), *command], capture_output=True, text=True, env=env)
        usage = json.loads(report.read_text()) if report.exists() else {"code": result.returncode}
    if result.returncode != 0 or usage["code"] != 0:
        raise RuntimeError(f"skipnas count failed with exit code {usage['code']}:\n{result.stderr[-2000:]}")
    printed = result.stdout
    counted = json.loads(printed[printed.index("{") :])
    # ru_maxrss is in KiB on Linux
    return {"seconds": usage["seconds"], "peak_mib": usage["maxrss_kib"] / 1024, "count": int(counted["total"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=4096, help="side of the square test image in px")
    parser.add_argument("--tiles", type=int, nargs="+", default=[128, 256, 512, 1024])
    parser.add_argument("--width", type=int, default=16, help="base width of the standard genome")
    parser.add_argument("--train-steps", type=int, default=300, help="training steps (batch 8, 64 px crops)")
    parser.add_argument("--method", choices=[m for m in METHODS if m not in AUXILIARY_METHODS], default="blobs", help="the counting method")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="256 x 256 px, tiles 64 and 128, width 4, 5 steps")
    parser.add_argument("--out", type=Path, default=Path("experiments/results/count_large.csv"))
    args = parser.parse_args()
    threads = None
    if args.smoke:
        args.size, args.tiles, args.width, args.train_steps = 256, [64, 128], 4, 5
        # one thread: tiny tensors gain nothing from more, and the test suite may share the cores
        threads = 1
        torch.set_num_threads(1)

    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    model, genome, normalisation, loss = train_model(args.train_steps, args.width, args.seed, min(TRAIN_SIZE, args.size))
    trained = time.perf_counter() - started
    print(f"trained {genome.name} width {args.width}: {args.train_steps} steps in {trained:.1f} s, final loss {loss:.3f}", flush=True)
    postprocess = PostprocessConfig(threshold=0.5, min_area=10, method=args.method)

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-count-") as tmp:
        work = Path(tmp)
        image, mask, drawn = draw_scene(args.size, args.seed)
        image_path = work / f"scene-{args.size}.png"
        cv2.imwrite(str(image_path), image)
        # the start-up row's 64 x 64 image holds a particle, as a real one would
        ys, xs = np.nonzero(mask)
        side = min(64, args.size)
        y, x = (min(max(int(c) - side // 2, 0), args.size - side) for c in (ys[len(ys) // 2], xs[len(xs) // 2]))
        cv2.imwrite(str(work / "tiny.png"), image[y : y + side, x : x + side])
        for tile in args.tiles:
            save_model_folder(
                work / f"model-{tile}", model, genome, normalisation, postprocess, in_channels=1, inference_tile=tile,
                training={"steps": args.train_steps, "final_loss": loss, "data": "synthetic scene, bench_count_large.py"},
            )
        # the fixed cost of the command (not in smoke mode, to keep it to seconds: the same code path)
        runs = [] if args.smoke else [("64x64", None, work / "tiny.png")]
        runs += [(f"{args.size}x{args.size}", t, image_path) for t in args.tiles]
        for label, tile, path in runs:
            measured = run_count(work / f"model-{tile or args.tiles[0]}", path, work / f"counts-{label}-{tile}", threads)
            rows.append(
                {
                    "image_px": label,
                    "tile": tile or args.tiles[0],
                    "seconds": round(measured["seconds"], 2),
                    "peak_mib": round(measured["peak_mib"], 1),
                    "count": measured["count"],
                }
            )
            print(rows[-1], flush=True)

    print(f"{'image':>10}{'tile':>7}{'seconds':>10}{'peak MiB':>10}{'count':>8}")
    for row in rows:
        print(f"{row['image_px']:>10}{row['tile']:>7}{row['seconds']:>10.1f}{row['peak_mib']:>10.0f}{row['count']:>8}")
    comment = (
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {describe_machine()}, "
        f"load average {load_before:.1f} at the start and {os.getloadavg()[0]:.1f} at the end; skipnas count --device cpu "
        f"(overlays on), standard width {args.width} trained {args.train_steps} steps in {trained:.0f} s (final loss "
        f"{loss:.3f}), counting {args.method}; {drawn} particles drawn in the {args.size} px image, some touching "
        f"(the count merges those)"
    )
    write_csv_atomic(args.out, rows, comment=comment)


if __name__ == "__main__":
    main()
