from __future__ import annotations

import json
import subprocess
import sys

import pytest

from skipnas.cli import main


def test_help_lists_the_commands(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    assert "topology" in capsys.readouterr().out


def test_show_json_has_the_contract_keys(capsys) -> None:
    assert main(["topology", "show", "reverse", "--width", "4", "--tile", "32", "--batch", "2", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {"name", "depth", "skips", "params", "flops", "predicted_peak_bytes"} <= set(data)
    assert data["name"] == "reverse" and data["depth"] == 4
    assert data["skips"][0] == [0, 0, 0, 1] and data["skips"][3] == [1, 0, 0, 0]
    assert data["params"] > 0 and data["flops"] > 0 and data["predicted_peak_bytes"] > 0
    # the trial's peak: the larger of its training step and a validation batch, plus the workspaces
    stages = max(data["predicted_train_step_bytes"], data["predicted_validation_bytes"])
    assert stages < data["predicted_peak_bytes"] <= stages + 64 * 2**20


def test_show_costs_validation_at_the_given_tile_and_batch(capsys) -> None:
    sizes = {}
    for batch in ("1", "4"):
        assert main(["topology", "show", "standard", "--width", "4", "--val-tile", "256", "--val-batch", batch, "--json"]) == 0
        sizes[batch] = json.loads(capsys.readouterr().out)["predicted_validation_bytes"]
    assert sizes["4"] > 2 * sizes["1"]


def test_show_table_prints_matrix_and_costs(capsys) -> None:
    assert main(["topology", "show", "semi-dense", "--width", "4", "--tile", "32", "--batch", "1"]) == 0
    out = capsys.readouterr().out
    assert "semi-dense" in out and "parameters" in out and "MiB predicted" in out
    assert out.count("●") == 10


def test_show_reads_a_genome_file(tmp_path, capsys) -> None:
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"skips": [[0, 1], [1, 1]], "depth": 2, "base_width": 4}))
    assert main(["topology", "show", str(path), "--tile", "32", "--batch", "1", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["name"] == "custom" and data["skips"] == [[0, 1], [1, 1]] and data["base_width"] == 4


def test_list_names_every_topology(capsys) -> None:
    assert main(["topology", "list", "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)) == {"standard", "semi-dense", "reverse", "dense", "none"}


@pytest.mark.parametrize(
    ("arg", "content", "message"),
    [
        ("wobbly", None, "unknown topology 'wobbly'"),
        ("bad.json", "{nope", "bad.json: not valid JSON"),
        ("bad.json", '{"skips": [[1, 0], [0, 7]]}', "bad.json: skips[1][1] must be 0 or 1"),
        ("missing.json", None, "missing.json: no such file"),
        ("standard --tile 8", None, "tile 8 px is below 2**depth = 16 px"),
        ("standard --batch 0", None, "batch must be at least 1"),
    ],
)
def test_bad_topologies_exit_2_with_one_line(tmp_path, arg: str, content: str | None, message: str) -> None:
    if content is not None:
        (tmp_path / arg).write_text(content)
    result = subprocess.run(
        [sys.executable, "-m", "skipnas", "topology", "show", *arg.split()], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert result.stdout == ""


def test_a_group_without_a_command_prints_its_help_and_exits_2(capsys) -> None:
    assert main(["topology"]) == 2
    assert "show" in capsys.readouterr().out
