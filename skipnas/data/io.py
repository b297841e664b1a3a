"""Reading and writing images and masks (TIFF via tifffile, PNG/JPEG via OpenCV). No torch.

Masks come in three kinds, detected per file by :func:`read_mask`:

``binary``
    one channel holding one non-zero value (0/1, 0/255, ...). Instances are the 8-connected
    components, because a binary mask cannot say where two touching particles meet.
``instance``
    one channel holding several IDs (typically 16-bit). The IDs are kept (relabelled 1..N) and
    never split into components: where fibres cross, one fibre can be several disconnected pieces.
``color``
    several channels, drawn in an image editor. Black (or, with an alpha channel, transparent)
    is background. By default each distinct colour is one instance, as when every particle is
    painted in its own colour; ``color_instances="components"`` splits by connected components
    instead. With ``color_classes`` (colour -> class name) pixels of a mapped colour get that
    class and the instances are the connected components of each class.

A multi-label mask (``instance`` or ``color``) that looks like a photo or noise, not labels, is
refused (see :func:`noise_problem`): a random-colour image would otherwise count every pixel.

Every reader checks the image's size from its header before decoding (see
:func:`max_image_pixels`) and refuses float images holding NaN or infinity.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import tifffile

from skipnas.errors import SkipnasError
from skipnas.fileio import atomic_path

IMAGE_SUFFIXES: tuple[str, ...] = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
TIFF_SUFFIXES: tuple[str, ...] = (".tif", ".tiff")
MASK_KINDS: tuple[str, ...] = ("binary", "instance", "color")

MAX_PIXELS_ENV = "SKIPNAS_MAX_IMAGE_PIXELS"
# 150 million pixels (e.g. 12,000 x 12,500, a large stitched mosaic): measured, `count` peaks at about
# 100 bytes a pixel (8-bit grey or RGB, CPU) and `data check` at 36 (grey) to 60 (RGB), so the
# largest allowed image stays near 15 GB, safe on a 24 GiB machine. Raise it with the variable.
DEFAULT_MAX_PIXELS = 150_000_000

Color = tuple[int, int, int]
ColorInstances = Literal["color", "components"]


@dataclass
class Mask:
    """An instance mask: ``instances`` is int32 HxW, 0 background, 1..N one particle each."""

    instances: np.ndarray
    kind: str
    classes: dict[int, str] | None = None

    @property
    def count(self) -> int:
        return count_instances(self.instances)


def is_image_file(path: str | os.PathLike[str]) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def _check_readable(path: Path) -> None:
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise SkipnasError(
            f"{path}: unsupported format {path.suffix or '(no suffix)'!r}; "
            f"convert it to one of {', '.join(IMAGE_SUFFIXES)}"
        )
    if not path.exists():
        raise SkipnasError(f"{path}: file not found; check the path")
    if not path.is_file():
        raise SkipnasError(f"{path}: is a folder, not an image file; give an image file")


def max_image_pixels() -> int:
    """The most pixels (height x width) an image may have: ``$SKIPNAS_MAX_IMAGE_PIXELS``, else 150 million."""
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise SkipnasError(
            f"{MAX_PIXELS_ENV}={raw!r} is not a positive whole number of pixels; set it to e.g. 400000000 or unset it"
        )
    return value


def _amount(pixels: int) -> str:
    return f"{pixels / 1e6:,.0f} million" if pixels >= 10_000_000 else f"{pixels:,}"


def _check_pixels(path: Path, height: int, width: int, max_pixels: int | None) -> None:
    limit = max_image_pixels() if max_pixels is None else max_pixels
    pixels = height * width
    if pixels > limit:
        raise SkipnasError(
            f"{path}: {width} x {height} = {_amount(pixels)} pixels, more than the limit of {_amount(limit)}; "
            "cut it into smaller images, or, with the memory for it (count needs about 100 bytes a pixel), "
            f"raise the limit with {MAX_PIXELS_ENV}={pixels}"
        )


def _header_size(data: np.ndarray) -> tuple[int, int] | None:
    """(height, width) from a PNG or JPEG header without decoding; None for other or damaged headers,
    which are left to the decoder (OpenCV refuses above its own 2^30-pixel limit)."""
    head = data[:8].tobytes()
    if head == b"\x89PNG\r\n\x1a\n" and data.size >= 24 and data[12:16].tobytes() == b"IHDR":
        width, height = struct.unpack(">II", data[16:24].tobytes())
        return height, width
    if head[:2] != b"\xff\xd8":
        return None
    # JPEG: walk the marker segments up to the frame header (SOF0..SOF15 less DHT, JPG, DAC)
    position = 2
    while position + 4 <= data.size:
        if data[position] != 0xFF:
            return None
        marker = int(data[position + 1])
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # segments without a length
            position += 2
            continue
        length = int(data[position + 2]) << 8 | int(data[position + 3])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if position + 9 > data.size:
                return None
            height, width = struct.unpack(">HH", data[position + 5 : position + 9].tobytes())
            return (height, width) if height else None  # height 0: given later (DNL), left to the decoder
        if marker == 0xDA or length < 2:  # image data began without a frame header: damaged
            return None
        position += 2 + length
    return None


def _tiff_size(page: tifffile.TiffPage) -> tuple[int, int]:
    """(height, width) of a TIFF page from its tags; a volume's planes count as more rows."""
    return int(page.imagelength) * max(int(page.imagedepth), 1), int(page.imagewidth)


