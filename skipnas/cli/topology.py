"""``skipnas topology``: show a genome's skip matrix and cost, list the named topologies."""

from __future__ import annotations

import argparse
from typing import Any

from skipnas.cli._common import add_group, console, print_json
from skipnas.genome import DEFAULT_DEPTH, NAMED_TOPOLOGIES, TOPOLOGY_DESCRIPTIONS, Genome


def register(subparsers: Any) -> None:
    commands = add_group(subparsers, "topology", "inspect skip-connection topologies")

    show = commands.add_parser(
        "show",
        help="print a topology's skip matrix, parameters, FLOPs and a trial's predicted peak GPU memory",
        description="Print a topology's skip matrix (rows: encoder level i, columns: decoder level j; level 0 is "
        "full resolution), its parameter count, the FLOPs of one training step and the predicted peak GPU "
        "memory of a trial: the larger of a training step and a validation batch (with the training state "
        "held), plus CUDA's workspaces (no GPU needed).",
    )
    show.add_argument("topology", metavar="NAME_OR_JSON_FILE", help=f"one of {', '.join(NAMED_TOPOLOGIES)}, or a genome JSON file")
    show.add_argument(
        "--width", type=int, default=None,
        help="base width (channels of level 0); default: the file's, else 16 (skipnas train narrows it for tiles over 64 px: "
        "give the width skipnas data check suggests)",
    )
    show.add_argument("--depth", type=int, default=DEFAULT_DEPTH, help="depth of a named topology (default 4)")
    show.add_argument("--tile", type=int, default=64, help="training tile size in px (default 64)")
    show.add_argument("--batch", type=int, default=8, help="training batch size (default 8)")
    show.add_argument("--val-tile", type=int, default=512, help="validation tile size in px (default 512)")
    show.add_argument("--val-batch", type=int, default=8, help="validation tiles per forward pass (default 8)")
    show.add_argument("--in-channels", type=int, default=1, help="image channels (default 1)")
    show.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="autocast dtype (default float32)")
    show.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    show.set_defaults(func=_show)

    listing = commands.add_parser("list", help="list the named topologies")
    listing.add_argument("--depth", type=int, default=DEFAULT_DEPTH, help="depth of the matrices shown (default 4)")
    listing.add_argument("--json", action="store_true", help="print one JSON object")
    listing.set_defaults(func=_list)


def _matrix_table(genome: Genome) -> Any:
    from rich.table import Table

    table = Table(show_lines=False)
    table.add_column("enc \\ dec", justify="right", style="bold")
    for j in range(genome.depth):
        table.add_column(f"d{j}", justify="center")
    for i, row in enumerate(genome.skips):
        table.add_row(f"e{i}", *("[green]●[/]" if gene else "[dim]·[/]" for gene in row))
    return table


def _show(args: argparse.Namespace) -> int:
    from skipnas.cost import CostConfig, estimate_cost
    from skipnas.genome import load_genome

    genome = load_genome(args.topology, depth=args.depth, base_width=args.width)
    config = CostConfig(
        tile=args.tile, batch=args.batch, in_channels=args.in_channels, dtype=args.dtype, val_tile=args.val_tile,
        val_batch=args.val_batch,
    )
    cost = estimate_cost(genome, config)
    summary = {
        "name": genome.name,
        "depth": genome.depth,
        "skips": [list(row) for row in genome.skips],
        "base_width": genome.base_width,
        "fusion": genome.fusion,
        "hash": genome.hash,
        "params": cost.params,
        "flops": cost.train_step_flops,
        "forward_flops": cost.forward_flops,
        "predicted_train_step_bytes": cost.predicted_train_step_bytes,
        "predicted_validation_bytes": cost.predicted_validation_bytes,
        "predicted_peak_bytes": cost.predicted_peak_bytes,
        "tile": config.tile,
        "batch": config.batch,
        "val_tile": config.val_tile,
        "val_batch": config.val_batch,
        "dtype": config.dtype,
    }
    if args.json:
        print_json(summary)
        return 0
    out = console()
    out.print(f"[bold]{genome.name}[/] (depth {genome.depth}, width {genome.base_width}, {genome.fusion} fusion)")
    out.print(_matrix_table(genome))
    out.print(f"hash            {genome.short_hash}")
    out.print(f"parameters      {cost.params:,}")
    out.print(f"FLOPs/step      {cost.train_step_flops / 1e9:,.2f} G (forward {cost.forward_flops / 1e9:,.2f} G)")
    out.print(
        f"training step   {cost.predicted_train_step_bytes / 2**20:,.1f} MiB predicted "
        f"(tile {config.tile}, batch {config.batch}, {config.dtype}, Adam)"
    )
    out.print(
        f"validation      {cost.predicted_validation_bytes / 2**20:,.1f} MiB predicted "
        f"(tile {config.val_tile}, batch {config.val_batch}, the training state held)"
    )
    out.print(f"peak memory     {cost.predicted_peak_mib:,.1f} MiB predicted (the larger, plus CUDA's workspaces)")
    return 0


def _list(args: argparse.Namespace) -> int:
    genomes = {name: Genome.named(name, depth=args.depth) for name in NAMED_TOPOLOGIES}
    if args.json:
        print_json(
            {name: {"description": TOPOLOGY_DESCRIPTIONS[name], "skips": [list(r) for r in g.skips]} for name, g in genomes.items()}
        )
        return 0
    out = console()
    for name, genome in genomes.items():
        out.print(f"[bold]{name}[/]: {TOPOLOGY_DESCRIPTIONS[name]}")
        out.print(_matrix_table(genome))
    return 0
