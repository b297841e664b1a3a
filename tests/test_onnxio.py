"""ONNX: the exported network computes what PyTorch computes, counts the same, and is refused when stale."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("onnxruntime", reason='ONNX tests need pip install "skipnas[onnx]"')

from skipnas.cli import main  # noqa: E402
from skipnas.counting.postprocess import PostprocessConfig  # noqa: E402
from skipnas.errors import SkipnasError  # noqa: E402
from skipnas.genome import Genome  # noqa: E402
from skipnas.modelio import load_model_folder, save_model_folder  # noqa: E402
from skipnas.models import build_model  # noqa: E402
from skipnas.onnxio import OnnxNetwork, onnx_difference, write_onnx  # noqa: E402
from skipnas.runtime.normalise import Normalisation  # noqa: E402


def _folder(path: Path, topology: str, auxiliary: str | None = None, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    genome = Genome.named(topology, base_width=4)
    model = build_model(genome, in_channels=1, auxiliary=auxiliary).eval()
    return save_model_folder(path, model, genome, Normalisation.stretched(1), PostprocessConfig(threshold=0.5, min_area=2), in_channels=1)


@pytest.mark.parametrize("topology", ["standard", "semi-dense", "reverse", "dense", "none"])
def test_onnxruntime_matches_pytorch_within_1e_4_on_random_inputs(tmp_path: Path, topology: str) -> None:
    folder = _folder(tmp_path / topology, topology, auxiliary="distance" if topology == "dense" else None)
    path = write_onnx(folder)
    assert path == folder / "model.onnx"
    loaded = load_model_folder(folder)
    network = OnnxNetwork(loaded)
    shapes = [(1, 1, 32, 48), (3, 1, 64, 16), (1, 1, 128, 96)]
    assert onnx_difference(loaded.model, network.session, shapes, seed=1) <= 1e-4
    x = torch.randn(2, 1, 48, 80)
    with torch.no_grad():
        assert torch.allclose(network(x), loaded.model(x), atol=1e-4)
    # any size: padded to the network's multiple and cropped back
    assert network(torch.randn(1, 1, 37, 53)).shape == (1, 2 if topology == "dense" else 1, 37, 53)


def test_count_with_the_onnx_engine_finds_the_same_particles(tmp_path: Path, tiny_dataset: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _folder(tmp_path / "m", "standard")
    images = tiny_dataset / "test" / "images"
    assert main(["count", str(folder), str(images), "--out", str(tmp_path / "none"), "--engine", "onnx"]) == 2
    assert f"{folder / 'model.onnx'}: missing; write it with skipnas onnx" in capsys.readouterr().err
    assert main(["onnx", str(folder)]) == 0
    capsys.readouterr()
    counted = {}
    for engine in ("torch", "onnx"):
        assert main(["count", str(folder), str(images), "--out", str(tmp_path / engine), "--engine", engine, "--json"]) == 0
        counted[engine] = json.loads(capsys.readouterr().out)
    assert [row["count"] for row in counted["onnx"]["images"]] == [row["count"] for row in counted["torch"]["images"]]
    assert json.loads((tmp_path / "onnx" / "summary.json").read_text())["engine"] == "onnx"
    particles = [(tmp_path / engine / "particles.csv").read_text().splitlines() for engine in ("torch", "onnx")]
    boxes = [[",".join(line.split(",")[:8]) for line in lines] for lines in particles]  # all but the confidence
    assert boxes[0] == boxes[1]


def test_an_onnx_file_of_other_weights_is_refused(tmp_path: Path) -> None:
    folder = _folder(tmp_path / "m", "standard")
    write_onnx(folder)
    _folder(tmp_path / "m", "standard", seed=1)  # retrained in place: new weights, the old model.onnx removed
    assert not (folder / "model.onnx").exists()
    write_onnx(folder)
    onnx_bytes = (folder / "model.onnx").read_bytes()
    state = torch.load(folder / "weights.pt")
    state[next(iter(state))] += 1.0
    torch.save(state, folder / "weights.pt")
    (folder / "model.onnx").write_bytes(onnx_bytes)
    with pytest.raises(SkipnasError, match="made from other weights"):
        OnnxNetwork(load_model_folder(folder))