def check_image_size(path: str | os.PathLike[str], *, max_pixels: int | None = None) -> None:
    """Refuse an image over the pixel limit from its header alone, decoding nothing (for callers that
    want every input checked before any work); a header that cannot be read is left to the reader."""
    path = Path(path)
    _check_readable(path)
    if path.suffix.lower() in TIFF_SUFFIXES:
        try:
            with tifffile.TiffFile(path) as tif:
                size = _tiff_size(tif.pages[0]) if tif.pages else None
        except Exception:  # damaged: the reader names the problem
            size = None
    else:
        try:
            size = _header_size(np.fromfile(path, dtype=np.uint8))
        except OSError:
            size = None
    if size is not None:
        _check_pixels(path, *size, max_pixels)


def _read_tiff(path: Path, max_pixels: int | None) -> np.ndarray:
    """tifffile first (16-bit, planar, many pages); OpenCV's libtiff for compressions tifffile
    cannot decode without the optional imagecodecs package (LZW, JPEG, ...)."""
    try:
        with tifffile.TiffFile(path) as tif:
            if not tif.pages:
                raise ValueError("no pages")
            page = tif.pages[0]
            _check_pixels(path, *_tiff_size(page), max_pixels)  # from the tags, before any pixel is decoded
            array = page.asarray()
            axes = getattr(page, "axes", "")
    except SkipnasError:
        raise
    except Exception as exc:  # tifffile raises many types on damaged files
        try:
            return _read_with_cv2(path, max_pixels)
        except SkipnasError:
            pass
        raise SkipnasError(f"{path}: cannot read this TIFF ({exc}); re-export the file as TIFF or PNG") from exc
    # planar TIFFs store channels first ("SYX"); everything downstream wants HxWxC
    if array.ndim == 3 and axes.startswith("S"):
        array = np.moveaxis(array, 0, -1)
    return array


