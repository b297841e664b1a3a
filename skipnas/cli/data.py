"""``skipnas data check`` and ``skipnas data demo``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from skipnas.cli._common import add_group, console, parse_auto, print_json, status_console
from skipnas.progress import progress_bar

EXIT_PROBLEMS = 2


def register(subparsers: Any) -> None:
    group = add_group(subparsers, "data", "Check a dataset folder, or write the demo dataset.")

    check = group.add_parser(
        "check",
        help="validate a dataset folder and print its statistics",
        description=(
            "Validate a dataset folder (images/ and masks/ with matching names, directly or in train/, "
            "val/, test/) and print counts, image sizes, mask kinds and normalisation statistics per split. "
            "Every problem is listed, one per line; the exit code is 2 when there is any."
        ),
    )
    check.add_argument("dir", metavar="DIR", help="dataset folder, or 'demo' for the embedded demo dataset")
    check.add_argument("--json", action="store_true", help="print one JSON object on stdout instead of tables")
    split = check.add_argument_group("splitting a folder without train/, val/, test/")
    for name in ("val", "test"):
        split.add_argument(
            f"--{name}-fraction", type=float, default=0.2, metavar="F", help=f"share of images for {name} (default 0.2)"
        )
    split.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the split (default 0)")
    sizes = check.add_argument_group("the training settings the particles suggest")
    sizes.add_argument(
        "--tile", default="auto", metavar="PX|auto",
        help="warn when this training tile is smaller than twice the large particles' width (default: the auto tile)",
    )
    sizes.add_argument("--scale", default="auto", metavar="S|auto", help="input scale to judge the tile at (default auto)")
    split.add_argument(
        "--group-pattern",
        default=None,
        metavar="REGEX",
        help="regex whose first group on the file stem names the source image; one group never spans "
        "two splits (default: the part before the first '-')",
    )
    check.set_defaults(func=_check)

    demo = group.add_parser(
        "demo",
        help="write the embedded demo dataset to a folder",
        description="Write the embedded demo dataset (train/, val/, test/ with images/ and masks/) to a folder.",
    )
    demo.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder to write")
    demo.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the generated images (default 0)")
    demo.set_defaults(func=_demo)


def _split_options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {
        "val_fraction": args.val_fraction,
        "test_fraction": args.test_fraction,
        "seed": args.seed,
    }
    if args.group_pattern is not None:
        options["group_pattern"] = args.group_pattern
    return options


def _numbers(values: list[float]) -> str:
    return ", ".join(f"{value:.3f}" for value in values) or "-"


def _sizes(split: dict[str, Any]) -> str:
    sizes = [f"{h}x{w}" for h, w in split["sizes"]]
    if len(sizes) <= 3:
        return ", ".join(sizes) or "-"
    low, high = split["size_range"]["min"], split["size_range"]["max"]
    return f"{low[0]}x{low[1]} .. {high[0]}x{high[1]}"


def _print_summary(summary: dict[str, Any], warnings: list[str], suggested: Sequence[str] = ()) -> None:
    from rich.table import Table
    from rich.text import Text

    out = console()
    layout = "split folders" if summary["presplit"] else "split by seed, grouped by source image"
    table = Table(title=f"{summary['root']} ({layout})", title_justify="left")
    for name in ("split", "images", "masks", "particles", "size HxW", "masks are", "ch", "mean", "std"):
        table.add_column(name, justify="right" if name in ("images", "masks", "particles", "ch") else "left")
    for name, split in summary["splits"].items():
        kinds = split["mask_kinds"]
        kind_text = next(iter(kinds)) if len(kinds) == 1 else ", ".join(f"{k} {n}" for k, n in kinds.items()) or "-"
        table.add_row(
            name,
            str(split["images"]),
            str(split["masks"]),
            str(split["particles"]),
            _sizes(split),
            kind_text,
            str(split["channels"]),
            _numbers(split["mean"]),
            _numbers(split["std"]),
        )
    out.print(table)
    sizes = Table(title="particles (px; diameter: of the disc of equal area; width: of the widest disc inside)", title_justify="left")
    for name in ("split", "particles", "diameter min / p5 / p50 / p95 / max", "width p50 / p95", "touching"):
        sizes.add_column(name, justify="left" if name == "split" else "right")
    for name, split in summary["splits"].items():
        found = split.get("particle_sizes") or {}
        diameter, width = found.get("diameter"), found.get("width")
        if not diameter or not width:
            continue
        sizes.add_row(
            name, str(found["particles"]), " / ".join(f"{diameter[key]:.0f}" for key in ("min", "p5", "p50", "p95", "max")),
            f"{width['p50']:.0f} / {width['p95']:.0f}", f"{found['touching_share']:.0%}",
        )
    if sizes.row_count:
        out.print(sizes)
    for line in suggested:
        out.print(Text(line), soft_wrap=True)
    for line in warnings:
        out.print(Text(f"warning: {line}", style="yellow"), soft_wrap=True)


def _check(args: argparse.Namespace) -> int:
    from skipnas.data.scan import resolve_dataset, scan_dataset
    from skipnas.data.statistics import dataset_summary, normalisation_stats
    from skipnas.data.validate import validate_dataset

    root = resolve_dataset(args.dir)
    options = _split_options(args)
    with progress_bar("checking files") as bar:
        report = validate_dataset(root, progress=lambda done, total: bar.update(completed=done, total=total), **options)
    if report.errors:
        count = len(report.errors)
        # plain print: one line per problem, never wrapped to the terminal width
        print(f"skipnas: error: dataset {root} has {count} problem{'s' if count > 1 else ''}:", file=sys.stderr)
        for line in report.errors:
            print(f"  {line}", file=sys.stderr)
        for line in report.warnings:
            print(f"  warning: {line}", file=sys.stderr)
        return EXIT_PROBLEMS
    index = scan_dataset(root, **options)
    with progress_bar("computing statistics") as bar:
        summary = dataset_summary(index, progress=lambda done, total: bar.update(completed=done, total=total))
    suggestion = _suggest(summary, root, args)
    warnings = report.warnings + suggestion.pop("warnings")
    notes = _mask_notes(summary)
    if args.json:
        mean, std = normalisation_stats(index)
        print_json(
            {
                "root": str(root),
                "presplit": summary["presplit"],
                "splits": summary["splits"],
                "normalisation": {"mean": mean, "std": std},
                "suggested": suggestion,
                "notes": notes,
                "warnings": warnings,
            }
        )
    else:
        _print_summary(summary, warnings, [*notes, *suggestion["notes"]])
    return 0


def _mask_notes(summary: dict[str, Any]) -> list[str]:
    """How the masks were read, where it is not obvious: colour masks are counted one particle per colour."""
    colour = sum(split["mask_kinds"].get("color", 0) for split in summary["splits"].values())
    if not colour:
        return []
    return [
        f"{colour} colour mask{'s' if colour > 1 else ''}: each distinct colour is one particle (black or "
        "transparent is background; pieces of one colour count once)"
    ]


def _suggest(summary: dict[str, Any], root: Path, args: argparse.Namespace) -> dict[str, Any]:
    """What skipnas train would choose from the train split's particles (a standard depth-4 network),
    and warnings; a split whose particles cannot be trained on is refused."""
    from skipnas.data.particles import ParticleSizes, check_particles_fit, choose_batch, choose_width, scale_and_tile, tile_warning
    from skipnas.genome import DEFAULT_DEPTH

    tile, scale = parse_auto(args.tile, int, "--tile"), parse_auto(args.scale, float, "--scale")
    suggestion: dict[str, Any] = {"notes": [], "warnings": []}
    for name, split in summary["splits"].items():
        if split["masks"]:
            sizes = ParticleSizes.from_dict(split["particle_sizes"])
            if name == "train" or sizes.particles:
                check_particles_fit(sizes, f"{root}: the {name} masks")
    train = summary["splits"].get("train")
    if not train or not train["masks"]:
        return suggestion
    sizes = ParticleSizes.from_dict(train["particle_sizes"])
    scale, tile = scale_and_tile(sizes, 2**DEFAULT_DEPTH, scale, tile)
    warning = tile_warning(sizes, tile, scale)
    if warning:
        suggestion["warnings"].append(warning)
    width = choose_width(tile, choose_batch(tile))
    suggestion.update(scale=scale, tile=tile, width=width, touching_share=sizes.touching_share)
    suggestion["notes"].append(
        f"skipnas train would use: --scale {scale:g} --tile {tile} --width {width} (a depth-{DEFAULT_DEPTH} standard network); "
        f"{sizes.touching_share:.0%} of the training particles touch another"
    )
    polarity = train.get("particle_polarity")
    if polarity:
        from skipnas.data.intensity import mixed_polarity

        suggestion.update(particle_polarity=polarity, invert=mixed_polarity(polarity))
        suggestion["notes"].append(
            f"particles brighter than their surroundings in {polarity['brighter']} training images, darker in "
            f"{polarity['darker']}, unclear in {polarity['unclear']}: "
            + ("training would invert grey levels at random" if suggestion["invert"] else "no inversion in training")
        )
    val = summary["splits"].get("val")
    if val and val["masks"]:
        from skipnas.counting.calibrate import FEW_PARTICLES

        held = ParticleSizes.from_dict(val["particle_sizes"]).particles
        suggestion["calibrate_on"] = "val+train" if held < FEW_PARTICLES else "val"
        suggestion["notes"].append(
            f"its counting would be calibrated on val and train: val holds {held} particles, fewer than {FEW_PARTICLES}"
            if held < FEW_PARTICLES else f"its counting would be calibrated on val ({held} particles)"
        )
    return suggestion


def _demo(args: argparse.Namespace) -> int:
    from skipnas.data.demo import write_demo_dataset
    from skipnas.data.scan import scan_dataset
    from skipnas.data.statistics import dataset_summary

    with status_console().status("writing the demo dataset"):
        path = Path(write_demo_dataset(args.out, seed=args.seed))
    console().print(f"wrote the demo dataset to {path}", soft_wrap=True, markup=False)
    summary = dataset_summary(scan_dataset(path))
    _print_summary(summary, [])
    return 0
