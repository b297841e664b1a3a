from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import types
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from skipnas.cli import main
from skipnas.data.io import MAX_PIXELS_ENV

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "sem_fibres"


def _pair(folder: Path, stem: str, particles: int = 2, size: tuple[int, int] = (32, 32)) -> None:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(folder / "images" / f"{stem}.png"), np.full(size, 80, np.uint8))
    ids = np.zeros(size, np.uint16)
    for i in range(particles):
        ids[2 + 4 * i : 4 + 4 * i, 2:10] = i + 1
    assert cv2.imwrite(str(folder / "masks" / f"{stem}.png"), ids)


def _good(root: Path) -> Path:
    _pair(root / "train", "a-1", particles=2)
    _pair(root / "train", "a-2", particles=1)
    _pair(root / "val", "b-1", particles=3)
    _pair(root / "test", "c-1", particles=1)
    (root / "test" / "images" / "unlabelled.png").write_bytes((root / "test" / "images" / "c-1.png").read_bytes())
    return root


def _broken(root: Path) -> tuple[Path, list[str]]:
    _good(root)
    (root / "train" / "images" / "lonely.png").write_bytes((root / "train" / "images" / "a-1.png").read_bytes())
    (root / "val" / "masks" / "orphan.png").write_bytes((root / "val" / "masks" / "b-1.png").read_bytes())
    (root / "val" / "images" / "notes.txt").write_text("not an image")
    (root / "train" / "masks" / "a-2.png").write_bytes(b"corrupt")
    _pair(root / "test", "small", size=(32, 32))
    assert cv2.imwrite(str(root / "test" / "images" / "small.png"), np.zeros((40, 32), np.uint8))
    return root, ["lonely.png", "orphan.png", "notes.txt", "a-2.png", "small.png"]


def test_check_json_on_a_good_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _good(tmp_path / "ds")
    assert main(["data", "check", str(root), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {"root", "splits", "warnings"} <= set(data)
    assert data["root"] == str(root.resolve())
    assert list(data["splits"]) == ["test", "train", "val"]  # print_json sorts keys
    counts = {name: (s["images"], s["masks"], s["particles"]) for name, s in data["splits"].items()}
    assert counts == {"train": (2, 2, 3), "val": (1, 1, 3), "test": (2, 1, 1)}
    assert data["splits"]["train"]["mean"] == pytest.approx([80 / 255])
    assert data["normalisation"]["mean"] == pytest.approx([80 / 255])
    assert len(data["warnings"]) == 1 and "unlabelled.png" in data["warnings"][0]


def test_check_prints_a_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "check", str(_good(tmp_path / "ds"))]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.strip()]
    assert any("train" in line and "32x32" in line and "instance" in line for line in lines)
    assert any("unlabelled.png" in line for line in lines)


