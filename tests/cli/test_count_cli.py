"""``skipnas count``: bad model folders and a spoiled --out are one line and exit 2, and --out is written all or none."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

import skipnas.cli
from skipnas.cli import main
from skipnas.counting.postprocess import PostprocessConfig
from skipnas.genome import Genome
from skipnas.modelio import save_model_folder
from skipnas.models import build_model
from skipnas.runtime.normalise import Normalisation


@pytest.fixture(autouse=True)
def _count_command_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(skipnas.cli, "_COMMAND_MODULES", ("count",))


@pytest.fixture
def model(tmp_path: Path) -> Path:
    genome = Genome.named("standard", base_width=4)
    return save_model_folder(tmp_path / "m", build_model(genome, in_channels=1).eval(), genome, Normalisation.stretched(1),
                             PostprocessConfig(threshold=0.0, min_area=1), in_channels=1)


@pytest.fixture
def images(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for index, name in enumerate(("a.png", "b.png")):
        cv2.imwrite(str(folder / name), np.random.default_rng(index).integers(0, 255, (40, 50), dtype=np.uint8))
    return folder


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


_TILE_RULE = "inference_tile must be a whole number of px, a multiple of 16 (2 ** the network's depth 4)"


@pytest.mark.parametrize(
    "key, bad, expected",
    [
        ("inference_tile", 0, f"{_TILE_RULE}, got 0"),
        ("inference_tile", "abc", "inference_tile must be a whole number of px"),
        ("inference_tile", 40, f"{_TILE_RULE}, got 40; set it to e.g. 512"),
        ("in_channels", -1, "in_channels must be a whole number from 1 to 1024, got -1"),
    ],
)
def test_a_bad_model_json_is_one_line_naming_the_folder_key_and_value(
    tmp_path: Path, model: Path, images: Path, capsys: pytest.CaptureFixture[str], key: str, bad: object, expected: str
) -> None:
    model_json = model / "model.json"
    model_json.write_text(json.dumps({**json.loads(model_json.read_text()), key: bad}))
    assert main(["count", str(model), str(images), "--out", str(tmp_path / "out"), "--device", "cpu", "--json"]) == 2
    line = _one_line(capsys.readouterr().err)
    assert f"{model_json}: {expected}" in line
    assert not (tmp_path / "out").exists()


def test_out_is_replaced_only_with_overwrite_and_a_failure_half_way_leaves_it(
    tmp_path: Path, model: Path, images: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main(["count", str(model), str(images), "--out", str(out), "--device", "cpu", "--json"]) == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert main(["count", str(model), str(images / "a.png"), "--out", str(out), "--device", "cpu", "--json"]) == 2
    assert "holds an earlier count's outputs (counts.csv, particles.csv, summary.json, overlays/a.png, overlays/b.png)" in _one_line(
        capsys.readouterr().err
    )
    (images / "b.png").write_bytes(b"\x89PNG broken")
    assert main(["count", str(model), str(images), "--out", str(out), "--device", "cpu", "--json", "--overwrite"]) == 2
    assert "b.png" in _one_line(capsys.readouterr().err)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert main(["count", str(model), str(images / "a.png"), "--out", str(out), "--device", "cpu", "--json", "--overwrite"]) == 0
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.*")) == ["counts.csv", "overlays/a.png", "particles.csv", "summary.json"]


def test_counts_never_go_into_a_model_folder(model: Path, images: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = sorted(p.name for p in model.iterdir())
    assert main(["count", str(model), str(images), "--out", str(model), "--device", "cpu", "--overwrite"]) == 2
    assert f"{model}: is a model folder; give the counts a folder of their own" in _one_line(capsys.readouterr().err)
    assert sorted(p.name for p in model.iterdir()) == before
