from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from skipnas.cli import main as skipnas_main


def test_each_image_gets_its_errors_by_kind_and_they_add_up_to_the_count_error(
    load_experiment: Callable[[str], ModuleType], tmp_path: Path, capsys, tiny_dataset: Path
) -> None:
    module = load_experiment("error_kinds")
    model = tmp_path / "model"
    assert skipnas_main(["train", "--data", str(tiny_dataset), "--width", "4", "--steps", "4", "--calibrate-on", "val",
                         "--device", "cpu", "--json", "--out", str(model)]) == 0
    out = tmp_path / "kinds" / "rows.csv"
    assert module.main([str(model), "--data", str(tiny_dataset), "--split", "val", "--split", "test", "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [row["data_split"] for row in rows] == ["val", "val", "test", "test"]  # the tiny dataset: 2 val, 2 test images
    for row in rows:
        kinds = {key: int(row[key]) for key in ("found", "true_count", "missed", "merged", "split", "false_positives")}
        assert min(kinds.values()) >= 0 and kinds["true_count"] > 0
        assert kinds["found"] - kinds["true_count"] == kinds["split"] + kinds["false_positives"] - kinds["missed"] - kinds["merged"]
    assert capsys.readouterr().out.splitlines()[-5].split("\t") == module.FIELDS


def test_a_missing_model_folder_is_one_line_and_exit_2(load_experiment: Callable[[str], ModuleType], tmp_path: Path, capsys) -> None:
    module = load_experiment("error_kinds")
    assert module.main([str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error_kinds: ") and "missing" in err[0]
