from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest

from skipnas.errors import SkipnasError
from skipnas.genome import Genome
from skipnas.study.report import (
    FIGURE_TITLES,
    page,
    plot_history,
    plot_importance,
    plot_link_frequency,
    plot_pareto,
    plot_skip_matrices,
    render_report,
    write_report,
)
from skipnas.study.report.history import _history_info
from skipnas.study.report.importance import _importance_info
from skipnas.study.report.link_frequency import _link_frequency_info
from skipnas.study.report.pareto import _pareto_info
from skipnas.study.report.skip_matrices import _skip_matrices_info
from skipnas.study.report.summary import _summary_info

optuna.logging.set_verbosity(optuna.logging.WARNING)

DEPTH = 2
LINK = optuna.distributions.IntDistribution(0, 1)
COMPLETE = optuna.trial.TrialState.COMPLETE
PRUNED = optuna.trial.TrialState.PRUNED
FAIL = optuna.trial.TrialState.FAIL


def _attrs(skips: list[list[int]], memory: float, **extra: Any) -> dict[str, Any]:
    genome = Genome(skips, depth=DEPTH, base_width=8)
    return {
        "genome": genome.to_dict(),
        "genome_hash": genome.hash,
        "topology": genome.name,
        "params": 1000 + 100 * genome.num_links(),
        "predicted_peak_mib": memory,
        "budget_mib": 40.0,
        **extra,
    }


def _trial(skips: list[list[int]], memory: float, value: Any = None, state: Any = COMPLETE, **extra: Any) -> optuna.trial.FrozenTrial:
    params = {f"skip_e{i}_d{j}": skips[i][j] for i in range(DEPTH) for j in range(DEPTH)}
    attrs = _attrs(skips, memory, **extra)
    values = None
    if state == COMPLETE:
        values = value if isinstance(value, list) else None
        if not isinstance(value, list):
            attrs.update(dice=value, precision=value + 0.05, recall=value - 0.05, count_mae=round(1 - value, 3))
    constraints = {"memory_mib": memory - 40.0}
    return optuna.trial.create_trial(
        state=state,
        value=None if values is not None or state != COMPLETE else value,
        values=values,
        params=params,
        distributions={name: LINK for name in params},
        user_attrs=attrs,
        constraints=constraints,
    )


# depth 2 skip matrices: standard, semi-dense, reverse, dense, none and two custom ones
STANDARD, SEMI_DENSE, REVERSE, DENSE, NONE = [[1, 0], [0, 1]], [[1, 1], [0, 1]], [[0, 1], [1, 0]], [[1, 1], [1, 1]], [[0, 0], [0, 0]]
CUSTOM_A, CUSTOM_B, CUSTOM_C = [[1, 0], [1, 1]], [[0, 1], [0, 1]], [[1, 1], [1, 0]]


def _dice_study(storage: Any = None, name: str = "hand-made") -> optuna.Study:
    """Trial numbers 0..9: five baselines (dense over budget), two custom genomes, a duplicate,
    one trial pruned while training and one failed."""
    study = optuna.create_study(storage=storage, study_name=name, direction="maximize")
    study.set_user_attr("objective", "dice")
    study.set_user_attr("space", "test-space")
    study.set_user_attr("data", "demo")
    trials = [
        _trial(STANDARD, 10.0, 0.60, baseline="standard"),  # 0
        _trial(SEMI_DENSE, 14.0, 0.70, baseline="semi-dense"),  # 1
        _trial(REVERSE, 12.0, 0.50, baseline="reverse"),  # 2
        _trial(DENSE, 50.0, state=PRUNED, baseline="dense", infeasible=True, prune_reason="over the memory budget: 50 MiB predicted > 40 MiB"),  # 3
        _trial(NONE, 8.0, 0.40, baseline="none"),  # 4
        _trial(CUSTOM_A, 13.0, 0.75),  # 5
        _trial(SEMI_DENSE, 14.0, 0.70, duplicate_of=1),  # 6
        _trial(CUSTOM_B, 11.0, 0.65),  # 7
        _trial(CUSTOM_C, 15.0, state=PRUNED, prune_reason="pruned after fine-tune epoch 2: validation Dice 0.100"),  # 8
        _trial(CUSTOM_C, 15.0, state=FAIL, fail_reason="RuntimeError: out of memory"),  # 9
    ]
    study.add_trials(trials)
    return study