def test_check_lists_every_problem_and_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, names = _broken(tmp_path / "ds")
    assert main(["data", "check", str(root), "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert f"{len(names)} problems" in lines[0]
    for name in names:
        assert sum(name in line for line in lines[1:]) == 1, name
    assert "Traceback" not in captured.err


def test_check_on_a_missing_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "check", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and "not found" in err and len(err.strip().splitlines()) == 1


def test_check_through_the_module_entry_point(tmp_path: Path) -> None:
    root, names = _broken(tmp_path / "ds")
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "skipnas", "data", "check", str(root)], capture_output=True, text=True, env=env
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert all(name in done.stderr for name in names)


def test_check_on_the_fixture_crops(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "check", str(FIXTURE), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    counts = {name: (s["images"], s["masks"], s["particles"]) for name, s in data["splits"].items()}
    assert counts == {"train": (1, 1, 6), "val": (1, 1, 9), "test": (1, 1, 5)}
    assert data["warnings"] == []


def test_check_demo_uses_the_demo_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fake = types.ModuleType("skipnas.data.demo")
    fake.demo_dataset_path = lambda: _good(tmp_path / "cached-demo")  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "skipnas.data.demo", fake)
    assert main(["data", "check", "demo", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["root"] == str((tmp_path / "cached-demo").resolve())


def test_demo_writes_where_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[tuple[Path, int]] = []

    def write_demo_dataset(out: Path, seed: int = 0) -> Path:
        calls.append((out, seed))
        return _good(out)

    fake = types.ModuleType("skipnas.data.demo")
    fake.write_demo_dataset = write_demo_dataset  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "skipnas.data.demo", fake)
    out_dir = tmp_path / "demo-out"
    assert main(["data", "demo", "--out", str(out_dir), "--seed", "3"]) == 0
    assert calls == [(out_dir, 3)]
    out = capsys.readouterr().out
    assert str(out_dir) in out.replace("\n", "") and "train" in out


def test_real_sem_fibre_counts(sem_fibres_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "check", str(sem_fibres_dir), "--json"]) == 0
    splits = json.loads(capsys.readouterr().out)["splits"]
    assert (splits["train"]["images"], splits["train"]["particles"]) == (64, 389)
    assert (splits["val"]["images"], splits["val"]["particles"]) == (16, 103)
    assert (splits["test"]["images"], splits["test"]["masks"], splits["test"]["particles"]) == (21, 11, 61)
    assert splits["train"]["mask_kinds"] == {"instance": 64}


def _discs_dataset(root: Path, radius: int, size: int = 200, empty_train: bool = False) -> Path:
    for split, stems in (("train", ("a-1", "a-2")), ("val", ("b-1",))):
        (root / split / "images").mkdir(parents=True, exist_ok=True)
        (root / split / "masks").mkdir(parents=True, exist_ok=True)
        for stem in stems:
            ids = np.zeros((size, size), np.uint16)
            if not (empty_train and split == "train"):
                cv2.circle(ids, (size // 4, size // 2), radius, 1, -1)
                cv2.circle(ids, (size // 4 + 2 * radius, size // 2), radius, 2, -1)  # touching the first
            image = np.where(ids > 0, 200, 60).astype(np.uint8)
            assert cv2.imwrite(str(root / split / "images" / f"{stem}.png"), image)
            assert cv2.imwrite(str(root / split / "masks" / f"{stem}.png"), ids)
    return root


def test_check_reports_particle_sizes_touching_and_the_suggested_settings(tmp_path: Path, capsys) -> None:
    root = _discs_dataset(tmp_path / "ds", radius=40)
    assert main(["data", "check", str(root), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    sizes = data["splits"]["train"]["particle_sizes"]
    assert sizes["particles"] == 4 and sizes["touching_share"] == 1.0
    assert sizes["diameter"]["p50"] == pytest.approx(81, abs=2) and set(sizes["diameter"]) == {"min", "p5", "p50", "p95", "max"}
    assert data["suggested"]["tile"] >= 2 * sizes["width"]["p95"] * data["suggested"]["scale"] - 16
    # tiles of 112 px or more hold 3x the pixels of 64 px ones or more: width 8, not 16
    assert data["suggested"]["tile"] >= 112 and data["suggested"]["width"] == 8
    assert data["warnings"] == []
    # a val split of a few particles: skipnas train would calibrate its counting on train too, and says why
    assert data["suggested"]["calibrate_on"] == "val+train"
    assert f"val holds {data['splits']['val']['particle_sizes']['particles']} particles, fewer than 100" in " ".join(data["suggested"]["notes"])
    # bright discs on a dark background in every training image: one polarity, no inversion
    assert data["splits"]["train"]["particle_polarity"] == {"brighter": 2, "darker": 0, "unclear": 0}
    assert data["suggested"]["invert"] is False


def test_check_warns_when_the_tile_is_smaller_than_two_large_particles(tmp_path: Path, capsys) -> None:
    root = _discs_dataset(tmp_path / "ds", radius=40)
    assert main(["data", "check", str(root), "--tile", "64", "--scale", "1"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "warning: the training tile (64 px) is smaller than twice the large particles' width" in out
    assert "skipnas train would use: --scale 1 --tile 64 --width 16" in out
    assert "touching" in out and "diameter" in out


def test_check_refuses_train_masks_without_particles(tmp_path: Path, capsys) -> None:
    root = _discs_dataset(tmp_path / "ds", radius=10, empty_train=True)
    assert main(["data", "check", str(root)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the train masks: the masks hold no particle" in err[0] and str(root) in err[0]


@pytest.mark.parametrize("flag, value, message", [("--tile", "8", "--tile must be at least 16"), ("--scale", "0", "--scale must be above 0"),
                                                  ("--scale", "big", "--scale must be auto or a number")])
def test_check_refuses_tiles_and_scales_that_cannot_work(tmp_path: Path, capsys, flag: str, value: str, message: str) -> None:
    root = _discs_dataset(tmp_path / "ds", radius=10)
    assert main(["data", "check", str(root), flag, value]) == 2
    assert message in capsys.readouterr().err


def test_check_suggests_settings_without_loading_torch(tmp_path: Path) -> None:
    """Measuring particles and suggesting a scale and tile is pure data work: no deep-learning import."""
    root = _discs_dataset(tmp_path / "ds", radius=40)
    code = (
        "import sys; from skipnas.cli import main; "
        f"code = main(['data', 'check', {str(root)!r}, '--json']); print(code, 'torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "0 False"


def _png_claiming(path: Path, width: int, height: int) -> None:
    """A PNG of 65 bytes whose header claims ``width`` x ``height`` grey pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    chunks = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunks)


def test_check_refuses_oversize_nan_and_noise_files_one_line_each_writing_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(MAX_PIXELS_ENV, raising=False)
    monkeypatch.setenv("SKIPNAS_CACHE_DIR", str(tmp_path / "cache"))
    root = _good(tmp_path / "ds")
    _png_claiming(root / "train" / "images" / "a-1.png", 60_000, 60_000)
    tifffile.imwrite(root / "val" / "images" / "b-1.tif", np.full((32, 32), np.nan, np.float32))
    (root / "val" / "images" / "b-1.png").unlink()
    noise = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert cv2.imwrite(str(root / "train" / "masks" / "a-2.png"), noise)
    assert main(["data", "check", str(root)]) == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert "3 problems" in lines[0] and "Traceback" not in captured.err
    assert "a-1.png: 60000 x 60000 = 3,600 million pixels, more than the limit of 150 million" in lines[1]
    assert f"raise the limit with {MAX_PIXELS_ENV}=3600000000" in lines[1]
    assert "a-2.png: looks like a photo or noise, not a colour mask" in lines[2]
    assert "b-1.tif: 1,024 of 1,024 values are NaN or infinite" in lines[3]
    assert not (tmp_path / "cache").exists()


def test_check_says_how_colour_masks_are_counted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _good(tmp_path / "ds")
    colours = np.zeros((32, 32, 3), np.uint8)
    colours[2:8, 2:8] = (0, 0, 255)
    colours[20:24, 2:30] = (0, 255, 0)
    colours[26:30, 2:6] = (0, 255, 0)  # a second piece of the green particle
    assert cv2.imwrite(str(root / "train" / "masks" / "a-1.png"), colours)
    assert main(["data", "check", str(root), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["splits"]["train"]["mask_kinds"] == {"color": 1, "instance": 1}
    assert data["splits"]["train"]["particles"] == 2 + 1
    assert data["notes"] == [
        "1 colour mask: each distinct colour is one particle (black or transparent is background; "
        "pieces of one colour count once)"
    ]
    assert main(["data", "check", str(root)]) == 0
    assert "1 colour mask: each distinct colour is one particle" in " ".join(capsys.readouterr().out.split())
    assert main(["data", "check", str(_good(tmp_path / "plain")), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["notes"] == []
