"""The counting ceiling: each counting method applied to the ground-truth masks themselves.

    python experiments/count_ceiling.py --data ../shared/data/sem-fibres-shi2022/extracted
    python experiments/count_ceiling.py --data demo --min-area 5
    python experiments/count_ceiling.py --smoke            # the demo data

A perfect segmentation counted by a method still errs where the method merges or splits particles
(crossing fibres, touching beads); this is the best any network can reach with that method.
The seeded method gets the auxiliary target made from the true instances, as a perfectly trained
auxiliary head would predict it. Writes one CSV row per (split, method) with count MAE and
relative count error.
"""

from __future__ import annotations

import argparse
from datetime import datetime, timezone
from pathlib import Path

from skipnas.counting.postprocess import PostprocessConfig, count_particles
from skipnas.counting.seeded import instance_distance_map
from skipnas.data.io import count_instances
from skipnas.data.loading import load_labeled
from skipnas.data.scan import resolve_dataset
from skipnas.data.validate import check_dataset
from skipnas.fileio import write_csv_atomic
from skipnas.runtime.metrics import count_metrics

METHODS = {
    "blobs (8-connected)": PostprocessConfig(method="blobs"),
    "watershed": PostprocessConfig(method="watershed"),
    "fibres (max turn 45 deg)": PostprocessConfig(method="fibres"),
    "seeded by the true distance map (seeds > 0.5)": PostprocessConfig(method="seeded", seed_threshold=0.5),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="demo")
    parser.add_argument("--min-area", type=int, default=30, help="particles below this many pixels are not counted")
    parser.add_argument("--smoke", action="store_true", help="the demo data")
    parser.add_argument("--out", type=Path, default=Path("experiments/results/count_ceiling.csv"))
    args = parser.parse_args()
    if args.smoke:
        args.data = "demo"
    index = check_dataset(resolve_dataset(args.data))
    rows = []
    for split in index.splits:
        images = load_labeled(index.samples(split))
        if not images:
            continue
        truth = [count_instances(item.instances) for item in images]
        masks = [(item.instances > 0).astype("float32") for item in images]
        # the auxiliary target a perfectly trained head would predict, for the seeded method
        maps = [instance_distance_map(item.instances) for item in images]
        for name, method in METHODS.items():
            config = method.replace(min_area=args.min_area)
            counted = [count_particles(mask, config, extra).count for mask, extra in zip(masks, maps, strict=True)]
            metrics = count_metrics(counted, truth)
            rows.append(
                {
                    "split": split,
                    "method": f"{name}, min area {args.min_area} px",
                    "images": len(images),
                    "true_particles": sum(truth),
                    "count_mae": round(metrics["count_mae"], 3),
                    "relative_count_error": round(metrics["relative_count_error"], 3),
                }
            )
            print(rows[-1])
    if not rows:
        raise SystemExit(f"{index.root}: no split holds labelled images; the ceiling needs instance masks")
    comment = f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, counting ground-truth masks of {index.root}"
    write_csv_atomic(args.out, rows, comment=comment)


if __name__ == "__main__":
    main()