def _memory_study() -> optuna.Study:
    """A Dice + memory study: values are [dice, predicted MiB]."""
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_user_attr("objective", "dice+memory")
    for skips, dice, memory, extra in (
        (STANDARD, 0.60, 10.0, {"baseline": "standard"}),
        (DENSE, 0.80, 20.0, {"baseline": "dense"}),
        (CUSTOM_A, 0.70, 12.0, {}),
        (CUSTOM_B, 0.55, 11.0, {}),
        (REVERSE, 0.50, 9.0, {}),
    ):
        study.add_trial(_trial(skips, memory, [dice, memory], **extra))
    return study


# figure data ------------------------------------------------------------------------------------
def test_history_best_so_far_kinds_and_stopped_trials() -> None:
    info = _history_info(_dice_study())
    assert info["numbers"] == [0, 1, 2, 4, 5, 6, 7]
    assert info["values"] == pytest.approx([0.60, 0.70, 0.50, 0.40, 0.75, 0.70, 0.65])
    assert info["best_so_far"] == pytest.approx([0.60, 0.70, 0.70, 0.70, 0.75, 0.75, 0.75])
    assert info["kinds"] == ["baseline", "baseline", "baseline", "baseline", "sampled", "duplicate", "sampled"]
    assert info["names"][:4] == ["standard", "semi-dense", "reverse", "none"]
    assert info["duplicate_of"][5] == 1 and "= trial 1" in info["names"][5]
    assert [(p["number"], p["infeasible"]) for p in info["pruned"]] == [(3, True), (8, False)]
    assert "over the memory budget" in info["pruned"][0]["reason"]
    assert [(f["number"], f["reason"]) for f in info["failed"]] == [(9, "RuntimeError: out of memory")]
    assert info["objective"] == "Dice" and info["direction"] == "maximize"


def test_history_best_so_far_follows_a_minimised_objective() -> None:
    study = optuna.create_study(direction="minimize")
    study.set_user_attr("objective", "count_mae")
    for skips, mae in ((STANDARD, 3.0), (DENSE, 4.0), (CUSTOM_A, 1.5), (NONE, 2.0)):
        study.add_trial(_trial(skips, 10.0, mae))
    info = _history_info(study)
    assert info["best_so_far"] == [3.0, 3.0, 1.5, 1.5]
    assert info["objective"] == "count MAE" and info["direction"] == "minimize"


def test_pareto_front_membership_from_user_attrs() -> None:
    info = _pareto_info(_dice_study())
    # the duplicate (trial 6) is drawn once, as trial 1
    assert [p["number"] for p in info["points"]] == [0, 1, 2, 4, 5, 7]
    assert info["duplicates_left_out"] == 1
    on_front = {p["number"]: p["on_front"] for p in info["points"]}
    assert on_front == {0: True, 1: False, 2: False, 4: True, 5: True, 7: True}
    assert info["front"] == [4, 0, 7, 5]  # by increasing memory
    assert info["budget_mib"] == 40.0
    assert [(p["number"], p["memory_mib"]) for p in info["infeasible"]] == [(3, 50.0)]
    baselines = {p["number"]: p["baseline"] for p in info["points"] if p["baseline"]}
    assert baselines == {0: "standard", 1: "semi-dense", 2: "reverse", 4: "none"}


def test_pareto_front_from_the_values_of_a_memory_objective() -> None:
    info = _pareto_info(_memory_study())
    on_front = {p["number"]: p["on_front"] for p in info["points"]}
    # (dice, MiB): 0 (0.60, 10), 1 (0.80, 20), 2 (0.70, 12), 3 (0.55, 11) dominated by 0, 4 (0.50, 9)
    assert on_front == {0: True, 1: True, 2: True, 3: False, 4: True}
    assert info["front"] == [4, 0, 2, 1]
    assert info["points"][1]["dice"] == 0.80 and info["points"][1]["memory_mib"] == 20.0


def test_link_frequency_equals_hand_computed_shares() -> None:
    info = _link_frequency_info(_dice_study())
    # 6 unique completed trials: top max(3, ceil(0.25 * 6)) = 3 -> trials 5 (0.75), 1 (0.70), 7 (0.65)
    assert info["trials"] == [5, 1, 7]
    assert info["completed"] == 6 and info["depth"] == DEPTH
    expected = (np.array(CUSTOM_A) + np.array(SEMI_DENSE) + np.array(CUSTOM_B)) / 3
    np.testing.assert_allclose(info["frequency"], expected)
    np.testing.assert_allclose(info["frequency"], [[2 / 3, 2 / 3], [1 / 3, 1.0]])
    assert info["frequency"].min() >= 0 and info["frequency"].max() <= 1


