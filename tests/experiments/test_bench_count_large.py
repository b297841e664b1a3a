"""The count benchmark's memory probe reports the counted process's own peak, not its parent's."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]


def _bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_count_large", REPO / "experiments" / "bench_count_large.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_launcher_reports_the_child_peak_not_the_parent(tmp_path: Path) -> None:
    # a large parent: a child forked straight from it would start its ru_maxrss at this size
    ballast = bytearray(b"\x01") * (400 * 2**20)
    report = tmp_path / "usage.json"
    child = "x = b'\\x01' * (100 * 2**20)"
    subprocess.run([sys.executable, "-c", _bench().LAUNCHER, str(report), sys.executable, "-c", child], check=True)
    usage = json.loads(report.read_text())
    assert usage["code"] == 0 and usage["seconds"] > 0
    assert 100 <= usage["maxrss_kib"] / 1024 < 300, usage
    del ballast