def _read_with_cv2(path: Path, max_pixels: int | None) -> np.ndarray:
    try:
        # np.fromfile + imdecode also handles non-ASCII paths, where cv2.imread fails silently
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise SkipnasError(f"{path}: cannot read the file ({exc.strerror}); check its permissions") from exc
    size = _header_size(data)
    if size is not None:
        _check_pixels(path, *size, max_pixels)
    try:
        array = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    except cv2.error as exc:  # OpenCV asserts on sizes above its own limit instead of returning None
        raise SkipnasError(
            f"{path}: OpenCV refused to decode it ({str(exc).strip().splitlines()[-1]}); for images over "
            "2^30 pixels also set OPENCV_IO_MAX_IMAGE_PIXELS before starting skipnas, or save it as TIFF"
        ) from None
    if array is None:
        raise SkipnasError(
            f"{path}: not a readable {path.suffix.lstrip('.').upper()} image (empty or corrupt); re-export or remove it"
        )
    if array.ndim == 3 and array.shape[2] == 3:
        array = cv2.cvtColor(array, cv2.COLOR_BGR2RGB)
    elif array.ndim == 3 and array.shape[2] == 4:
        array = cv2.cvtColor(array, cv2.COLOR_BGRA2RGBA)
    return array


def _check_finite(path: Path, array: np.ndarray) -> None:
    # refused rather than replaced: NaN usually marks missing data (a stitching gap, a flat-field
    # division by zero), and any value put in its place would bias the statistics and the counts
    if np.issubdtype(array.dtype, np.floating):
        finite = np.isfinite(array)
        if not finite.all():
            bad = array.size - int(np.count_nonzero(finite))
            raise SkipnasError(
                f"{path}: {bad:,} of {array.size:,} values are NaN or infinite; replace them (with 0 or the "
                "background level) or re-export the image without them"
            )


def read_raw(path: str | os.PathLike[str], *, max_pixels: int | None = None) -> np.ndarray:
    """The file's pixels as stored: HxW or HxWxC (RGB/RGBA order), alpha kept, the file's dtype.

    Refuses, from the header and before decoding, images of more than ``max_pixels`` pixels (None:
    :func:`max_image_pixels`), and float images holding NaN or infinity.
    """
    path = Path(path)
    _check_readable(path)
    if path.suffix.lower() in TIFF_SUFFIXES:
        array = _read_tiff(path, max_pixels)
    else:
        array = _read_with_cv2(path, max_pixels)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or array.size == 0:
        raise SkipnasError(
            f"{path}: has shape {array.shape}, not a 2-D image (HxW or HxWxC); save a single 2-D image or plane"
        )
    _check_finite(path, array)
    return array


def read_image(path: str | os.PathLike[str], *, max_pixels: int | None = None) -> np.ndarray:
    """An image as HxW (grey) or HxWxC (RGB), in the file's dtype; alpha is dropped, multi-page TIFFs give page 1."""
    array = read_raw(path, max_pixels=max_pixels)
    if array.ndim == 3 and array.shape[2] in (2, 4):  # grey+alpha or RGBA
        array = array[:, :, :-1]
        if array.shape[2] == 1:
            array = array[:, :, 0]
    return np.ascontiguousarray(array)


def image_range(dtype: np.dtype | type) -> float:
    """The value of full white for an image dtype: 255 for 8-bit, 65535 for 16-bit, 1.0 for float."""
    dtype = np.dtype(dtype)
    if dtype == np.uint8:
        return 255.0
    if dtype == np.uint16:
        return 65535.0
    if np.issubdtype(dtype, np.floating):
        return 1.0  # float images are taken to be scaled to [0, 1] already
    raise SkipnasError(f"images of type {dtype} are not supported; convert them to 8- or 16-bit")


_LOOKUP_LIMIT = 1 << 22  # IDs below this are counted with bincount / relabelled with a lookup table


def _small_ids(array: np.ndarray) -> bool:
    return (
        np.issubdtype(array.dtype, np.integer)
        and array.size > 0
        and int(array.min()) >= 0
        and int(array.max()) < _LOOKUP_LIMIT
    )


def distinct_values(array: np.ndarray) -> np.ndarray:
    """Sorted distinct values; bincount for small non-negative integers (many times faster than np.unique)."""
    if _small_ids(array):
        return np.flatnonzero(np.bincount(array.ravel()))
    return np.unique(array)