def test_link_frequency_takes_the_top_quarter_of_a_larger_study() -> None:
    study = optuna.create_study(direction="maximize")
    rng = np.random.default_rng(0)
    matrices = [rng.integers(0, 2, size=(DEPTH, DEPTH)).tolist() for _ in range(20)]
    for index, skips in enumerate(matrices):
        study.add_trial(_trial(skips, 10.0, index / 20))
    info = _link_frequency_info(study)
    assert info["trials"] == [19, 18, 17, 16, 15]  # ceil(0.25 * 20) = 5 best
    np.testing.assert_allclose(info["frequency"], np.mean(np.array(matrices[15:]), axis=0))


def test_skip_matrices_best_then_baselines_in_named_order() -> None:
    panels = _skip_matrices_info(_dice_study())
    assert [(p["role"], p["name"], p["number"]) for p in panels] == [
        ("best", "custom", 5),
        ("baseline", "standard", 0),
        ("baseline", "semi-dense", 1),
        ("baseline", "reverse", 2),
        ("baseline", "dense", 3),
        ("baseline", "none", 4),
    ]
    assert panels[0]["matrix"] == CUSTOM_A and panels[0]["value"] == 0.75
    assert panels[0]["title"] == "best: trial 5 (custom), Dice 0.75"
    assert panels[2]["matrix"] == SEMI_DENSE and panels[2]["title"] == "semi-dense (trial 1), Dice 0.7"
    assert panels[4]["value"] is None and panels[4]["title"] == "dense (trial 3), over the memory budget"



def test_skip_matrices_show_a_retried_baseline_by_its_completed_attempt() -> None:
    study = optuna.create_study(direction="maximize")
    study.add_trial(_trial(CUSTOM_A, 13.0, 0.75))  # 0: best
    study.add_trial(_trial(REVERSE, 12.0, state=FAIL, baseline="reverse", fail_reason="KeyboardInterrupt"))  # 1
    study.add_trial(_trial(REVERSE, 12.0, 0.50, baseline="reverse"))  # 2: the re-run
    panels = _skip_matrices_info(study)
    assert [(p["role"], p["name"], p["number"]) for p in panels] == [("best", "custom", 0), ("baseline", "reverse", 2)]
    assert panels[1]["value"] == 0.50

def test_skip_matrices_show_a_best_baseline_once() -> None:
    panels = _skip_matrices_info(_memory_study())
    assert [(p["role"], p["name"], p["number"]) for p in panels] == [("best", "dense", 1), ("baseline", "standard", 0)]


def test_importance_covers_the_skip_genes() -> None:
    info = _importance_info(_dice_study())
    assert sorted(info["params"]) == ["skip_e0_d0", "skip_e0_d1", "skip_e1_d0", "skip_e1_d1"]
    assert sum(info["importances"]) == pytest.approx(1.0)
    assert all(v >= 0 for v in info["importances"])
    assert info["importances"] == sorted(info["importances"], reverse=True)
    assert info["trials"] == 6  # the duplicate is left out


def test_importance_for_a_memory_objective_uses_the_first_value() -> None:
    info = _importance_info(_memory_study())
    assert len(info["params"]) == 4 and sum(info["importances"]) == pytest.approx(1.0)


def test_importance_falls_back_with_a_note_on_too_few_trials() -> None:
    study = optuna.create_study(direction="maximize")
    study.add_trial(_trial(STANDARD, 10.0, 0.5))
    info = _importance_info(study)
    assert info["params"] == [] and info["importances"] == []
    assert "at least 2" in info["note"]
    study.add_trial(_trial(STANDARD, 10.0, 0.6))  # two trials, but no gene differs
    assert "at least 2" in _importance_info(study)["note"]


def test_summary_counts_states_and_compares_baselines_with_the_best() -> None:
    summary = _summary_info(_dice_study())
    assert summary["states"] == {"complete": 7, "fail": 1, "pruned": 2}
    assert summary["trials"] == 10 and summary["duplicates"] == 1
    assert summary["best"]["number"] == 5 and summary["best"]["value"] == 0.75
    assert summary["best"]["genome"]["skips"] == CUSTOM_A
    rows = {row["name"]: row for row in summary["baselines"]}
    assert list(rows) == ["standard", "semi-dense", "reverse", "dense", "none"]
    assert rows["standard"]["delta"] == pytest.approx(-0.15)
    assert rows["dense"]["state"] == "pruned" and rows["dense"]["delta"] is None
    assert summary["budget_mib"] == 40.0 and summary["objective"] == "dice"


