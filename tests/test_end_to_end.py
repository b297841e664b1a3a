"""Train -> save -> load -> evaluate -> count on generated 48 px data, through the CLI, in seconds."""

from __future__ import annotations

import csv
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from skipnas.cli import main
from skipnas.counting.postprocess import AUXILIARY_METHODS, METHODS

FAST = ["--pretrain-seconds", "1", "--finetune-seconds", "2", "--width", "4", "--tile", "32", "--batch", "4", "--synthetic", "4", "--device", "cpu"]


@pytest.fixture(scope="module")
def model_dir(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("model") / "standard"
    # no auxiliary head (the tiny data's touching particles would give it one by default)
    args = ["train", "--data", str(tiny_dataset), "--topology", "standard", *FAST, "--auxiliary", "none", "--out", str(out), "--json"]
    assert main(args) == 0
    return out


def test_train_writes_a_model_folder_with_calibrated_counting(model_dir: Path) -> None:
    assert (model_dir / "weights.pt").is_file()
    postprocess = json.loads((model_dir / "postprocess.json").read_text())
    assert {"threshold", "erode", "dilate", "min_area", "method"} <= set(postprocess)
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["images"] == 2 and 0.0 <= metrics["dice"] <= 1.0


def test_evaluate_json_has_the_contract_keys(model_dir: Path, tiny_dataset: Path, capsys) -> None:
    assert main(["evaluate", str(model_dir), "--data", str(tiny_dataset), "--split", "test", "--json", "--device", "cpu"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    required = {"dice", "precision", "recall", "count_mae", "count_mse", "exact_count_accuracy", "images"}
    assert required <= set(metrics)
    assert metrics["images"] == 2 and metrics["split"] == "test" and metrics["auxiliary"] is None
    # a model without an auxiliary head is never calibrated to a method that needs one
    assert metrics["counting_method"] in METHODS and metrics["counting_method"] not in AUXILIARY_METHODS
    # the same scores from images already in memory, as confirm takes them
    from skipnas.data.loading import load_labeled
    from skipnas.data.scan import scan_dataset
    from skipnas.evaluate import evaluate_images

    in_memory = evaluate_images(model_dir, load_labeled(scan_dataset(tiny_dataset).samples("test")), device="cpu")
    assert in_memory == {k: v for k, v in metrics.items() if k not in ("split", "data", "unlabelled_images")}


def test_count_writes_csvs_and_overlays_for_images_of_any_size(model_dir: Path, tiny_dataset: Path, tmp_path: Path, capsys) -> None:
    import numpy as np

    from skipnas.data.demo import make_demo_image
    from skipnas.data.io import write_image

    big, _, _ = make_demo_image(np.random.default_rng(5), 150)
    write_image(tmp_path / "odd" / "big.tif", big[:150, :131])
    write_image(tmp_path / "tiny" / "big.tif", big[:9, :13])  # below 2**depth: padded up, and a second "big"
    out = tmp_path / "counts"
    inputs = [str(tiny_dataset / "test"), str(tmp_path / "odd" / "big.tif"), str(tmp_path / "tiny" / "big.tif")]
    args = ["count", str(model_dir), *inputs, "--out", str(out), "--json"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    rows = list(csv.DictReader((out / "counts.csv").open()))
    assert [Path(r["file"]).name for r in rows] == ["test0-0.tif", "test1-0.tif", "big.tif", "big.tif"]
    assert rows[0]["true_count"] != "" and rows[2]["true_count"] == ""  # masks beside images/ only
    assert sum(int(r["count"]) for r in rows) == summary["total"]
    particles = list(csv.DictReader((out / "particles.csv").open()))
    assert len(particles) == summary["total"]
    assert all(0.0 <= float(p["confidence"]) <= 1.0 and int(p["area"]) > 0 for p in particles)
    # two inputs named big.tif get two overlays
    assert sorted(p.name for p in (out / "overlays").iterdir()) == ["big-2.png", "big.png", "test0-0.png", "test1-0.png"]
    assert [r["overlay"] for r in rows][2:] == ["overlays/big.png", "overlays/big-2.png"]


def _png_claiming(path: Path, width: int, height: int) -> Path:
    """A PNG of 65 bytes whose header claims ``width`` x ``height`` grey pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    return path


def test_count_and_evaluate_bad_input_exit_2(model_dir: Path, tmp_path: Path) -> None:
    huge = _png_claiming(tmp_path / "huge" / "huge.png", 60_000, 60_000)
    cases = [
        (["count", str(model_dir), str(huge.parent), "--out", str(tmp_path / "o")], "huge.png: 60000 x 60000"),
        (["count", str(model_dir), str(tmp_path / "missing.png"), "--out", str(tmp_path / "o")], "missing.png: no such file"),
        (["count", str(tmp_path / "nomodel"), str(tmp_path), "--out", str(tmp_path / "o")], "nomodel: no such model folder"),
        (["evaluate", str(model_dir), "--data", str(tmp_path / "nodata")], "nodata"),
    ]
    for args, message in cases:
        result = subprocess.run([sys.executable, "-m", "skipnas", *args], capture_output=True, text=True)
        assert result.returncode == 2, result.stderr
        assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "o").exists()


@pytest.fixture(scope="module")
def auxiliary_model_dir(tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("model") / "auxiliary"
    args = [
        "train", "--data", str(tiny_dataset), "--topology", "reverse", *FAST, "--auxiliary", "distance", "--keep-best", "count",
        "--particle-weight", "1", "--out", str(out), "--json",
    ]
    assert main(args) == 0
    return out


def test_train_with_an_auxiliary_head_then_evaluate_and_count_say_which_method_counted(
    auxiliary_model_dir: Path, tiny_dataset: Path, tmp_path: Path, capsys
) -> None:
    capsys.readouterr()
    info = json.loads((auxiliary_model_dir / "model.json").read_text())
    assert info["auxiliary"] == "distance" and info["classes"] == 1
    # --keep-best count: the folder says which validation's weights it holds, and what they counted
    assert info["train_config"]["keep_best_by"] == "count"
    assert info["train_config"]["loss"]["particle_weight"] == 1.0
    kept = info["training"]["kept"]
    assert kept["phase"] == "finetune" and kept["val_count_mae"] >= 0
    assert kept == min(
        (h for h in info["training"]["history"] if h["phase"] == "finetune"), key=lambda h: (h["val_count_mae"], -h["val_dice"])
    )
    method = json.loads((auxiliary_model_dir / "postprocess.json").read_text())["method"]
    assert main(["evaluate", str(auxiliary_model_dir), "--data", str(tiny_dataset), "--split", "test", "--json", "--device", "cpu"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["counting_method"] == method and metrics["auxiliary"] == "distance"
    assert main(["count", str(auxiliary_model_dir), str(tiny_dataset / "test"), "--out", str(tmp_path / "c"), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["method"] == method and summary["auxiliary"] == "distance"
    assert json.loads((tmp_path / "c" / "summary.json").read_text())["method"] == method


def test_seeded_counting_uses_the_auxiliary_map_and_counts_only_the_particle_class(
    auxiliary_model_dir: Path, tiny_dataset: Path, tmp_path: Path, capsys
) -> None:
    import shutil

    import numpy as np

    from skipnas.count import count_images
    from skipnas.counting.postprocess import PostprocessConfig, count_particles, write_postprocess_config
    from skipnas.data.io import read_image
    from skipnas.modelio import load_model_folder
    from skipnas.predict import predict_probabilities
    from skipnas.runtime.device import select_device
    from skipnas.runtime.normalise import prepare_image

    seeded = tmp_path / "seeded"
    shutil.copytree(auxiliary_model_dir, seeded)
    config = PostprocessConfig(method="seeded", threshold=0.3, min_area=1, seed_threshold=0.5)
    write_postprocess_config(seeded / "postprocess.json", config)
    capsys.readouterr()
    assert main(["evaluate", str(seeded), "--data", str(tiny_dataset), "--split", "test", "--device", "cpu"]) == 0
    assert "counted by: seeded, from the model's auxiliary distance head" in capsys.readouterr().out

    result = count_images(seeded, [tiny_dataset / "test"], tmp_path / "counts", device="cpu", progress=False)
    assert result.method == "seeded"
    rows = list(csv.DictReader((tmp_path / "counts" / "counts.csv").open()))
    assert set(rows[0]) == {"file", "count", "true_count", "overlay"}  # no column for the auxiliary channel
    particles = list(csv.DictReader((tmp_path / "counts" / "particles.csv").open()))
    assert {p["class"] for p in particles} <= {"particle"}
    # the counts are the particle channel's, seeded by the auxiliary channel
    folder = load_model_folder(seeded)
    setup = select_device("cpu")
    for row in rows:
        probs = predict_probabilities(folder.model, prepare_image(read_image(Path(row["file"])), folder.normalisation), setup, folder.tile)
        assert probs.shape[0] == 2
        assert int(row["count"]) == count_particles(probs[0], config, auxiliary=probs[1]).count
    # without the auxiliary map the seeded method cannot count: it really is used
    with pytest.raises(ValueError, match="needs the auxiliary map"):
        count_particles(np.asarray(probs[0]), config)


def test_a_model_calibrated_with_test_time_augmentation_counts_with_it_unless_told_otherwise(
    tiny_dataset: Path, tmp_path: Path, capsys
) -> None:
    from skipnas.count import count_images
    from skipnas.counting.postprocess import count_particles
    from skipnas.data.io import read_image
    from skipnas.modelio import load_model_folder
    from skipnas.predict import predict_probabilities
    from skipnas.runtime.device import select_device
    from skipnas.runtime.normalise import prepare_image

    model = tmp_path / "centres"
    args = ["train", "--data", str(tiny_dataset), *FAST, "--auxiliary", "centres", "--tta", "flips", "--out", str(model), "--json"]
    assert main(args) == 0
    info = json.loads((model / "model.json").read_text())
    assert info["auxiliary"] == "centres" and info["inference_tta"] == "flips" and info["train_config"]["tta"] == "flips"
    capsys.readouterr()
    assert main(["evaluate", str(model), "--data", str(tiny_dataset), "--split", "test", "--json", "--device", "cpu"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["tta"] == metrics["calibrated_tta"] == "flips" and metrics["auxiliary"] == "centres"

    folder, setup = load_model_folder(model), select_device("cpu")
    for tta in (None, "none"):
        out = tmp_path / f"counts-{tta}"
        result = count_images(model, [tiny_dataset / "test"], out, device="cpu", progress=False, tta=tta)
        predicted_with = tta or "flips"
        assert result.tta == predicted_with and result.calibrated_tta == "flips"
        assert json.loads((out / "summary.json").read_text())["tta"] == predicted_with
        for row in result.images:
            image = prepare_image(read_image(Path(row["file"])), folder.normalisation)
            probs = predict_probabilities(folder.model, image, setup, folder.tile, tta=predicted_with)
            assert row["count"] == count_particles(probs[0], folder.postprocess, auxiliary=probs[1]).count
    assert main(["count", str(model), str(tiny_dataset / "test"), "--out", str(tmp_path / "plain"), "--tta", "none"]) == 0
    line = " ".join(capsys.readouterr().out.split())
    assert "the counting was calibrated with test-time augmentation flips" in line
