"""Calibrating the counting on the CPU: seconds of ``calibrate`` on a validation split's worth of images.

    python experiments/bench_calibrate.py                               # 64 images of 96 x 96 px, the default grid
    python experiments/bench_calibrate.py --baseline ../old-checkout    # the same, against another checkout
    python experiments/bench_calibrate.py --smoke                       # 4 images, a small grid, seconds

``keep_best_by="count"`` calibrates the counting at every validation, so its cost is paid again
and again in training. The images are the demo's beads (the bead-only masks of the demo's train
splits, draws 0, 1, ...), with probability and distance maps made from the true masks by blurring
and adding seeded noise, so that every method has realistic, imperfect work. Each timed run is a
fresh process that loads the maps and calls ``calibrate`` with the default grid once. With
``--baseline``, the runs alternate between this checkout and the other one (``PYTHONPATH`` set to
each), so a change in the machine's load falls on both, and their tables must agree row for row.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
# skipnas is imported inside the functions: a timed run imports it from the checkout on its
# PYTHONPATH, which with --baseline may lack what this script's other functions use


def bead_maps(images: int, seed: int = 0) -> dict[str, np.ndarray]:
    """``images`` bead-only instance masks of the demo's train splits, with a blurred, noisy
    probability and distance map for each."""
    from skipnas.counting.seeded import instance_distance_map
    from skipnas.data.demo import class_instances, demo_classes, demo_dataset_path
    from skipnas.data.io import read_raw

    rng = np.random.default_rng(seed)
    probs, instances, maps = [], [], []
    draw = 0
    while len(instances) < images:
        root = demo_dataset_path(draw)
        for stem, ids in demo_classes(root)["train"].items():
            if len(instances) == images:
                break
            beads = class_instances(read_raw(next((root / "train" / "masks").glob(f"{stem}.*"))), ids, "bead")
            foreground = (beads > 0).astype(np.float32)
            probs.append(np.clip(cv2.GaussianBlur(foreground, (0, 0), 1.2) + rng.normal(0, 0.15, beads.shape), 0, 1))
            distance = cv2.GaussianBlur(instance_distance_map(beads), (0, 0), 1.0) + rng.normal(0, 0.05, beads.shape)
            maps.append(np.clip(distance, 0, 1))
            instances.append(beads)
        draw += 1
    return {"probs": np.stack(probs).astype(np.float32), "instances": np.stack(instances), "maps": np.stack(maps).astype(np.float32)}


def time_calibrate(maps_file: Path, small_grid: bool) -> dict[str, object]:
    """One timed ``calibrate`` of the saved maps: seconds, settings and a digest of the table."""
    from skipnas.counting.calibrate import CalibrationGrid, calibrate
    from skipnas.counting.postprocess import PostprocessConfig

    grid = CalibrationGrid(thresholds=(0.5,), erode=(0,), dilate=(0, 3), min_area=(0, 30)) if small_grid else CalibrationGrid()
    with np.load(maps_file) as saved:
        probs, instances, maps = list(saved["probs"]), list(saved["instances"]), list(saved["maps"])
    started = time.perf_counter()
    # the rule every checkout has, so that the two tables compare row for row
    _, table = calibrate(probs, instances, grid=grid, auxiliary=maps, selection="stable")
    seconds = time.perf_counter() - started
    # fields at their defaults are left out, so a checkout with a newer (neutral) setting hashes alike;
    # so are the matched-particle columns, which older checkouts lack
    defaults = PostprocessConfig().to_dict()
    rows = [
        {key: value for key, value in row.items() if (key not in defaults or defaults[key] != value) and "object" not in key}
        for row in table["results"]
    ]
    digest = hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()
    return {"seconds": seconds, "settings": table["settings"], "table": digest}


def run_in(checkout: Path, maps_file: Path, small_grid: bool) -> dict[str, object]:
    """:func:`time_calibrate` in a fresh process importing skipnas from ``checkout``."""
    command = [sys.executable, str(Path(__file__).resolve()), "--time-only", str(maps_file)] + (["--smoke"] if small_grid else [])
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=checkout)
    if result.returncode != 0:
        raise SystemExit(f"calibrating with {checkout} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=64, help="calibration images (a validation split's worth)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each checkout; the fastest is reported")
    parser.add_argument("--baseline", type=Path, help="another checkout of skipnas to time the same way, for a before/after")
    parser.add_argument("--smoke", action="store_true", help="4 images, a small grid, one repeat")
    parser.add_argument("--time-only", type=Path, metavar="MAPS", help=argparse.SUPPRESS)  # a timed run's process
    parser.add_argument("--out", type=Path, default=Path("experiments/results/bench_calibrate.csv"))
    args = parser.parse_args()
    if args.time_only is not None:
        print(json.dumps(time_calibrate(args.time_only, args.smoke)))
        return
    if args.smoke:
        args.images, args.repeats = 4, 1
    if args.baseline is not None and not (args.baseline / "skipnas" / "counting" / "calibrate.py").is_file():
        parser.error(f"--baseline {args.baseline}: no skipnas checkout there (skipnas/counting/calibrate.py is missing)")

    from skipnas.fileio import write_csv_atomic
    from skipnas.runtime.device import describe_machine

    checkouts = {"this checkout": REPO} | ({"baseline": args.baseline.resolve()} if args.baseline is not None else {})
    load_before = os.getloadavg()[0]
    times: dict[str, list[dict[str, object]]] = {name: [] for name in checkouts}
    with tempfile.TemporaryDirectory(prefix="bench-calibrate-") as scratch:
        maps_file = Path(scratch) / "maps.npz"
        np.savez(maps_file, **bead_maps(args.images))
        for _ in range(args.repeats):
            for name, checkout in checkouts.items():
                times[name].append(run_in(checkout, maps_file, args.smoke))
                print(name, times[name][-1], flush=True)
    tables = {run["table"] for runs in times.values() for run in runs}
    if len(tables) != 1:
        raise SystemExit("the checkouts' calibration tables differ: the change altered what calibration chooses")
    rows = [
        {
            "checkout": name,
            "images": args.images,
            "settings": runs[0]["settings"],
            "fastest_s": round(min(float(run["seconds"]) for run in runs), 2),
            "runs_s": " ".join(f"{float(run['seconds']):.2f}" for run in runs),
        }
        for name, runs in times.items()
    ]
    command = "python experiments/bench_calibrate.py" + (
        " --smoke" if args.smoke else f" --images {args.images} --repeats {args.repeats}" + (f" --baseline {args.baseline}" if args.baseline else "")
    )
    comment = (
        f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {describe_machine()}, load average {load_before:.2f} at the start, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}; runs alternated; identical tables; {command}"
    )
    write_csv_atomic(args.out, rows, comment=comment)
    for row in rows:
        print(row)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
