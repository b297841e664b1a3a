"""``skipnas synth``: write a semi-synthetic dataset of real particles pasted onto backgrounds."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from skipnas.cli._common import console, print_json


def register(subparsers: Any) -> None:
    synth = subparsers.add_parser(
        "synth",
        help="write synthetic image/mask pairs made from a dataset's annotated particles",
        description=(
            "Cut every annotated particle out of a dataset's train split (when it has no train/, val/, test/ "
            "folders, the grouped split that training uses) and paste them, rotated, flipped and scaled, onto "
            "particle-free backgrounds (blank mode) or onto real images that keep their particles (semi "
            "mode). Writes OUT/images/synth-NNNNN.tif and OUT/masks/synth-NNNNN.tif (instance IDs)."
        ),
    )
    synth.add_argument(
        "--from", dest="source", required=True, metavar="DATASET",
        help="dataset folder to take particles from, or 'demo' for the embedded demo dataset",
    )
    synth.add_argument("--n", type=int, required=True, metavar="N", help="number of image/mask pairs to write")
    synth.add_argument(
        "--out", required=True, type=Path, metavar="DIR",
        help="folder to write: new, empty, or an earlier synth output (it is then rewritten)",
    )
    synth.add_argument("--seed", type=int, default=0, help="random seed; the same seed writes the same images (default 0)")
    synth.add_argument(
        "--backgrounds", type=Path, default=None, metavar="DIR",
        help="folder of particle-free images to paste onto (default: the dataset's images with their particles "
        "inpainted away)",
    )
    synth.add_argument(
        "--mode", choices=("blank", "semi"), default="blank",
        help="blank: paste onto particle-free backgrounds; semi: paste onto real images, keeping their "
        "particles (default blank)",
    )
    synth.add_argument("--json", action="store_true", help="print one JSON object describing what was written")
    synth.set_defaults(func=_synth)


def _synth(args: argparse.Namespace) -> int:
    from skipnas.data.scan import resolve_dataset
    from skipnas.data.synth import SynthConfig
    from skipnas.data.synth_folder import SYNTH_MARKER, write_synthetic_dataset
    from skipnas.errors import SkipnasError

    if args.n < 1:
        raise SkipnasError(f"--n must be at least 1, got {args.n}")
    source = resolve_dataset(args.source)
    out = write_synthetic_dataset(
        source,
        args.out,
        args.n,
        seed=args.seed,
        backgrounds=args.backgrounds,
        config=SynthConfig(background=args.mode),
        progress=True,
    )
    if args.json:
        print_json(
            {
                "out": str(out),
                "pairs": args.n,
                "images": str(out / "images"),
                "masks": str(out / "masks"),
                "source": str(source),
                "seed": args.seed,
                "mode": args.mode,
            }
        )
    else:
        console().print(
            f"wrote {args.n} image/mask pairs to {out / 'images'} and {out / 'masks'} "
            f"(particles from {source}, {args.mode} backgrounds, seed {args.seed}; settings in {out / SYNTH_MARKER})",
            soft_wrap=True,
            markup=False,
        )
    return 0
