"""``skipnas dashboard``: optuna-dashboard on the study storage."""

from __future__ import annotations

import argparse
from typing import Any

from skipnas.cli._common import status_console
from skipnas.errors import SkipnasError


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "dashboard",
        help="open the Optuna dashboard on the study storage (http://127.0.0.1:8080 by default)",
        description="Serve optuna-dashboard for the studies in a storage until Ctrl-C. Bound to 127.0.0.1 unless "
        "--host says otherwise.",
    )
    parser.add_argument("--storage", default=None, metavar="URL", help="Optuna storage (default: sqlite:///runs/skipnas.db)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    parser.set_defaults(func=_dashboard)


def _dashboard(args: argparse.Namespace) -> int:
    from optuna_dashboard import run_server

    from skipnas.study.storage import open_existing_storage

    storage, _ = open_existing_storage(args.storage)
    status_console().print(f"Optuna dashboard: http://{args.host}:{args.port}/  (Ctrl-C stops it)")
    try:
        run_server(storage, host=args.host, port=args.port)
    except OSError as exc:
        raise SkipnasError(f"cannot serve on {args.host}:{args.port} ({exc.strerror}); choose another --port") from None
    return 0
