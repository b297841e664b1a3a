"""Dataset validation: every problem in a folder reported as one line naming the file (data/validate.py)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from skipnas.data.io import MAX_PIXELS_ENV
from skipnas.data.loading import load_labeled
from skipnas.data.scan import DatasetIndex, scan_dataset
from skipnas.data.validate import check_dataset, validate_dataset
from skipnas.errors import SkipnasError
from tests.data.conftest import _image, _mask, _presplit


def test_valid_dataset_has_no_problems(tmp_path: Path) -> None:
    report = validate_dataset(_presplit(tmp_path))
    assert report.ok and report.errors == [] and report.warnings == []
    assert isinstance(check_dataset(tmp_path), DatasetIndex)


def test_image_without_mask_is_an_error_outside_test(tmp_path: Path) -> None:
    root = _presplit(tmp_path)
    _image(root / "train" / "images" / "lonely.png")
    _image(root / "test" / "images" / "unlabelled.png")
    report = validate_dataset(root)
    assert len(report.errors) == 1 and "lonely.png" in report.errors[0] and "without a mask" in report.errors[0]
    assert any("unlabelled.png" in line and "unlabelled" in line for line in report.warnings)


def test_test_split_without_masks_folder_is_a_warning(tmp_path: Path) -> None:
    root = _presplit(tmp_path)
    _image(root / "test" / "images" / "u.png")
    for path in (root / "test" / "masks").iterdir():
        path.unlink()
    (root / "test" / "masks").rmdir()
    report = validate_dataset(root)
    assert report.ok
    assert any("no masks/ folder" in line for line in report.warnings)


def test_mask_without_image(tmp_path: Path) -> None:
    root = _presplit(tmp_path)
    _mask(root / "val" / "masks" / "orphan.png")
    (error,) = validate_dataset(root).errors
    assert "orphan.png" in error and "mask without an image" in error


def test_size_mismatch_names_both_sizes(tmp_path: Path) -> None:
    root = _presplit(tmp_path)
    _image(root / "val" / "images" / "big.png", size=(48, 40))
    _mask(root / "val" / "masks" / "big.png", size=(32, 32))
    (error,) = validate_dataset(root).errors
    assert "big.png" in error and "32x32" in error and "48x40" in error


def test_corrupt_files_are_reported(tmp_path: Path) -> None:
    root = _presplit(tmp_path)
    (root / "train" / "images" / "bad.png").write_bytes(b"not a png")
    (root / "train" / "masks" / "bad.png").write_bytes(b"")
    errors = validate_dataset(root).errors
    assert len(errors) == 2
    assert all("bad.png" in line and "corrupt" in line for line in errors)


def test_empty_images_folder(tmp_path: Path) -> None:
    root = _presplit(tmp_path)
    (root / "val" / "images" / "b-1.png").unlink()
    (root / "val" / "masks" / "b-1.png").unlink()
    (error,) = validate_dataset(root).errors
    assert str(root / "val" / "images") in error and "no images" in error


def test_missing_images_folder(tmp_path: Path) -> None:
    (tmp_path / "masks").mkdir()
    (error,) = validate_dataset(tmp_path).errors
    assert str(tmp_path) in error and "no images/ folder" in error
    split_root = _presplit(tmp_path / "split")
    (split_root / "extra").mkdir()
    (split_root / "val" / "images" / "b-1.png").unlink()
    (split_root / "val" / "images").rmdir()
    errors = validate_dataset(split_root).errors
    assert any(str(split_root / "val") in line and "no images/ folder" in line for line in errors)


def test_unsupported_format(tmp_path: Path) -> None:
    root = _presplit(tmp_path)
    (root / "train" / "images" / "scan.bmp").write_bytes(b"BM")
    (root / "train" / "images" / ".DS_Store").write_bytes(b"ignored")  # hidden files are skipped
    (error,) = validate_dataset(root).errors
    assert "scan.bmp" in error and "unsupported format" in error


def test_empty_mask_is_a_warning(tmp_path: Path) -> None:
    root = _presplit(tmp_path)
    _image(root / "train" / "images" / "blank.png")
    _mask(root / "train" / "masks" / "blank.png", particles=0)
    report = validate_dataset(root)
    assert report.ok
    assert any("blank.png" in line and "no particles" in line for line in report.warnings)


def test_duplicate_stems_and_mixed_channels(tmp_path: Path) -> None:
    root = _presplit(tmp_path)
    _image(root / "train" / "images" / "a-1.jpg")
    _image(root / "val" / "images" / "rgb.png", channels=3)
    _mask(root / "val" / "masks" / "rgb.png")
    errors = validate_dataset(root).errors
    assert len(errors) == 2
    assert any("a-1.jpg" in line and "same stem" in line for line in errors)
    assert any("rgb.png" in line and "channel" in line for line in errors)


def test_every_problem_is_collected_and_check_raises(tmp_path: Path) -> None:
    root = _presplit(tmp_path)
    _image(root / "train" / "images" / "lonely.png")
    _mask(root / "val" / "masks" / "orphan.png")
    (root / "test" / "masks" / "notes.txt").write_text("x")
    report = validate_dataset(root)
    assert len(report.errors) == 3
    with pytest.raises(SkipnasError) as info:
        check_dataset(root)
    lines = str(info.value).splitlines()
    assert "3 problems" in lines[0]
    assert lines[1:] == report.errors


def test_missing_root_is_reported(tmp_path: Path) -> None:
    (error,) = validate_dataset(tmp_path / "nope").errors
    assert "nope" in error and "not found" in error


def test_validation_reports_progress(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    validate_dataset(_presplit(tmp_path), progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]


def _png_claiming(path: Path, width: int, height: int) -> Path:
    """A PNG of 65 bytes whose header claims ``width`` x ``height`` grey pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    chunks = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunks)
    return path