# rendering ---------------------------------------------------------------------------------------
def test_renderers_draw_the_data() -> None:
    study = _dice_study()
    history = plot_history(_history_info(study))
    names = [trace.name for trace in history.data]
    assert "best so far" in names and "baseline standard" in names and "duplicate (result reused)" in names
    assert any(name.startswith("over memory budget") for name in names)
    best_line = next(trace for trace in history.data if trace.name == "best so far")
    assert list(best_line.y) == pytest.approx([0.60, 0.70, 0.70, 0.70, 0.75, 0.75, 0.75])

    pareto = plot_pareto(_pareto_info(study))
    front = next(trace for trace in pareto.data if trace.name.startswith("Pareto front"))
    assert list(front.x) == [8.0, 10.0, 11.0, 13.0]
    assert any(shape.x0 == 40.0 for shape in pareto.layout.shapes)  # the budget line

    heatmap = plot_link_frequency(_link_frequency_info(study)).data[0]
    np.testing.assert_allclose(heatmap.z, [[2 / 3, 2 / 3], [1 / 3, 1.0]])
    assert list(heatmap.y) == ["e0", "e1"] and list(heatmap.x) == ["d0", "d1"]

    bars = plot_importance(_importance_info(study)).data[0]
    assert sum(bars.x) == pytest.approx(1.0)

    matrices = plot_skip_matrices(_skip_matrices_info(study))
    assert len(matrices.data) == 6
    assert [a.text for a in matrices.layout.annotations][0] == "best: trial 5 (custom), Dice 0.75"


def test_importance_note_is_drawn_when_there_is_nothing_to_plot() -> None:
    figure = plot_importance({"objective": "Dice", "params": [], "importances": [], "trials": 1, "note": "needs more trials"})
    assert figure.data == () and figure.layout.annotations[0].text == "needs more trials"


# the page ----------------------------------------------------------------------------------------
def test_report_holds_every_figure_and_the_header(tmp_path: Path) -> None:
    out = write_report(_dice_study(), tmp_path / "nested" / "report.html", title="Fibre search")
    page = out.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    for title in FIGURE_TITLES.values():
        assert title in page
    assert "plotly" in page
    # the library is inlined once (offline), not fetched from a CDN
    assert "<script src=" not in page and page.count("Plotly.newPlot") == 5
    assert "<title>Fibre search</title>" in page
    assert "hand-made" in page and "Baselines against the best trial" in page
    assert "RuntimeError: out of memory" in page
    assert list(tmp_path.joinpath("nested").iterdir()) == [out]


def test_report_is_written_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "report.html"
    out.write_text("earlier report")

    def broken(info: Any) -> Any:
        raise RuntimeError("renderer broke half-way")

    monkeypatch.setattr(page, "plot_importance", broken)
    with pytest.raises(RuntimeError, match="half-way"):
        write_report(_dice_study(), out)
    assert out.read_text() == "earlier report"
    assert list(tmp_path.iterdir()) == [out]  # no temp file left behind


def test_empty_study_page_says_so(tmp_path: Path) -> None:
    study = optuna.create_study(study_name="empty", direction="maximize")
    study.add_trial(_trial(DENSE, 50.0, state=PRUNED, infeasible=True))
    page = write_report(study, tmp_path / "empty.html").read_text(encoding="utf-8")
    assert "No completed trial yet" in page
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "1 pruned" in page and "empty" in page
    assert "Plotly.newPlot" not in page


def test_render_report_for_a_memory_objective() -> None:
    page = render_report(_memory_study())
    assert "dice+memory" in page and "maximize, minimize" in page
    assert FIGURE_TITLES["pareto"] in page


def test_write_report_to_a_folder_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(SkipnasError, match="is a folder"):
        write_report(_dice_study(), tmp_path)


@pytest.mark.slow
def test_report_of_a_real_search(tmp_path: Path) -> None:
    from skipnas.study.driver import search

    result = search(trials=6, trial_seconds=1, synthetic_images=4, device="cpu", runs_dir=tmp_path / "runs", budget_mib=40)
    study = result.study
    assert _history_info(study)["numbers"], "the search completed no trial"
    queued = {t.user_attrs["baseline"] for t in study.get_trials() if "baseline" in t.user_attrs}
    assert queued == {"standard", "semi-dense", "reverse", "dense", "none"}
    # every baseline is drawn once, the best trial's panel included
    assert sorted(p["name"] for p in _skip_matrices_info(study) if p["role"] == "baseline" or p["name"] in queued) == sorted(queued)
    frequency = _link_frequency_info(study)["frequency"]
    assert frequency.shape == (4, 4) and 0 <= frequency.min() and frequency.max() <= 1
    importance = _importance_info(study)
    assert len(importance["params"]) == 16 and sum(importance["importances"]) == pytest.approx(1.0)
    page = write_report(study, tmp_path / "report.html").read_text(encoding="utf-8")
    for title in FIGURE_TITLES.values():
        assert title in page
