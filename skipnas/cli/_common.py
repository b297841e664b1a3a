"""Helpers shared by the sub-commands: consoles, JSON output and ``auto`` arguments."""

from __future__ import annotations

import ipaddress
import json
import socket
import sys
from typing import Any

from rich.console import Console

from skipnas.errors import SkipnasError

# the --calibrate-on choices of train and export (skipnas.train.config.CALIBRATE_ON, kept here so --help imports nothing heavy)
CALIBRATE_ON_CHOICES: tuple[str, ...] = ("auto", "val", "val+train")


def console() -> Console:
    """Human output goes to stdout; with ``--json`` nothing but the JSON object is printed there."""
    return Console(highlight=False)


def status_console() -> Console:
    """Progress bars and notes go to stderr so they never mix with data on stdout."""
    return Console(stderr=True, highlight=False, soft_wrap=True)


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")


def parse_auto(value: str, kind: type, name: str) -> float | int | None:
    """``"auto"`` as None, otherwise ``value`` as ``kind``; one clear error for anything else."""
    if value == "auto":
        return None
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise SkipnasError(f"{name} must be auto or a {'whole ' if kind is int else ''}number, got {value!r}") from None


def add_group(subparsers: Any, name: str, help_text: str) -> Any:
    """A command group (``skipnas data ...``) whose bare form prints its own help."""
    group = subparsers.add_parser(name, help=help_text, description=help_text)
    group.set_defaults(func=None, group_parser=group)
    return group.add_subparsers(title=f"{name} commands", metavar="COMMAND", dest=f"{name}_command")


def is_loopback(host: str) -> bool:
    """Whether ``host`` serves this machine only (``localhost`` or a loopback address)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to any interface


def check_port(port: int) -> None:
    if not 1 <= port <= 65535:
        raise SkipnasError(f"--port {port}: a port is a whole number from 1 to 65535; e.g. --port 8080")


def check_listen(host: str, port: int) -> None:
    """Refuse a port out of range, or one this machine cannot listen on (taken, not ours), before any work."""
    check_port(port)
    try:
        family = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)[0][0]
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind: a closed port in TIME_WAIT is free
            probe.bind((host.strip("[]"), port))
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise SkipnasError(f"cannot listen on {host}:{port} ({reason}); choose another --port or --host") from None
