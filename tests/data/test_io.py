from __future__ import annotations

import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile

from skipnas.data.io import (
    DEFAULT_MAX_PIXELS,
    IMAGE_SUFFIXES,
    MAX_PIXELS_ENV,
    check_image_size,
    count_instances,
    image_range,
    is_image_file,
    max_image_pixels,
    noise_problem,
    read_image,
    read_mask,
    write_image,
    write_mask,
)
from skipnas.errors import SkipnasError

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def _png(path: Path, array: np.ndarray) -> Path:
    """Write RGB(A) arrays as OpenCV expects (BGR(A)), so reading must convert back."""
    out = array
    if array.ndim == 3 and array.shape[2] == 3:
        out = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    elif array.ndim == 3 and array.shape[2] == 4:
        out = cv2.cvtColor(array, cv2.COLOR_RGBA2BGRA)
    assert cv2.imwrite(str(path), out)
    return path


def _png_claiming(path: Path, width: int, height: int) -> Path:
    """A PNG of 65 bytes whose header claims ``width`` x ``height`` 8-bit grey pixels (and holds none)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    chunks = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"", 9)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunks)
    return path


def _two_blobs(value: int, dtype: type = np.uint8) -> np.ndarray:
    mask = np.zeros((32, 32), dtype)
    mask[2:8, 2:8] = value
    mask[20:28, 20:28] = value
    return mask


# ---------------------------------------------------------------- images


def test_suffixes_are_case_insensitive() -> None:
    assert set(IMAGE_SUFFIXES) == {".tif", ".tiff", ".png", ".jpg", ".jpeg"}
    assert is_image_file("a.TIF") and is_image_file("b.JpEg") and not is_image_file("c.bmp")


def test_read_png_grey_8_and_16_bit(tmp_path: Path) -> None:
    grey8 = np.arange(32 * 32, dtype=np.uint16).reshape(32, 32).astype(np.uint8)
    grey16 = (np.arange(32 * 32, dtype=np.uint16) * 60).reshape(32, 32)
    out8 = read_image(_png(tmp_path / "a.png", grey8))
    out16 = read_image(_png(tmp_path / "b.PNG", grey16))
    assert out8.dtype == np.uint8 and np.array_equal(out8, grey8)
    assert out16.dtype == np.uint16 and np.array_equal(out16, grey16)


def test_read_png_rgb_is_rgb_order_and_rgba_drops_alpha(tmp_path: Path) -> None:
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[..., 0] = 200  # red only
    rgba = np.dstack([rgb, np.full((32, 32), 7, np.uint8)])
    assert np.array_equal(read_image(_png(tmp_path / "rgb.png", rgb)), rgb)
    out = read_image(_png(tmp_path / "rgba.png", rgba))
    assert out.shape == (32, 32, 3) and np.array_equal(out, rgb)


def test_read_jpeg_grey(tmp_path: Path) -> None:
    grey = np.full((32, 32), 128, np.uint8)
    assert cv2.imwrite(str(tmp_path / "a.jpg"), grey)
    out = read_image(tmp_path / "a.jpg")
    assert out.shape == (32, 32) and out.dtype == np.uint8
    assert abs(int(out.mean()) - 128) <= 2


def test_read_tiff_grey_rgb_rgba_and_first_page(tmp_path: Path) -> None:
    grey16 = np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) * 50
    rgb = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    rgba = np.dstack([rgb, np.full((32, 32), 255, np.uint8)])
    tifffile.imwrite(tmp_path / "g.tif", grey16)
    tifffile.imwrite(tmp_path / "rgb.tiff", rgb, photometric="rgb")
    tifffile.imwrite(tmp_path / "rgba.tif", rgba, photometric="rgb", extrasamples=("unassalpha",))
    with tifffile.TiffWriter(tmp_path / "pages.tif") as tif:
        tif.write(grey16)
        tif.write(np.zeros((32, 32), np.uint16))
    assert np.array_equal(read_image(tmp_path / "g.tif"), grey16)
    assert np.array_equal(read_image(tmp_path / "rgb.tiff"), rgb)
    assert np.array_equal(read_image(tmp_path / "rgba.tif"), rgb)
    assert np.array_equal(read_image(tmp_path / "pages.tif"), grey16)


def test_read_lzw_tiff_written_by_opencv(tmp_path: Path) -> None:
    # OpenCV writes LZW, which tifffile cannot decode without the optional imagecodecs package
    ids = _two_blobs(300, np.uint16)
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[..., 0] = 90
    assert cv2.imwrite(str(tmp_path / "ids.tif"), ids)
    assert cv2.imwrite(str(tmp_path / "rgb.tif"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert np.array_equal(read_image(tmp_path / "ids.tif"), ids)
    assert np.array_equal(read_image(tmp_path / "rgb.tif"), rgb)
    assert read_mask(tmp_path / "ids.tif").count == 1


def test_read_planar_tiff_gives_channels_last(tmp_path: Path) -> None:
    rgb = np.random.default_rng(1).integers(0, 255, (32, 40, 3), dtype=np.uint8)
    tifffile.imwrite(tmp_path / "planar.tif", np.moveaxis(rgb, -1, 0), photometric="rgb", planarconfig="separate")
    assert np.array_equal(read_image(tmp_path / "planar.tif"), rgb)


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("a.bmp", b"BM", "unsupported format"),
        ("missing.png", None, "not found"),
        ("broken.png", b"\x89PNG\r\n\x1a\n garbage", "corrupt"),
        ("empty.jpg", b"", "corrupt"),
        ("broken.tif", b"II*\x00 not really a tiff", "cannot read this TIFF"),
    ],
)
def test_unreadable_files_raise_naming_the_file(
    tmp_path: Path, name: str, content: bytes | None, expected: str
) -> None:
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(SkipnasError, match=expected) as info:
        read_image(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


# ---------------------------------------------------------------- size limit and non-finite pixels


@pytest.fixture
def default_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MAX_PIXELS_ENV, raising=False)


def _no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(cv2, "imdecode", refuse)
    monkeypatch.setattr(tifffile.TiffPage, "asarray", refuse)


def test_png_claiming_60000_squared_is_refused_from_its_header(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, default_limit: None
) -> None:
    path = _png_claiming(tmp_path / "huge.png", 60_000, 60_000)
    assert path.stat().st_size < 100
    _no_decoding(monkeypatch)
    for read in (read_image, read_mask, check_image_size):
        with pytest.raises(SkipnasError) as info:
            read(path)
        message = str(info.value)
        assert str(path) in message and "60000 x 60000 = 3,600 million pixels" in message
        assert "limit of 150 million" in message and f"{MAX_PIXELS_ENV}=3600000000" in message
        assert "\n" not in message


@pytest.mark.parametrize("suffix", [".tif", ".png", ".jpg"])
def test_the_limit_is_checked_before_decoding_in_every_format(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str
) -> None:
    path = tmp_path / f"a{suffix}"
    image = np.full((30, 50, 3), 90, np.uint8)
    if suffix == ".tif":
        tifffile.imwrite(path, image, compression="zlib")
    else:
        assert cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1] if suffix == ".jpg" else [])
    assert read_image(path, max_pixels=1500).shape == (30, 50, 3)  # exactly at the limit: read
    _no_decoding(monkeypatch)
    with pytest.raises(SkipnasError, match=r"50 x 30 = 1,500 pixels, more than the limit of 1,499;"):
        read_image(path, max_pixels=1499)
    check_image_size(path, max_pixels=1500)
    with pytest.raises(SkipnasError, match="50 x 30 = 1,500 pixels"):
        check_image_size(path, max_pixels=1499)


def test_the_limit_comes_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a.png"
    assert cv2.imwrite(str(path), np.zeros((32, 32), np.uint8))
    monkeypatch.delenv(MAX_PIXELS_ENV, raising=False)
    assert max_image_pixels() == DEFAULT_MAX_PIXELS == 150_000_000
    monkeypatch.setenv(MAX_PIXELS_ENV, "1000")
    with pytest.raises(SkipnasError, match=rf"limit of 1,000;.*{MAX_PIXELS_ENV}=1024"):
        read_image(path)
    assert read_image(path, max_pixels=1024).shape == (32, 32)  # the argument wins over the variable
    monkeypatch.setenv(MAX_PIXELS_ENV, "1024")
    assert read_image(path).shape == (32, 32)


@pytest.mark.parametrize("value", ["abc", "0", "-5", "1.5e8"])
def test_a_bad_limit_in_the_environment_is_named(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(MAX_PIXELS_ENV, value)
    with pytest.raises(SkipnasError, match=rf"{MAX_PIXELS_ENV}='{value}' is not a positive whole number"):
        max_image_pixels()


def test_opencv_refusing_a_raised_limit_is_one_line(tmp_path: Path) -> None:
    # above OpenCV's own 2^30 pixels it asserts (cv2.error) instead of returning None
    path = _png_claiming(tmp_path / "huge.png", 60_000, 60_000)
    with pytest.raises(SkipnasError, match="OPENCV_IO_MAX_IMAGE_PIXELS") as info:
        read_image(path, max_pixels=10**10)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_float_images_are_refused_naming_the_file(tmp_path: Path, bad: float) -> None:
    image = np.full((16, 16), 0.5, np.float32)
    image[3, 4:7] = bad
    tifffile.imwrite(tmp_path / "f.tif", image)
    for read in (read_image, read_mask):
        with pytest.raises(SkipnasError, match="3 of 256 values are NaN or infinite") as info:
            read(tmp_path / "f.tif")
        assert str(tmp_path / "f.tif") in str(info.value)
    image[3, 4:7] = 0.25
    tifffile.imwrite(tmp_path / "f.tif", image)
    assert np.array_equal(read_image(tmp_path / "f.tif"), image)


# ---------------------------------------------------------------- masks


@pytest.mark.parametrize("value", [1, 255, 7])
def test_binary_masks_become_connected_components(tmp_path: Path, value: int) -> None:
    mask = read_mask(_png(tmp_path / "m.png", _two_blobs(value)))
    assert mask.kind == "binary"
    assert mask.instances.dtype == np.int32
    assert count_instances(mask.instances) == 2
    assert mask.instances[4, 4] != mask.instances[24, 24]
    assert mask.classes is None


def test_binary_components_are_8_connected(tmp_path: Path) -> None:
    diagonal = np.zeros((32, 32), np.uint8)
    diagonal[5, 5] = diagonal[6, 6] = diagonal[7, 7] = 255
    assert read_mask(_png(tmp_path / "d.png", diagonal)).count == 1


def test_16_bit_instance_map_keeps_ids_and_never_splits_pieces(tmp_path: Path) -> None:
    ids = np.zeros((32, 32), np.uint16)
    ids[2:6, 2:6] = 500  # one fibre in two disconnected pieces
    ids[20:24, 20:24] = 500
    ids[10:14, 2:30] = 9
    mask = read_mask(_png(tmp_path / "ids.png", ids))
    assert mask.kind == "instance"
    assert count_instances(mask.instances) == 2
    assert sorted(np.unique(mask.instances).tolist()) == [0, 1, 2]  # relabelled 1..N
    assert mask.instances[3, 3] == mask.instances[21, 21] == 2  # order of the old IDs kept
    assert mask.instances[11, 5] == 1


def test_16_bit_map_with_one_id_in_pieces_counts_one(tmp_path: Path) -> None:
    mask = read_mask(_png(tmp_path / "one.png", _two_blobs(3, np.uint16)))
    assert mask.kind == "instance" and mask.count == 1


def test_16_bit_full_scale_is_binary(tmp_path: Path) -> None:
    mask = read_mask(_png(tmp_path / "full.png", _two_blobs(65535, np.uint16)))
    assert mask.kind == "binary" and mask.count == 2


def test_8_bit_map_with_several_values_is_an_instance_map(tmp_path: Path) -> None:
    ids = _two_blobs(4)
    ids[20:28, 20:28] = 9
    ids[0, 31] = 4  # an ID's second piece
    tifffile.imwrite(tmp_path / "ids.tif", ids)
    mask = read_mask(tmp_path / "ids.tif")
    assert mask.kind == "instance" and mask.count == 2


def test_colour_mask_one_instance_per_colour_by_default(tmp_path: Path) -> None:
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[2:6, 2:6] = RED
    rgb[20:24, 20:24] = RED  # the same fibre seen in two pieces
    rgb[10:14, 2:30] = BLUE
    path = _png(tmp_path / "c.png", rgb)
    mask = read_mask(path)
    assert mask.kind == "color" and mask.count == 2
    assert mask.instances[3, 3] == mask.instances[21, 21] != mask.instances[11, 5]
    split = read_mask(path, color_instances="components")
    assert split.kind == "color" and split.count == 3
    assert split.instances[3, 3] != split.instances[21, 21]


def test_colour_mask_alpha_zero_is_background(tmp_path: Path) -> None:
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., :3] = 255  # white but fully transparent: background
    rgba[2:6, 2:6] = (*GREEN, 255)
    rgba[20:24, 20:24] = (*BLUE, 255)
    mask = read_mask(_png(tmp_path / "a.png", rgba))
    assert mask.kind == "color" and mask.count == 2
    assert mask.instances[0, 0] == 0 and mask.instances[30, 0] == 0


def test_grey_mask_saved_as_rgb_follows_grey_rules(tmp_path: Path) -> None:
    grey = _two_blobs(255)
    mask = read_mask(_png(tmp_path / "g.png", np.dstack([grey, grey, grey])))
    assert mask.kind == "binary" and mask.count == 2


def test_colour_class_map_gives_classes_per_component(tmp_path: Path) -> None:
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[2:6, 2:6] = RED
    rgb[20:24, 20:24] = RED
    rgb[10:14, 2:30] = GREEN
    mask = read_mask(_png(tmp_path / "c.png", rgb), {RED: "fibre", GREEN: "fragment"})
    assert mask.kind == "color" and mask.count == 3
    assert mask.classes is not None
    assert sorted(mask.classes.values()) == ["fibre", "fibre", "fragment"]
    assert mask.classes[int(mask.instances[3, 3])] == "fibre"
    assert mask.classes[int(mask.instances[11, 5])] == "fragment"
    assert set(mask.classes) == set(np.unique(mask.instances[mask.instances > 0]).tolist())


def test_colour_not_in_class_map_is_an_error(tmp_path: Path) -> None:
    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[2:6, 2:6] = RED
    rgb[20:24, 20:24] = (10, 20, 30)
    path = _png(tmp_path / "c.png", rgb)
    with pytest.raises(SkipnasError, match=r"\(10, 20, 30\)") as info:
        read_mask(path, {RED: "fibre"})
    assert str(path) in str(info.value)


def test_class_map_on_grey_mask_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SkipnasError, match="one channel"):
        read_mask(_png(tmp_path / "g.png", _two_blobs(255)), {RED: "fibre"})


def test_fractional_float_mask_is_an_error(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "f.tif", np.full((32, 32), 0.5, np.float32))
    with pytest.raises(SkipnasError, match="fractional"):
        read_mask(tmp_path / "f.tif")


def test_random_colour_mask_is_refused_not_counted_pixel_by_pixel(tmp_path: Path) -> None:
    noise = np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    path = _png(tmp_path / "noise.png", noise)
    expected = r"photo or noise, not a colour mask \(9,\d{3} of its 9,\d{3} labels cover only 1 or 2 pixels"
    with pytest.raises(SkipnasError, match=expected) as info:
        read_mask(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_grey_photo_saved_as_mask_is_refused(tmp_path: Path) -> None:
    # 8-bit noise: 255 IDs of about 16 px each, so not specks, but neighbours almost never agree
    photo = np.random.default_rng(1).integers(1, 256, (64, 64), dtype=np.uint8)
    with pytest.raises(SkipnasError, match="not a label mask .*neighbouring labelled pixels carry different labels"):
        read_mask(_png(tmp_path / "photo.png", photo))


def test_many_small_colour_particles_and_packed_particles_are_not_noise(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    spots = np.zeros((120, 120, 3), np.uint8)
    for i in range(150):  # 150 particles of 3x3 px, each its own colour, in touching pairs
        y, x = 8 * (i // 15), 8 * (i % 15)
        spots[y : y + 3, x : x + 3] = rng.integers(1, 256, 3)
        spots[y : y + 3, x + 3 : x + 6] = rng.integers(1, 256, 3)
    assert read_mask(_png(tmp_path / "spots.png", spots)).count >= 290
    packed = np.arange(1, 33 * 33 + 1, dtype=np.int32).reshape(33, 33)
    packed = np.kron(packed, np.ones((3, 3), np.int32))  # 1,089 3x3 particles with no gap
    assert noise_problem(packed) is None
    assert noise_problem(np.zeros((8, 8), np.int32)) is None
    assert noise_problem(packed[::3, ::3]) is not None  # the same labels as single pixels


def test_count_instances_counts_ids_not_blobs() -> None:
    instances = np.zeros((16, 16), np.int32)
    instances[0, 0] = instances[15, 15] = 4
    instances[8, 8] = 2
    assert count_instances(instances) == 2
    assert count_instances(np.zeros((4, 4), np.int32)) == 0


def test_image_range() -> None:
    assert image_range(np.uint8) == 255.0
    assert image_range(np.uint16) == 65535.0
    assert image_range(np.float32) == 1.0
    with pytest.raises(SkipnasError, match="8- or 16-bit"):
        image_range(np.int32)


# ---------------------------------------------------------------- writing


@pytest.mark.parametrize("suffix", [".tif", ".png"])
def test_write_image_and_mask_round_trip(tmp_path: Path, suffix: str) -> None:
    rgb = np.random.default_rng(2).integers(0, 255, (32, 48, 3), dtype=np.uint8)
    grey16 = np.random.default_rng(3).integers(0, 65535, (32, 48), dtype=np.uint16)
    ids = np.zeros((32, 48), np.int32)
    ids[1:5, 1:5] = 1
    ids[20:30, 30:40] = 300
    write_image(tmp_path / f"rgb{suffix}", rgb)
    write_image(tmp_path / f"g{suffix}", grey16)
    write_mask(tmp_path / "masks" / f"m{suffix}", ids)
    assert np.array_equal(read_image(tmp_path / f"rgb{suffix}"), rgb)
    assert np.array_equal(read_image(tmp_path / f"g{suffix}"), grey16)
    raw = read_image(tmp_path / "masks" / f"m{suffix}")
    assert raw.dtype == np.uint16 and np.array_equal(raw, ids)
    assert read_mask(tmp_path / "masks" / f"m{suffix}").count == 2
    assert sorted(p.name for p in tmp_path.rglob(".*")) == []  # no temp files left behind


def test_write_rejects_unwritable_suffix_and_large_ids(tmp_path: Path) -> None:
    with pytest.raises(SkipnasError, match=r"\.tif, \.tiff or \.png"):
        write_image(tmp_path / "a.jpg", np.zeros((4, 4), np.uint8))
    with pytest.raises(SkipnasError, match="0..65535"):
        write_mask(tmp_path / "m.tif", np.full((4, 4), 70000, np.int32))
    assert not (tmp_path / "m.tif").exists()
