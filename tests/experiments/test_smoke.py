"""Every experiment script runs in its --smoke mode, so none can rot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# skipbench's smoke run trains 16 genomes; test_skipbench runs it resuming from a table, which trains a few.
# The two search benchmarks run whole searches (and worker processes), which tests/study covers
SLOW = {"skipbench.py", "bench_workers.py", "bench_search.py"}
# the scripts, not the helpers they import
SCRIPTS = [
    pytest.param(path, marks=pytest.mark.slow) if path.name in SLOW else path
    for path in sorted((REPO / "experiments").glob("*.py"))
    if 'if __name__ == "__main__":' in path.read_text()
]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_runs_in_smoke_mode(script: Path, tmp_path: Path) -> None:
    out = tmp_path / "result.csv"
    result = subprocess.run(
        [sys.executable, str(script), "--smoke", "--out", str(out)], capture_output=True, text=True, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert out.exists() and out.read_text().count("\n") >= 3
