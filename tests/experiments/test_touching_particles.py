"""The bead experiment: training options after ``--`` reach ``skipnas train``, a kept model is counted
again without training, and the counting errors are sorted particle by particle."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from skipnas.counting.postprocess import METHODS, PostprocessConfig

REPO = Path(__file__).resolve().parents[2]


def _rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(line for line in path.read_text().splitlines() if not line.startswith("#")))


SCRIPT = str(REPO / "experiments" / "touching_particles.py")


def _run(*options: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, SCRIPT, *options], capture_output=True, text=True, cwd=cwd)


def test_training_options_after_the_separator_train_the_model_that_is_then_counted_again(tmp_path: Path) -> None:
    model, first, second = tmp_path / "model", tmp_path / "first.csv", tmp_path / "second.csv"
    trained = _run(
        "--smoke", "--extra-train-seeds", "3", "--model", str(model), "--out", str(first),
        "--", "--auxiliary", "centres", "--particle-weight", "0.5", "--scheduler", "cosine", "--patience", "0", cwd=tmp_path,
    )
    assert trained.returncode == 0, trained.stderr
    info = json.loads((model / "model.json").read_text())
    assert info["auxiliary"] == "centres"
    config = info["train_config"]
    assert config["loss"]["particle_weight"] == 0.5 and config["scheduler"] == "cosine" and config["early_stopping"] is None
    comment = first.read_text().splitlines()[0]
    assert "trained by skipnas train --width 4 --steps 6" in comment and "--particle-weight 0.5 --scheduler cosine" in comment
    assert "also trained on the train and val splits of demo seeds 3" in comment

    again = _run("--smoke", "--from-model", str(model), "--calibrate-seeds", "2", "--out", str(second), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    comment = second.read_text().splitlines()[0]
    assert f"the model in {model}" in comment and "standard width 4 with the centres head, weights of step " in comment
    assert "calibrated on the val splits of demo seeds 0,1 and the val splits of demo seeds 2" in comment
    rows = _rows(second)
    assert [row["method"] for row in rows] == list(METHODS)
    for row in rows:
        # sum |found - true| over images is the MAE times the images: the split into too many and too few adds up
        images, wrong = int(row["test_images"]), int(row["too_many"]) + int(row["too_few"])
        assert abs(float(row["count_mae"]) * images - wrong) < 0.001 * images
        assert 0 <= int(row["unseen_particles"]) <= int(row["test_particles"])
        assert 0 <= float(row["object_precision"]) <= 1 and 0 <= float(row["object_recall"]) <= 1
        kinds = {kind: int(row[kind]) for kind in ("missed", "merged", "split", "false_positives")}
        assert int(row["too_many"]) - int(row["too_few"]) == kinds["split"] + kinds["false_positives"] - kinds["missed"] - kinds["merged"]
        # calibrating on the test images themselves cannot count them worse than calibrating on val
        assert float(row["test_calibrated_relative_count_error"]) <= float(row["relative_count_error"])


def test_extra_training_draws_give_both_their_splits_to_training(load_experiment, tmp_path: Path) -> None:
    from skipnas.data.demo import demo_classes, demo_dataset_path

    demo = demo_dataset_path(0)
    root = load_experiment("touching_particles").write_class_subset(demo, tmp_path / "beads", prefix="seed0-", splits=("train", "val"), into="train")
    assert sorted(path.name for path in root.iterdir()) == ["train"]
    stems = demo_classes(demo)
    expected = sorted(f"seed0-{stem}.tif" for split in ("train", "val") for stem in stems[split])
    assert sorted(path.name for path in (root / "train" / "images").iterdir()) == expected
    assert sorted(path.name for path in (root / "train" / "masks").iterdir()) == expected


@pytest.mark.parametrize("seeds", ["1", "5"])
def test_a_draw_given_two_roles_is_refused(tmp_path: Path, seeds: str) -> None:
    out = tmp_path / "beads.csv"
    result = _run("--smoke", "--calibrate-seeds", "5", "--extra-train-seeds", seeds, "--out", str(out), cwd=tmp_path)
    assert result.returncode == 2 and f"--extra-train-seeds: [{seeds}] already train or calibrate" in result.stderr
    assert "Traceback" not in result.stderr and not out.exists()


@pytest.mark.parametrize("options", [["--extra-train-seeds", "2"], ["--", "--width", "8"]])
def test_training_options_are_refused_when_nothing_is_trained(tmp_path: Path, options: list[str]) -> None:
    out = tmp_path / "beads.csv"
    result = _run("--smoke", "--from-model", str(tmp_path / "model"), "--out", str(out), *options, cwd=tmp_path)
    assert result.returncode == 2 and "--from-model trains nothing" in result.stderr
    assert "Traceback" not in result.stderr and not out.exists()


def test_a_bad_training_option_is_named_by_skipnas_train(tmp_path: Path) -> None:
    out = tmp_path / "beads.csv"
    result = _run("--smoke", "--out", str(out), "--", "--particle-weight", "-1", cwd=tmp_path)
    assert result.returncode == 2 and "--particle-weight" in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()


def test_a_particle_without_one_pixel_of_the_mask_is_unseen(load_experiment) -> None:
    module = load_experiment("touching_particles")
    instances = np.zeros((16, 16), np.int32)
    instances[1:4, 1:4], instances[6:9, 6:9], instances[12:15, 12:15] = 1, 2, 3
    prob = np.zeros((16, 16), np.float32)
    prob[1:4, 1:4] = 0.9  # all of particle 1
    prob[8, 8] = 0.9  # one pixel of particle 2
    prob[12:15, 12:15] = 0.4  # particle 3, below the threshold
    assert module.unseen_particles(prob, instances, PostprocessConfig(threshold=0.5)) == 1
    assert module.unseen_particles(prob, instances, PostprocessConfig(threshold=0.3)) == 0
    # the mask is the post-processed one: an erosion that removes the single pixel loses particle 2
    assert module.unseen_particles(prob, instances, PostprocessConfig(threshold=0.5, erode=3)) == 2


def test_counting_errors_are_sorted_particle_by_particle(load_experiment) -> None:
    module = load_experiment("touching_particles")
    instances = np.zeros((20, 40), np.int32)
    instances[2:8, 2:8], instances[2:8, 8:14] = 1, 2  # a touching pair, counted as one particle
    instances[12:18, 2:14] = 3  # one bead, counted as two
    instances[12:18, 20:26] = 4  # a bead not counted at all
    labels = np.zeros_like(instances)
    labels[2:8, 2:14] = 1
    labels[12:18, 2:8], labels[12:18, 8:14] = 2, 3
    labels[2:8, 30:36] = 4  # on no bead
    labels[8:10, 2:6] = 5  # mostly beside bead 1: a false positive too
    kinds = module.error_kinds(labels, instances)
    assert kinds == {"missed": 1, "merged": 1, "split": 1, "false_positives": 2}
    found, true = 5, 4
    assert found - true == kinds["split"] + kinds["false_positives"] - kinds["missed"] - kinds["merged"]
    # a perfect count errs in no way
    assert set(module.error_kinds(instances, instances).values()) == {0}