def _float_pair(folder: Path, stem: str, nan: bool = False) -> None:
    image = np.random.default_rng(len(stem)).random((32, 32)).astype(np.float32)
    if nan:
        image[:] = np.nan
    (folder / "images").mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(folder / "images" / f"{stem}.tif", image)
    _mask(folder / "masks" / f"{stem}.png", particles=2)


def test_oversize_image_nan_image_and_noise_mask_are_one_error_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(MAX_PIXELS_ENV, raising=False)
    root = _presplit(tmp_path)
    _png_claiming(root / "train" / "images" / "huge.png", 60_000, 60_000)
    _mask(root / "train" / "masks" / "huge.png")
    _image(root / "val" / "images" / "noise.png")
    noise = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    assert cv2.imwrite(str(root / "val" / "masks" / "noise.png"), noise)
    errors = validate_dataset(root).errors
    assert len(errors) == 2
    assert str(root / "train" / "images" / "huge.png") in errors[0] and MAX_PIXELS_ENV in errors[0]
    assert str(root / "val" / "masks" / "noise.png") in errors[1] and "photo or noise" in errors[1]
    with pytest.raises(SkipnasError, match="2 problems"):
        check_dataset(root)


def test_a_nan_image_in_a_float_dataset_is_named_by_check_and_by_loading(tmp_path: Path) -> None:
    for index in range(3):
        _float_pair(tmp_path, f"m{index}-0", nan=index == 1)
    (error,) = validate_dataset(tmp_path).errors
    assert str(tmp_path / "images" / "m1-0.tif") in error and "1,024 of 1,024 values are NaN" in error
    samples = scan_dataset(tmp_path).samples()
    with pytest.raises(SkipnasError, match="m1-0.tif: 1,024 of 1,024 values are NaN"):
        load_labeled(samples)  # what train and evaluate read with, the check skipped
    assert len(load_labeled([s for s in samples if s.stem != "m1-0"])) == 2


def test_a_bad_pixel_limit_is_one_error_not_one_per_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    with pytest.raises(SkipnasError, match=f"{MAX_PIXELS_ENV}='lots'"):
        validate_dataset(_presplit(tmp_path))


def test_the_pixel_limit_applies_to_checking(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _presplit(tmp_path)
    monkeypatch.setenv(MAX_PIXELS_ENV, "1023")  # the 32x32 images and masks are 1,024 pixels
    assert len(validate_dataset(root).errors) == 8
    monkeypatch.setenv(MAX_PIXELS_ENV, "1024")
    assert validate_dataset(root).ok


def test_labels_each_in_many_blobs_are_a_warning(tmp_path: Path) -> None:
    root = _presplit(tmp_path)
    one_id = np.zeros((32, 32), np.uint16)
    one_colour = np.zeros((32, 32, 3), np.uint8)
    for i in range(12):  # 12 separate blobs of one ID, or of one colour
        y, x = 2 + 8 * (i // 4), 2 + 8 * (i % 4)
        one_id[y : y + 3, x : x + 3] = 1
        one_colour[y : y + 3, x : x + 3] = (0, 0, 255)
    _image(root / "train" / "images" / "ids.png")
    assert cv2.imwrite(str(root / "train" / "masks" / "ids.png"), one_id)
    _image(root / "train" / "images" / "red.png")
    assert cv2.imwrite(str(root / "train" / "masks" / "red.png"), one_colour)
    report = validate_dataset(root)
    assert report.ok and len(report.warnings) == 2
    assert "ids.png: its 1 ID(s) lie in 12 separate blobs and each ID counts as ONE particle" in report.warnings[0]
    assert "red.png: its 1 colour(s) lie in 12 separate blobs" in report.warnings[1]
    assert "binary mask" in report.warnings[1]


def test_mixed_bit_depths_are_one_problem_naming_both_files(tmp_path) -> None:
    import numpy as np

    from skipnas.data.io import write_image, write_mask
    from skipnas.data.validate import validate_dataset

    mask = np.zeros((16, 16), np.int32)
    mask[4:8, 4:8] = 1
    write_image(tmp_path / "images" / "a-1.tif", np.zeros((16, 16), np.uint8))
    write_image(tmp_path / "images" / "b-1.tif", np.zeros((16, 16), np.uint16))
    for stem in ("a-1", "b-1"):
        write_mask(tmp_path / "masks" / f"{stem}.tif", mask)
    errors = validate_dataset(tmp_path).errors
    assert len(errors) == 1 and "different bit depths" in errors[0]
    assert "a-1.tif is uint8" in errors[0] and "b-1.tif is uint16" in errors[0]
