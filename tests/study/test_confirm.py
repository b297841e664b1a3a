"""Confirmation: the best candidates and the baselines trained again with seeds and scored on held-out data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import optuna
import pytest

from skipnas.genome import Genome
from skipnas.study.confirm import (
    CONFIRMATION_ATTR,
    TOTALS,
    Candidate,
    CandidateRuns,
    confirm,
    interval,
    paired_difference,
    pooled_metrics,
    verdict,
)
from skipnas.study.driver import search
from skipnas.study.settings import SearchSettings

ALL_SPACE = (Path(__file__).resolve().parents[1] / "fixtures" / "spaces" / "tiny-all.toml").read_text()


def test_interval_is_the_mean_and_a_t_interval() -> None:
    result = interval([1.0, 2.0, 3.0])
    half = 4.302652729911275 * 1.0 / np.sqrt(3)  # t(0.975, 2) x SD / sqrt(n)
    assert result["mean"] == 2.0 and result["low"] == pytest.approx(2.0 - half) and result["high"] == pytest.approx(2.0 + half)
    assert interval([5.0]) == {"mean": 5.0, "low": 5.0, "high": 5.0}


def test_paired_difference_brackets_a_shift_and_zero_for_noise() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(0, 1, 60)
    shifted = paired_difference(base - 0.5 + rng.normal(0, 0.1, 60), base)
    assert shifted["high"] < 0 and shifted["low"] < -0.4 and shifted["mean"] == pytest.approx(-0.5, abs=0.05)
    noise = paired_difference(base + rng.normal(0, 1, 60), base)
    assert noise["low"] < 0 < noise["high"]


def _runs(trial: int, baseline: str | None, errors: list[int]) -> CandidateRuns:
    candidate = Candidate(trial, "custom" if baseline is None else baseline, baseline, Genome.named("standard", depth=2), {})
    rows = [{"seed": seed, "stem": f"i{index}", "true_count": 10, "pred_count": 10 + error, "dice": 0.5}
            for seed in range(2) for index, error in enumerate(errors)]
    return CandidateRuns(candidate, [{"dice": 0.5, "count_mae": float(np.mean(np.abs(errors))), "relative_count_error": 0.1}] * 2, rows)


def test_the_verdict_names_a_winner_only_when_the_interval_excludes_zero() -> None:
    better, worse = _runs(7, None, [0, 1, 0, 0, 1, 0, 0, 0]), _runs(0, "standard", [3, 4, 2, 3, 5, 3, 4, 2])
    result = verdict(better, worse, "count_mae")
    assert result["winner"] == 7 and result["distinguishable"] and result["difference"]["high"] < 0
    assert result["text"].startswith("trial 7 beats standard: count MAE 0.25 vs 3.25 (95 % CI of the difference")
    assert verdict(worse, better, "count_mae")["winner"] == 7  # the baseline here is the better one
    same = verdict(_runs(7, None, [1, 2, 0, 1] * 2), _runs(0, "standard", [2, 1, 1, 0] * 2), "count_mae")
    assert same["winner"] is None and not same["distinguishable"]
    assert same["text"].startswith("no candidate is distinguishable from standard")
    assert verdict(None, worse, "count_mae")["text"] == "no searched candidate to compare"


@pytest.fixture(scope="module")
def searched_study(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[optuna.Study, Path]:
    root = tmp_path_factory.mktemp("confirm")
    space = root / "space.toml"
    space.write_text(ALL_SPACE)
    settings = SearchSettings(
        data=str(tiny_dataset), space=str(space), trials=6, trial_steps=6, synthetic_images=4, device="cpu",
        runs_dir=root / "runs", sampler="random", pruner="none",
    )
    return search(settings).study, root


def test_confirm_trains_the_top_candidates_and_three_baselines_and_stores_a_verdict(
    searched_study, monkeypatch: pytest.MonkeyPatch
) -> None:
    study, root = searched_study
    result = confirm(study, top=2, seeds=2, device="cpu", runs_dir=root / "runs")
    baselines = [c["baseline"] for c in result["candidates"] if c["baseline"]]
    assert {"standard", "semi-dense", "reverse"} <= set(baselines)
    assert len(result["candidates"]) >= 3 and all(c["seeds"] == 2 for c in result["candidates"])
    for entry in result["candidates"]:
        for metric in ("dice", "count_mae", "relative_count_error"):
            assert entry[metric]["low"] <= entry[metric]["mean"] <= entry[metric]["high"]
    assert set(result["verdict"]) >= {"winner", "baseline", "distinguishable", "difference", "text"}
    assert study.user_attrs[CONFIRMATION_ATTR] == result
    run = json.loads((root / "runs" / study.study_name / "confirm" / f"trial{result['candidates'][0]['trial']}-seed0" / "model.json").read_text())
    assert run["training"]["stop_reasons"] == {"pretrain": "2 steps", "finetune": "4 steps"}  # the study's own budget
    assert run["train_config"]["synthetic_images"] == study.user_attrs["synthetic_images"] == 4  # the search's pretraining
    # counted as skipnas train and export count: the tiny val split holds few particles, so train joins the calibration
    record = json.loads((root / "runs" / study.study_name / "confirm" / f"trial{result['candidates'][0]['trial']}-seed0" / "postprocess.json").read_text())
    assert run["train_config"]["calibrate_on"] == "auto" and record["calibration"]["calibrated_on"]["splits"] == ["val", "train"]
    folders = sorted(p.name for p in (root / "runs" / study.study_name / "confirm").iterdir())
    assert len(folders) == 2 * len(result["candidates"]) and all("-seed" in name for name in folders)
    from skipnas.study.export import export
    from skipnas.study.report import render_report

    assert "Held-out confirmation" in render_report(study) and result["verdict"]["text"] in render_report(study)
    exported = export(f"sqlite:///{root / 'runs' / 'skipnas.db'}", study.study_name, root / "best")
    assert exported.confirmation == result and exported.chosen_by.startswith("held-out confirmation: ")
    # the export follows the verdict: its winner, or the best baseline when nothing beats it
    verdict_trial = result["verdict"]["winner"]
    if verdict_trial is None:
        verdict_trial = next(c["trial"] for c in result["candidates"] if c["baseline"] == result["verdict"]["baseline"])
    assert exported.trial["trial"] == verdict_trial
    assert json.loads((root / "best" / "summary.json").read_text())["confirmation"]["verdict"] == result["verdict"]
    # run again, it resumes: every run is found finished and nothing trains
    import skipnas.candidate

    monkeypatch.setattr(skipnas.candidate, "train_candidate", lambda *args, **kwargs: pytest.fail("trained again"))
    again = confirm(study, top=2, seeds=2, device="cpu", runs_dir=root / "runs")
    assert again["candidates"] == result["candidates"]
    monkeypatch.undo()
    # a step budget repeats: trained afresh, the same numbers
    for stored in (root / "runs" / study.study_name / "confirm").glob("*/confirm_run.json"):
        stored.unlink()
    assert confirm(study, top=2, seeds=2, device="cpu", runs_dir=root / "runs")["candidates"] == result["candidates"]


def test_the_cli_prints_json_and_refuses_bad_values(searched_study, capsys: pytest.CaptureFixture[str]) -> None:
    from skipnas.cli import main

    study, root = searched_study
    storage = f"sqlite:///{root / 'runs' / 'skipnas.db'}"
    base = ["confirm", "--study", study.study_name, "--storage", storage, "--device", "cpu", "--runs-dir", str(root / "runs")]
    assert main([*base, "--top", "0"]) == 2
    assert "--top and --seeds must be at least 1, got 0 and 3" in capsys.readouterr().err
    assert main([*base, "--top", "1", "--seeds", "1", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["seeds"] == 1 and printed["verdict"]["text"]
    assert main(["confirm", "--study", "nope", "--storage", storage]) == 2
    assert "study 'nope' not found" in capsys.readouterr().err


def test_pooled_metrics_count_over_every_held_out_image_and_pixel() -> None:
    def run(true: list[int], found: list[int], pixels: tuple[int, int, int], objects: tuple[int, int, int]) -> dict:
        rows = [{"seed": 0, "stem": f"i{i}", "true_count": t, "pred_count": f, "dice": 0.5} for i, (t, f) in enumerate(zip(true, found))]
        totals = dict(zip(TOTALS, (*pixels, *objects)))
        return {"metrics": {"dice": 0.0}, "rows": rows, "totals": totals}

    pooled = pooled_metrics([run([10, 10], [12, 10], (30, 10, 10), (8, 2, 2)), run([20], [14], (10, 0, 30), (10, 0, 10))])
    # |errors| 2, 0, 6 over 3 images and 40 particles; pixels tp 40, fp 10, fn 40; objects tp 18, fp 2, fn 12
    assert pooled["count_mae"] == pytest.approx(8 / 3) and pooled["relative_count_error"] == pytest.approx(8 / 40)
    assert pooled["dice"] == pytest.approx(80 / 130)
    assert pooled["object_precision"] == pytest.approx(18 / 20) and pooled["object_recall"] == pytest.approx(18 / 30)
    # one run (the test split) is its own stored metrics
    assert pooled_metrics([{"metrics": {"dice": 0.7}, "rows": [], "totals": {}}]) == {"dice": 0.7}


def test_without_test_masks_each_candidate_is_cross_validated_and_every_image_held_out_once(
    tmp_path: Path, tiny_dataset_writer, capsys: pytest.CaptureFixture[str]
) -> None:
    from skipnas.cli import main

    data = tiny_dataset_writer(tmp_path / "data", counts={"train": 7, "val": 2})
    space = tmp_path / "space.toml"
    space.write_text(ALL_SPACE)
    settings = SearchSettings(
        data=str(data), space=str(space), trials=3, trial_steps=6, synthetic_images=4, device="cpu",
        runs_dir=tmp_path / "runs", sampler="random", pruner="none",
    )
    study = search(settings).study
    storage = f"sqlite:///{tmp_path / 'runs' / 'skipnas.db'}"
    assert main(["confirm", "--study", study.study_name, "--storage", storage, "--top", "1", "--seeds", "1", "--device", "cpu",
                 "--runs-dir", str(tmp_path / "runs"), "--folds", "3"]) == 0
    printed = capsys.readouterr().out
    assert "held out (3-fold cross-validation over train and val), 1 seed(s) each" in printed and "recall" in printed
    result = optuna.load_study(study_name=study.study_name, storage=storage).user_attrs[CONFIRMATION_ATTR]
    assert result["split"] == "3-fold cross-validation over train and val"
    folder = tmp_path / "runs" / study.study_name / "confirm"
    trials = {c["trial"] for c in result["candidates"]}
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"trial{t}-seed0-fold{k}" for t in trials for k in range(3))
    for trial in trials:
        held_out = [row["stem"] for k in range(3) for row in json.loads((folder / f"trial{trial}-seed0-fold{k}" / "confirm_run.json").read_text())["rows"]]
        assert sorted(held_out) == sorted([f"train{i}-0" for i in range(7)] + ["val0-0", "val1-0"])
    assert main(["confirm", "--study", study.study_name, "--storage", storage, "--folds", "2", "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "--folds must be a whole number of at least 3" in capsys.readouterr().err
