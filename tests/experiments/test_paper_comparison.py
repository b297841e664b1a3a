"""The paper comparison's summary and figure data: mean and spread over seeds on a hand-made table."""

from __future__ import annotations

import math
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest


@pytest.fixture(scope="module")
def paper(load_experiment) -> ModuleType:
    return load_experiment("paper_comparison")


def _run(topology: str, pretrain: str, seed: int, dice: float, mae: float, status: str = "ok") -> dict[str, Any]:
    row: dict[str, Any] = {
        "data": "demo", "topology": topology, "pretrain": pretrain, "seed": str(seed), "width": "16", "budget_s": "20",
        "status": status, "steps": "100", "wall_s": "21.0",
    }
    if status == "ok":  # as read back from the CSV: strings
        row.update({"dice": str(dice), "count_mae": str(mae), "precision": "0.5", "recall": "0.5",
                    "exact_count_accuracy": "0.25", "count_mse": str(mae * mae), "relative_count_error": "0.1"})
    return row


@pytest.fixture()
def rows() -> list[dict[str, Any]]:
    return [
        # written out of order: the table must still put topologies as first seen, "yes" before "no"
        _run("standard", "no", 0, 0.50, 3.0),
        _run("standard", "yes", 0, 0.60, 2.0),
        _run("standard", "yes", 1, 0.70, 4.0),
        _run("standard", "yes", 2, 0.80, 6.0),
        _run("standard", "no", 1, 0.70, 5.0),
        _run("standard", "no", 2, 0.0, 0.0, status="failed"),  # left out of the means, counted as failed
        _run("none", "yes", 0, 0.40, 7.0),
        {**_run("classical baseline", "", 0, 0.45, 2.5), "seed": "", "width": "", "budget_s": "", "steps": "0"},
    ]


def test_summary_mean_and_sample_sd(paper: ModuleType, rows: list[dict[str, Any]]) -> None:
    table = paper.summarise(rows)
    assert [(e["topology"], e["pretrain"]) for e in table] == [
        ("standard", "yes"), ("standard", "no"), ("none", "yes"), ("classical baseline", ""),
    ]
    yes, no, none, classical = table
    assert (yes["runs"], yes["failed"]) == (3, 0)
    assert yes["dice_mean"] == pytest.approx(0.70)
    assert yes["dice_sd"] == pytest.approx(0.10)  # sample SD of 0.6, 0.7, 0.8
    assert yes["count_mae_mean"] == pytest.approx(4.0)
    assert yes["count_mae_sd"] == pytest.approx(2.0)  # sqrt(((2-4)^2 + 0 + (6-4)^2) / 2)
    assert yes["count_mse_mean"] == pytest.approx((4 + 16 + 36) / 3)
    assert (no["runs"], no["failed"]) == (2, 1)
    assert no["dice_mean"] == pytest.approx(0.60)
    assert no["dice_sd"] == pytest.approx(math.sqrt(0.02))  # 0.5 and 0.7: the failed run is not a zero
    assert no["count_mae_mean"] == pytest.approx(4.0)
    assert none["runs"] == 1 and none["dice_mean"] == pytest.approx(0.40) and none["dice_sd"] is None
    assert classical["dice_mean"] == pytest.approx(0.45) and classical["dice_sd"] is None


def test_summary_markdown_shows_mean_and_sd(paper: ModuleType, rows: list[dict[str, Any]]) -> None:
    text = paper.summary_markdown(paper.summarise(rows))
    lines = [line for line in text.splitlines() if line.startswith("| standard")]
    assert lines[0].startswith("| standard | yes | 3 | 0.700 ± 0.100 |")
    assert "| 4.000 ± 2.000 |" in lines[0]
    assert lines[1].startswith("| standard | no | 2 (1 failed) | 0.600 ± 0.141 |")
    assert "| classical baseline | n/a | 1 | 0.450 |" in text


def test_figure_info(paper: ModuleType, rows: list[dict[str, Any]]) -> None:
    (info,) = paper.figure_info(paper.summarise(rows))
    assert info["data"] == "demo"
    assert info["topologies"] == ["standard", "none"]
    assert [arm["name"] for arm in info["arms"]] == ["with pretraining", "without pretraining"]
    with_pretraining, without = info["arms"]
    assert with_pretraining["mean"]["dice"] == pytest.approx([0.70, 0.40])
    assert with_pretraining["sd"]["dice"][0] == pytest.approx(0.10)
    assert with_pretraining["sd"]["dice"][1] is None
    assert without["mean"]["count_mae"][0] == pytest.approx(4.0)
    assert without["mean"]["dice"][1] is None and without["runs"] == [2, 0]  # "none" has no run without pretraining
    assert info["classical"]["dice"] == pytest.approx(0.45)
    assert {m["key"]: m["lower_is_better"] for m in info["metrics"]}["count_mae"] is True


def test_plot_renders(paper: ModuleType, rows: list[dict[str, Any]]) -> None:
    pytest.importorskip("plotly")
    (info,) = paper.figure_info(paper.summarise(rows))
    figure = paper.plot_comparison(info)
    bars = [trace for trace in figure.data if trace.type == "bar"]
    assert len(bars) == 2 * len(info["metrics"])
    assert list(bars[0].y) == pytest.approx([0.70, 0.40])


def test_resume_key_reads_back(paper: ModuleType, rows: list[dict[str, Any]], tmp_path: Path) -> None:
    out = tmp_path / "runs.csv"
    paper.write_rows(out, rows, "test")
    assert out.read_text().startswith("# ")
    back = paper.read_rows(out)
    assert [paper.run_key(row) for row in back] == [paper.run_key(row) for row in rows]
    # a fresh row holds ints where the CSV holds strings: the keys must still match
    fresh = {**rows[1], "seed": 0, "width": 16}
    assert paper.run_key(fresh) == paper.run_key(back[1])


def test_a_step_budget_gives_both_arms_the_same_steps(paper: ModuleType) -> None:
    with_pretraining = paper.train_config(60.0, True, 0, 32, steps=1000)
    without = paper.train_config(60.0, False, 0, 32, steps=1000)
    assert (with_pretraining.pretrain.steps, with_pretraining.finetune.steps) == (300, 700)  # the search's 30 %
    assert not without.pretrain.enabled and without.finetune.steps == 1000
    assert with_pretraining.pretrain.seconds is None and without.finetune.seconds is None
    seconds = paper.train_config(60.0, True, 0, 32)
    assert (seconds.pretrain.seconds, seconds.finetune.seconds, seconds.finetune.steps) == (18.0, 42.0, None)
