"""The bead experiment's training options reach the model it trains and the results' comment line;
a kept model is predicted again without training, and saved predictions are averaged."""

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


def test_the_loss_augmentation_and_schedule_options_train_the_kept_model(tmp_path: Path) -> None:
    out, model = tmp_path / "beads.csv", tmp_path / "model"
    command = [
        sys.executable, str(REPO / "experiments" / "touching_particles.py"), "--smoke",
        "--particle-weight", "0.5", "--augment-contrast", "--scheduler", "cosine", "--auxiliary-weight", "2", "--extra-train-seeds", "2",
        "--model", str(model), "--out", str(out),
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    train_config = json.loads((model / "model.json").read_text())["train_config"]
    assert train_config["loss"]["particle_weight"] == 0.5 and train_config["augment"]["brightness_contrast"] is True
    assert train_config["scheduler"] == "cosine" and train_config["auxiliary_weight"] == 2
    comment = out.read_text().splitlines()[0]
    assert "particle loss weight 0.5" in comment and "brightness-contrast augmentation" in comment
    assert "cosine learning-rate schedule" in comment and "auxiliary loss weight 2" in comment
    assert "also trained on the train and val splits of demo seeds 2" in comment


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
def test_extra_training_draws_that_already_train_or_calibrate_are_refused(tmp_path: Path, seeds: str) -> None:
    out = tmp_path / "beads.csv"
    command = [
        sys.executable, str(REPO / "experiments" / "touching_particles.py"), "--smoke", "--calibrate-seeds", "5",
        "--extra-train-seeds", seeds, "--out", str(out),
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2 and f"--extra-train-seeds: [{seeds}] already train or calibrate" in result.stderr
    assert "Traceback" not in result.stderr and not out.exists()


def test_extra_training_draws_are_refused_when_nothing_is_trained(tmp_path: Path) -> None:
    out = tmp_path / "beads.csv"
    command = [
        sys.executable, str(REPO / "experiments" / "touching_particles.py"), "--smoke", "--from-model", str(tmp_path / "model"),
        "--extra-train-seeds", "2", "--out", str(out),
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2 and "--extra-train-seeds: --from-model trains nothing" in result.stderr
    assert "Traceback" not in result.stderr and not out.exists()


@pytest.mark.parametrize("option", ["--particle-weight", "--auxiliary-weight"])
def test_a_negative_loss_weight_is_named_before_any_training(tmp_path: Path, option: str) -> None:
    out = tmp_path / "beads.csv"
    command = [sys.executable, str(REPO / "experiments" / "touching_particles.py"), "--smoke", option, "-1", "--out", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2 and f"{option}: " in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()


def test_a_kept_centre_model_is_counted_again_with_test_time_augmentation(tmp_path: Path) -> None:
    model, first, second = tmp_path / "model", tmp_path / "first.csv", tmp_path / "second.csv"
    script = str(REPO / "experiments" / "touching_particles.py")
    trained = subprocess.run(
        [sys.executable, script, "--smoke", "--auxiliary", "centres", "--model", str(model), "--out", str(first)],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert trained.returncode == 0, trained.stderr
    assert json.loads((model / "model.json").read_text())["auxiliary"] == "centres"
    predictions = tmp_path / "again.npz"
    again = subprocess.run(
        [
            sys.executable, script, "--smoke", "--from-model", str(model), "--tta", "flips", "--calibrate-seeds", "2",
            "--predictions", str(predictions), "--out", str(second),
        ],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert again.returncode == 0, again.stderr
    comment = second.read_text().splitlines()[0]
    assert f"the model in {model} (standard width 4 with the centres head, weights of step " in comment
    assert "test-time augmentation flips" in comment
    assert "calibrated on the val splits of demo seeds 0,1 and the val splits of demo seeds 2" in comment
    assert "centres head" in first.read_text().splitlines()[0]
    # the saved predictions remember their target, so counting them again scores against centre maps
    with np.load(predictions) as saved:
        assert str(saved["auxiliary"]) == "centres"
        val_stems = [str(stem) for stem in saved["val_stems"]]
    # the third draw's val images joined the calibration images, after the trained draws' own
    assert any(stem.startswith("seed2-") for stem in val_stems) and not val_stems[0].startswith("seed2-")
    rows = _rows(second)
    assert [row["method"] for row in rows] == list(METHODS)
    for row in rows:
        # sum |found - true| over images is the MAE times the images: the split into too many and too few adds up
        images, wrong = int(row["test_images"]), int(row["too_many"]) + int(row["too_few"])
        assert abs(float(row["count_mae"]) * images - wrong) < 0.001 * images
        assert 0 <= int(row["unseen_particles"]) <= int(row["test_particles"])
        kinds = {kind: int(row[kind]) for kind in ("missed", "merged", "split", "false_positives")}
        assert int(row["too_many"]) - int(row["too_few"]) == kinds["split"] + kinds["false_positives"] - kinds["missed"] - kinds["merged"]
        # calibrating on the test images themselves cannot count them worse than calibrating on val
        assert float(row["test_calibrated_relative_count_error"]) <= float(row["relative_count_error"])


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


@pytest.mark.slow  # trains a network: about 25 s on 2 cores
def test_the_mean_of_one_network_twice_counts_as_that_network(tmp_path: Path) -> None:
    script = str(REPO / "experiments" / "touching_particles.py")
    predictions, single, averaged = tmp_path / "net.npz", tmp_path / "single.csv", tmp_path / "mean.csv"
    trained = subprocess.run(
        [sys.executable, script, "--smoke", "--predictions", str(predictions), "--out", str(tmp_path / "trained.csv")],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert trained.returncode == 0, trained.stderr
    grid = ["--peak-windows", "3,10", "--seed-thresholds", "0.2,0.5", "--min-peak-probabilities", "0,0.7"]
    for source, out in ((["--predictions", str(predictions)], single), (["--average", f"{predictions},{predictions}"], averaged)):
        counted = subprocess.run([sys.executable, script, *source, *grid, "--out", str(out)], capture_output=True, text=True, cwd=tmp_path)
        assert counted.returncode == 0, counted.stderr
    assert _rows(averaged) == _rows(single)
    comment = averaged.read_text().splitlines()[0]
    assert f"the mean of 2 networks' predictions ({predictions}: " in comment
    assert comment.endswith("seed thresholds 0.2,0.5, peak windows 3,10 px, min peak probabilities 0,0.7")
    # a missing file is named, exit code 2
    missing = subprocess.run(
        [sys.executable, script, "--average", f"{predictions},{tmp_path / 'none.npz'}", "--out", str(tmp_path / "x.csv")],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert missing.returncode == 2 and "none.npz is not a file" in missing.stderr and not (tmp_path / "x.csv").exists()


def test_saved_predictions_average_pixel_by_pixel_and_only_over_the_same_images(load_experiment, tmp_path: Path) -> None:
    module = load_experiment("touching_particles")
    instances = np.zeros((8, 8), np.int32)
    instances[2:5, 2:5] = 1

    def saved(name: str, value: float, stem: str = "a") -> Path:
        image = module.LabeledImage(stem, np.zeros((8, 8), np.uint8), instances)
        predictions = [module.Prediction(np.full((1, 8, 8), value, np.float32), np.full((8, 8), value / 2, np.float32))]
        path = tmp_path / f"{name}.npz"
        module.Predicted([image], predictions, [image], predictions, 1, name).save(path)
        return path

    mean = module.Predicted.mean([saved("low", 0.2), saved("high", 0.6)])
    for predictions in (mean.val_predictions, mean.test_predictions):
        assert np.allclose(predictions[0].classes, 0.4) and np.allclose(predictions[0].auxiliary, 0.2)
    assert mean.description.startswith("the mean of 2 networks' predictions") and mean.auxiliary == "distance"
    with pytest.raises(ValueError, match="other images"):
        module.Predicted.mean([saved("low", 0.2), saved("elsewhere", 0.6, stem="b")])