def count_instances(instances: np.ndarray) -> int:
    """The number of distinct non-zero IDs: a fibre in several pieces counts once."""
    return int(np.count_nonzero(distinct_values(instances)))


def relabel_consecutive(ids: np.ndarray) -> np.ndarray:
    """IDs relabelled 1..N in increasing order of the old ID, 0 staying background."""
    if _small_ids(ids):
        values = distinct_values(ids)
        lookup = np.zeros(int(values[-1]) + 1, np.int32)
        lookup[values] = np.arange(len(values), dtype=np.int32) + (0 if values[0] == 0 else 1)
        return lookup[ids]
    unique, inverse = np.unique(ids, return_inverse=True)
    inverse = inverse.reshape(ids.shape).astype(np.int32)
    if unique[0] != 0:
        inverse += 1
    return inverse


def _components(foreground: np.ndarray) -> np.ndarray:
    _, labels = cv2.connectedComponents(foreground.astype(np.uint8), connectivity=8, ltype=cv2.CV_32S)
    return labels.astype(np.int32, copy=False)


def _as_integer_labels(path: Path, array: np.ndarray) -> np.ndarray:
    if array.dtype == np.bool_:
        return array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
            raise SkipnasError(
                f"{path}: mask holds fractional values; save it as an integer (8- or 16-bit) label or binary mask"
            )
        array = array.astype(np.int64)
    if np.any(array < 0):
        raise SkipnasError(f"{path}: mask holds negative values; use 0 for background and 1..N for particles")
    return array


def _grey_kind(array: np.ndarray) -> str:
    """``binary`` or ``instance`` for a single-channel mask."""
    values = distinct_values(array)
    nonzero = values[values != 0]
    if len(nonzero) > 1:
        return "instance"
    if len(nonzero) == 0 or array.dtype.itemsize == 1:
        return "binary"
    # A wider-than-8-bit mask with one value is an instance map holding one particle (possibly in
    # pieces), unless it uses full scale (0/65535), which only a binary mask does.
    return "binary" if int(nonzero[0]) == np.iinfo(array.dtype).max else "instance"


def _read_grey_mask(path: Path, array: np.ndarray) -> Mask:
    array = _as_integer_labels(path, array)
    kind = _grey_kind(array)
    if kind == "binary":
        return Mask(_components(array != 0), "binary")
    return Mask(relabel_consecutive(array), "instance")


