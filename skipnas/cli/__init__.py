"""The ``skipnas`` command: thin sub-commands over the Python API.

Each sub-command lives in its own module with a ``register(subparsers)`` function; heavy
imports (torch, optuna, plotly) happen inside the command so ``skipnas --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from skipnas import __version__
from skipnas.errors import SkipnasError

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

_COMMAND_MODULES = ("topology", "data", "synth", "train", "evaluate", "calibrate", "count", "baseline", "search", "confirm", "dashboard", "export", "onnx_export", "serve", "report")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="skipnas",
        description=(
            "Search U-Net skip-connection topologies for segmenting and counting microplastics "
            "in microscope images. With no data given, commands use the embedded demo dataset."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"skipnas {__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", dest="command")
    import importlib

    for module_name in _COMMAND_MODULES:
        importlib.import_module(f"skipnas.cli.{module_name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        # a command group given without its sub-command prints that group's help
        (getattr(args, "group_parser", None) or parser).print_help()
        return EXIT_OK if args.command is None else EXIT_USAGE
    try:
        return int(args.func(args) or EXIT_OK)
    except SkipnasError as exc:
        print(f"skipnas: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("skipnas: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
