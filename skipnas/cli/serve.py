"""``skipnas serve``: the counting page, on this machine, for a model folder."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from skipnas.cli._common import check_listen, is_loopback, status_console
from skipnas.cli.train import add_device_arguments, add_tta_argument
from skipnas.errors import SkipnasError


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="a local web page to count images, correct the count and save the corrections as training data",
        description="Serve a counting page for a model folder: drop TIFF, PNG or JPEG images of any size on it, see "
        "each particle outlined and numbered with its size and confidence, reject, add, split or merge particles "
        "(the totals follow), download counts.csv and particles.csv (the columns of skipnas count), and save the "
        "images with their corrected masks to WORKDIR/corrected/ (images/, masks/) for "
        "skipnas train --init MODEL_DIR --data WORKDIR/corrected. Needs pip install \"skipnas[serve]\".",
    )
    parser.add_argument("model_dir", type=Path, metavar="MODEL_DIR", help="folder written by skipnas train or export")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 opens it to the network)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--workdir", type=Path, default=Path("skipnas-serve"),
                        help="where uploads and saved corrections go; nothing is written outside it (default skipnas-serve/)")
    parser.add_argument("--max-upload-mib", type=float, default=512, help="largest image accepted, in MiB (default 512)")
    add_device_arguments(parser)
    add_tta_argument(parser)
    parser.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    try:
        from skipnas.serve.app import serve
        from skipnas.serve.workspace import Workspace
    except ImportError as exc:
        raise SkipnasError(f'skipnas serve needs {exc.name}: pip install "skipnas[serve]"') from None
    if args.max_upload_mib <= 0:
        raise SkipnasError(f"--max-upload-mib must be above 0, got {args.max_upload_mib}")
    check_listen(args.host, args.port)
    workspace = Workspace(args.model_dir, args.workdir, device=args.device,
                          max_upload_bytes=int(args.max_upload_mib * 2**20), tta=args.tta)
    out = status_console()
    out.print(f"counting page for {args.model_dir} at [bold]http://{args.host}:{args.port}/[/bold]  (Ctrl-C stops it)")
    out.print(f"uploads and saved corrections go to {workspace.workdir}")
    if not is_loopback(args.host):
        out.print(f"[yellow]listening on {args.host}: anyone who reaches this machine can upload images to it[/yellow]")
    serve(workspace, args.host, args.port)
    return 0