def _color_layers(array: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(colour HxWx3, foreground HxW) of an RGB(A) mask: black or transparent is background."""
    rgb = array[:, :, :3]
    foreground = np.any(rgb != 0, axis=2)
    if array.shape[2] == 4:
        foreground &= array[:, :, 3] != 0
    return rgb, foreground


def _color_key(rgb: np.ndarray) -> np.ndarray:
    """One integer per pixel identifying its colour (works for 8- and 16-bit channels)."""
    channels = rgb.astype(np.int64)
    return (channels[:, :, 0] << 32) | (channels[:, :, 1] << 16) | channels[:, :, 2]


def _read_color_mask(
    path: Path,
    array: np.ndarray,
    color_classes: dict[Color, str] | None,
    color_instances: ColorInstances,
) -> Mask:
    rgb, foreground = _color_layers(array)
    key = np.where(foreground, _color_key(rgb), -1)
    if color_classes is not None:
        return _classes_from_colors(path, rgb, key, color_classes)
    if color_instances == "color":
        return Mask(relabel_consecutive(key + 1), "color")
    instances = np.zeros(key.shape, np.int32)
    next_id = 1
    for color in np.unique(key[foreground]):
        labels = _components(key == color)
        pieces = labels > 0
        instances[pieces] = labels[pieces] + (next_id - 1)
        next_id += int(labels.max())
    return Mask(instances, "color")


def _classes_from_colors(path: Path, rgb: np.ndarray, key: np.ndarray, color_classes: dict[Color, str]) -> Mask:
    class_of_key = {(int(r) << 32) | (int(g) << 16) | int(b): name for (r, g, b), name in color_classes.items()}
    present = np.unique(key[key >= 0])
    unknown = [int(k) for k in present if int(k) not in class_of_key]
    if unknown:
        shown = ", ".join(str(((k >> 32) & 0xFFFF, (k >> 16) & 0xFFFF, k & 0xFFFF)) for k in unknown[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise SkipnasError(
            f"{path}: colour(s) {shown}{more} are not in the colour -> class map; add them to the map "
            "or repaint those pixels (an anti-aliased brush makes in-between colours)"
        )
    instances = np.zeros(key.shape, np.int32)
    classes: dict[int, str] = {}
    next_id = 1
    for name in sorted(set(class_of_key.values())):
        keys = [k for k, n in class_of_key.items() if n == name]
        labels = _components(np.isin(key, keys))
        count = int(labels.max())
        pieces = labels > 0
        instances[pieces] = labels[pieces] + (next_id - 1)
        classes.update({next_id + i: name for i in range(count)})
        next_id += count
    return Mask(instances, "color", classes)


_NOISE_MIN_LABELS = 100  # below this many tiny labels or changing neighbours a mask is too small to judge


def noise_problem(instances: np.ndarray) -> str | None:
    """Why a multi-label map looks like a photo or noise rather than labels, or None when it does not.

    Two signs, neither found in a drawn mask: most labels are specks of 1-2 pixels (a random-colour
    image, an anti-aliased brush, JPEG artefacts around painted particles), or most neighbouring
    labelled pixels carry different labels (labels change only where particles touch in a real mask).
    """
    sizes = np.bincount(instances.ravel())[1:]
    sizes = sizes[sizes > 0]
    tiny = int(np.count_nonzero(sizes <= 2))
    if tiny >= _NOISE_MIN_LABELS and tiny * 2 > len(sizes):
        return f"{tiny:,} of its {len(sizes):,} labels cover only 1 or 2 pixels"
    if len(sizes) < 2:
        return None
    labelled = instances != 0
    changed = pairs = 0
    # right, down, down-right and down-left neighbours: a diagonal 1-px fibre is still one run
    for first, second in (
        (np.s_[:, :-1], np.s_[:, 1:]),
        (np.s_[:-1, :], np.s_[1:, :]),
        (np.s_[:-1, :-1], np.s_[1:, 1:]),
        (np.s_[:-1, 1:], np.s_[1:, :-1]),
    ):
        both = labelled[first] & labelled[second]
        pairs += int(np.count_nonzero(both))
        both &= instances[first] != instances[second]
        changed += int(np.count_nonzero(both))
    if changed >= _NOISE_MIN_LABELS and changed * 2 > pairs:
        return f"{changed / pairs:.0%} of neighbouring labelled pixels carry different labels"
    return None


def _check_not_noise(path: Path, mask: Mask) -> None:
    if mask.kind == "binary":  # connected components: neighbours never differ
        return
    reason = noise_problem(mask.instances)
    if reason is not None:
        raise SkipnasError(
            f"{path}: looks like a photo or noise, not a {'colour' if mask.kind == 'color' else 'label'} mask "
            f"({reason}); save a mask with one ID or flat colour per particle (no anti-aliasing, not as JPEG), "
            "or a binary mask"
        )


def label_blobs(instances: np.ndarray) -> int:
    """The number of separate (8-connected) blobs of labelled pixels, touching particles being one blob."""
    return int(_components(instances != 0).max()) if instances.size else 0


def read_mask(
    path: str | os.PathLike[str],
    color_classes: dict[Color, str] | None = None,
    *,
    color_instances: ColorInstances = "color",
    max_pixels: int | None = None,
) -> Mask:
    """Read a binary, instance-ID or colour mask (see the module docstring for the rules).

    A multi-label mask that looks like a photo or noise (see :func:`noise_problem`) is refused.
    """
    path = Path(path)
    if color_instances not in ("color", "components"):
        raise SkipnasError(f"color_instances must be 'color' or 'components', not {color_instances!r}")
    mask = _read_mask(path, read_raw(path, max_pixels=max_pixels), color_classes, color_instances)
    _check_not_noise(path, mask)
    return mask


def _read_mask(
    path: Path, array: np.ndarray, color_classes: dict[Color, str] | None, color_instances: ColorInstances
) -> Mask:
    if array.ndim == 3 and array.shape[2] == 2:  # grey + alpha: transparent is background
        array = np.where(array[:, :, 1] != 0, array[:, :, 0], 0).astype(array.dtype)
    if array.ndim == 3:
        rgb = array[:, :, :3]
        if color_classes is None and np.all(rgb == rgb[:, :, :1]):
            # a grey mask saved as RGB(A): use the single-channel rules
            grey = rgb[:, :, 0]
            if array.shape[2] == 4:
                grey = np.where(array[:, :, 3] != 0, grey, 0).astype(grey.dtype)
            return _read_grey_mask(path, grey)
        return _read_color_mask(path, array, color_classes, color_instances)
    if color_classes is not None:
        raise SkipnasError(
            f"{path}: a colour -> class map was given but this mask has one channel; "
            "give an RGB mask or drop the colour map"
        )
    return _read_grey_mask(path, array)


def _check_writable_suffix(path: Path) -> None:
    if path.suffix.lower() not in TIFF_SUFFIXES + (".png",):
        raise SkipnasError(f"{path}: can only write .tif, .tiff or .png; change the file name")


def _write(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        if path.suffix.lower() in TIFF_SUFFIXES:
            photometric = "rgb" if array.ndim == 3 and array.shape[2] in (3, 4) else "minisblack"
            extrasamples = ("unassalpha",) if array.ndim == 3 and array.shape[2] == 4 else None
            tifffile.imwrite(tmp, array, photometric=photometric, extrasamples=extrasamples, compression="zlib")
        else:
            out = array
            if array.ndim == 3 and array.shape[2] == 3:
                out = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
            elif array.ndim == 3 and array.shape[2] == 4:
                out = cv2.cvtColor(array, cv2.COLOR_RGBA2BGRA)
            ok, encoded = cv2.imencode(".png", out)
            if not ok:
                raise SkipnasError(f"{path}: OpenCV could not encode this array as PNG; write a .tif instead")
            tmp.write_bytes(encoded.tobytes())


def write_image(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write an HxW or HxWxC (RGB/RGBA) image atomically: TIFF (zlib) by tifffile, PNG by OpenCV."""
    path = Path(path)
    _check_writable_suffix(path)
    array = np.asarray(array)
    if array.ndim not in (2, 3):
        raise ValueError(f"write_image expects HxW or HxWxC, got shape {array.shape}")
    if path.suffix.lower() == ".png" and array.dtype not in (np.uint8, np.uint16):
        raise SkipnasError(f"{path}: PNG holds 8- or 16-bit pixels, not {array.dtype}; write a .tif instead")
    _write(path, array)


def write_mask(path: str | os.PathLike[str], instances: np.ndarray) -> None:
    """Write an instance-ID map (0 background, 1..N) as 16-bit, atomically; TIFF or PNG by suffix."""
    path = Path(path)
    _check_writable_suffix(path)
    instances = np.asarray(instances)
    if instances.ndim != 2:
        raise ValueError(f"write_mask expects an HxW instance map, got shape {instances.shape}")
    if instances.size and (instances.min() < 0 or instances.max() > np.iinfo(np.uint16).max):
        raise SkipnasError(f"{path}: instance IDs must lie in 0..65535; relabel the mask 1..N first")
    _write(path, instances.astype(np.uint16))
