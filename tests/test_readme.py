"""README.md's set-up commands are the ones CI runs."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _bash_blocks(text: str) -> list[str]:
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S)]


def test_ci_runs_exactly_the_readme_test_command() -> None:
    readme = (REPO / "README.md").read_text()
    blocks = _bash_blocks(readme)
    assert len(blocks) >= 2
    test_command = blocks[1]
    assert "pytest" in test_command and "torch==2.13.0" in test_command
    ci_lines = [line.strip() for line in (REPO / ".ci" / "run").read_text().splitlines()]
    assert test_command in ci_lines


def test_readme_names_every_cli_command() -> None:
    from skipnas.cli import build_parser

    readme = (REPO / "README.md").read_text()
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices
    for name in commands:
        assert f"skipnas {name}" in readme, f"README.md does not mention `skipnas {name}`"
