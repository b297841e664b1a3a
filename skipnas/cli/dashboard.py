"""``skipnas dashboard``: optuna-dashboard on the study storage."""

from __future__ import annotations

import argparse
from typing import Any

from skipnas.cli._common import check_port, is_loopback, status_console
from skipnas.errors import SkipnasError


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "dashboard",
        help="open the Optuna dashboard on the study storage (http://127.0.0.1:8080 by default)",
        description="Serve optuna-dashboard for the studies in a storage until Ctrl-C. Bound to 127.0.0.1 unless "
        "--host says otherwise; the dashboard has no login, so serve it to other machines only behind a proxy "
        "with authentication (see the README).",
    )
    parser.add_argument("--storage", default=None, metavar="URL", help="Optuna storage (default: sqlite:///runs/skipnas.db)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8080, help="port, 1-65535 (default 8080)")
    parser.set_defaults(func=_dashboard)


def _dashboard(args: argparse.Namespace) -> int:
    check_port(args.port)
    from optuna_dashboard import run_server

    from skipnas.study.storage import open_existing_storage

    storage, _ = open_existing_storage(args.storage)
    notes = status_console()
    if not is_loopback(args.host):
        # the dashboard's API has no login: anyone who reaches the port can change or delete studies
        notes.print(
            f"warning: --host {args.host} serves the dashboard beyond this machine, and it has no login: anyone who "
            f"reaches port {args.port} can change or delete studies; keep the default 127.0.0.1 behind a proxy with "
            "authentication (README: Many workers on one study)"
        )
    notes.print(f"Optuna dashboard: http://{args.host}:{args.port}/  (Ctrl-C stops it)")
    try:
        run_server(storage, host=args.host, port=args.port)
    except OSError as exc:
        raise SkipnasError(f"cannot serve on {args.host}:{args.port} ({exc.strerror}); choose another --port") from None
    return 0
