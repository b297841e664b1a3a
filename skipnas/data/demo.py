"""The embedded demo dataset: small procedural microscope-like images of microplastics on a filter.

Each image is a textured filter membrane under uneven illumination with unlabelled clutter that
looks like the targets (sediment grains, organic debris, specks) and labelled particles of four
classes: fibres (thin curved strands, often crossing: the crossing pixels go to the fibre on top),
fragments (irregular polygons), films (large faint translucent shapes) and beads (round, in
clusters of touching beads). Some particles are camouflaged (low contrast) or partly hidden under
clutter. Plain thresholding does poorly on it (see tests/data/test_demo.py), yet it is small
enough for a quick search on a CPU.

Images are 8-bit grey, 96x96, 32 train / 8 val / 8 test, deterministic for a seed, generated on
first use into the cache.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import cv2
import numpy as np

from skipnas.data.io import write_image, write_mask
from skipnas.errors import SkipnasError
from skipnas.fileio import write_json_atomic
from skipnas.paths import cache_dir

DEMO_VERSION = 2  # 2: beads in a cluster touch and never overlap
DEMO_SIZE = 96
DEMO_SPLITS: dict[str, int] = {"train": 32, "val": 8, "test": 8}
DEMO_CLASSES: tuple[str, ...] = ("fibre", "fragment", "film", "bead")
DEMO_MARKER = "demo.json"
# a particle left with fewer visible pixels than this (after occlusion) is not labelled
MIN_VISIBLE_PIXELS = 6
# touching beads are drawn this much closer than their radii sum, so their discs share an edge
TOUCH_OVERLAP_PX = 0.8
# cv2 drawing with sub-pixel coordinates: points are scaled by 2**_SHIFT
_SHIFT = 3

Points = np.ndarray  # float (N, 2) array of x, y


class _Canvas:
    """The image under construction (float, 0..1), its instance map and each instance's class."""

    def __init__(self, background: np.ndarray, shading: np.ndarray) -> None:
        self.size = background.shape[0]
        self.shading = shading  # the background's smooth brightness: object contrast is relative to it
        self.image = background
        self.instances = np.zeros(background.shape, np.int32)
        self.classes: dict[int, str] = {}

    def blend(self, alpha: np.ndarray, value: np.ndarray | float) -> None:
        self.image = self.image * (1.0 - alpha) + value * alpha

    def label(self, mask: np.ndarray, name: str) -> None:
        new_id = len(self.classes) + 1
        self.instances[mask] = new_id
        self.classes[new_id] = name

    def occlude(self, alpha: np.ndarray) -> None:
        """Clutter drawn on top hides the particles under its opaque part."""
        self.instances[alpha > 0.5] = 0


def _fixed(points: Points) -> np.ndarray:
    return np.rint(np.asarray(points) * (1 << _SHIFT)).astype(np.int32).reshape(-1, 1, 2)


def _fixed_point(point: Points) -> tuple[int, int]:
    x, y = _fixed(point)[0, 0]
    return int(x), int(y)


def _polyline_mask(size: int, points: Points, thickness: int) -> np.ndarray:
    canvas = np.zeros((size, size), np.uint8)
    cv2.polylines(canvas, [_fixed(points)], False, 1, thickness=thickness, lineType=cv2.LINE_8, shift=_SHIFT)
    return canvas.astype(bool)


def _polygon_mask(size: int, points: Points) -> np.ndarray:
    canvas = np.zeros((size, size), np.uint8)
    cv2.fillPoly(canvas, [_fixed(points)], 1, lineType=cv2.LINE_8, shift=_SHIFT)
    return canvas.astype(bool)


def _disc_mask(size: int, centre: Points, radius: float) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return (xx - centre[0]) ** 2 + (yy - centre[1]) ** 2 <= radius**2


def _soft(mask: np.ndarray, sigma: float) -> np.ndarray:
    """Opacity with blurred edges (sigma in px); 0 keeps the edge sharp."""
    alpha = mask.astype(np.float32)
    return cv2.GaussianBlur(alpha, (0, 0), sigma) if sigma > 0 else alpha


def _walk(rng: np.random.Generator, start: Points, heading: float, length: float, bend: float) -> Points:
    """A smooth curve: steps of 1.5 px whose heading drifts by a constant bend plus a random wobble."""
    steps = max(int(length / 1.5), 2)
    turns = bend + rng.normal(0.0, 0.05, steps)
    headings = heading + np.cumsum(turns)
    offsets = np.cumsum(np.stack([np.cos(headings), np.sin(headings)], axis=1) * 1.5, axis=0)
    return np.vstack([start, start + offsets])


def _curve_through(rng: np.random.Generator, point: Points, heading: float, length: float) -> Points:
    """A curve passing through ``point`` with ``heading`` there: two walks joined back to back."""
    bend = rng.normal(0.0, 0.03)
    share = rng.uniform(0.3, 0.7)
    forward = _walk(rng, point, heading, length * share, bend)
    backward = _walk(rng, point, heading + np.pi, length * (1 - share), -bend)
    return np.vstack([backward[::-1], forward[1:]])


def _blob_outline(rng: np.random.Generator, centre: Points, radius: float, vertices: int, roughness: float) -> Points:
    angles = np.sort(rng.uniform(0, 2 * np.pi, vertices))
    radii = radius * rng.uniform(1 - roughness, 1 + roughness, vertices)
    return centre + np.stack([np.cos(angles) * radii, np.sin(angles) * radii], axis=1)


def _background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(textured membrane image, its smooth shading) under uneven illumination."""
    yy, xx = (np.mgrid[0:size, 0:size].astype(np.float32) / size) - 0.5
    direction = rng.uniform(0, 2 * np.pi)
    gradient = rng.uniform(0.25, 0.5) * (xx * np.cos(direction) + yy * np.sin(direction))
    vignette = rng.uniform(0.1, 0.35) * (xx**2 + yy**2)
    mottle = cv2.resize(rng.normal(0, 1, (5, 5)).astype(np.float32), (size, size), interpolation=cv2.INTER_CUBIC)
    shading = rng.uniform(0.3, 0.45) * (1 + gradient - vignette + 0.06 * mottle)
    texture = np.zeros((size, size), np.float32)
    for _ in range(size // 2):  # the membrane's fibrous mesh
        start = rng.uniform(-10, size + 10, 2)
        end = start + rng.normal(0, size / 3, 2)
        cv2.line(texture, _fixed_point(start), _fixed_point(end), float(rng.uniform(-0.06, 0.06)), 1,
                 lineType=cv2.LINE_AA, shift=_SHIFT)
    for _ in range(size * size // 60):  # pores
        centre = rng.uniform(0, size, 2)
        cv2.circle(texture, _fixed_point(centre), int(rng.uniform(0.6, 1.6) * (1 << _SHIFT)),
                   float(-rng.uniform(0.08, 0.18)), -1, lineType=cv2.LINE_AA, shift=_SHIFT)
    texture = cv2.GaussianBlur(texture, (0, 0), 0.7)
    return shading * (1 + texture), shading


def _draw_film(rng: np.random.Generator, canvas: _Canvas) -> None:
    size = canvas.size
    centre = rng.uniform(0.15 * size, 0.85 * size, 2)
    outline = _blob_outline(rng, centre, rng.uniform(0.12, 0.24) * size, 12, 0.25)
    # smooth the polygon's corners: blur and threshold
    mask = cv2.GaussianBlur(_polygon_mask(size, outline).astype(np.float32), (0, 0), 2.0) > 0.5
    if not mask.any():
        return
    rim = mask & ~cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    opacity = rng.uniform(0.2, 0.35)
    canvas.blend(_soft(mask, 0.8) * opacity, canvas.shading * rng.uniform(1.35, 1.6))
    canvas.blend(_soft(rim, 0.5) * opacity * 0.5, canvas.shading * 1.6)
    canvas.label(mask, "film")


def _draw_fragment(rng: np.random.Generator, canvas: _Canvas, gain: float) -> None:
    size = canvas.size
    centre = rng.uniform(0.05 * size, 0.95 * size, 2)
    outline = _blob_outline(rng, centre, rng.uniform(3.5, 9.0), int(rng.integers(5, 9)), 0.4)
    mask = _polygon_mask(size, outline)
    if not mask.any():
        return
    # one facet catches more light: a linear ramp across the fragment
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = ((xx - centre[0]) * np.cos(angle) + (yy - centre[1]) * np.sin(angle)) / 10.0
    canvas.blend(_soft(mask, 0.4), canvas.shading * (gain + 0.25 * (gain - 1) * ramp))
    canvas.label(mask, "fragment")


def _draw_bead_cluster(rng: np.random.Generator, canvas: _Canvas, beads: int, gain: float) -> None:
    size = canvas.size
    centres = [rng.uniform(0.15 * size, 0.85 * size, 2)]
    radii = [rng.uniform(3.0, 5.5)]
    for _ in range(beads - 1):
        placed = _touching_bead(rng, centres, radii)
        if placed is not None:
            centres.append(placed[0])
            radii.append(placed[1])
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    for centre, radius in zip(centres, radii):
        mask = _disc_mask(size, centre, radius)
        if not mask.any():
            continue
        # a sphere: brighter in the middle, a highlight up and to the left
        depth = np.sqrt(np.clip(1 - ((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2) / radius**2, 0, 1))
        highlight = np.exp(-((xx - centre[0] + radius / 3) ** 2 + (yy - centre[1] + radius / 3) ** 2) / radius)
        canvas.blend(_soft(mask, 0.4), canvas.shading * (gain * (0.8 + 0.25 * depth) + 0.4 * highlight))
        canvas.label(mask, "bead")


def _touching_bead(rng: np.random.Generator, centres: list[Points], radii: list[float], tries: int = 20) -> tuple[Points, float] | None:
    """A bead touching one of the cluster's beads and overlapping none: beads are spheres side by
    side, not stacked, so no bead hides another. None when no spot fits."""
    for _ in range(tries):
        parent = int(rng.integers(len(centres)))
        radius = float(rng.uniform(3.0, 5.5))
        angle = rng.uniform(0, 2 * np.pi)
        # a little closer than touching so the rasterised discs share an edge
        centre = centres[parent] + (radii[parent] + radius - TOUCH_OVERLAP_PX) * np.array([np.cos(angle), np.sin(angle)])
        gaps = [np.hypot(*(centre - other)) - (r + radius) for other, r in zip(centres, radii)]
        if min(gaps) >= -TOUCH_OVERLAP_PX - 1e-6:
            return centre, radius
    return None


def _draw_fibre(rng: np.random.Generator, canvas: _Canvas, curve: Points, gain: float) -> None:
    mask = _polyline_mask(canvas.size, curve, int(rng.choice([1, 2, 2, 3])))
    if not mask.any():
        return
    canvas.blend(_soft(mask, 0.4), canvas.shading * gain)
    canvas.label(mask, "fibre")


def _fibre_curves(rng: np.random.Generator, size: int, count: int, crossing: bool) -> list[Points]:
    curves = []
    for _ in range(count):
        start = rng.uniform(0.1 * size, 0.9 * size, 2)
        curves.append(_walk(rng, start, rng.uniform(0, 2 * np.pi), rng.uniform(0.35, 0.8) * size, rng.normal(0, 0.03)))
    if crossing and curves:
        # a second fibre through a point in the middle of the first, at a clear angle to it
        first = curves[0]
        at = int(rng.integers(len(first) // 4, max(3 * len(first) // 4, len(first) // 4 + 1)))
        step = first[min(at + 1, len(first) - 1)] - first[max(at - 1, 0)]
        heading = np.arctan2(step[1], step[0]) + rng.choice([-1, 1]) * rng.uniform(np.pi / 4, np.pi / 2)
        curves.insert(1, _curve_through(rng, first[at], heading, rng.uniform(0.35, 0.7) * size))
    return curves


def _draw_grain(rng: np.random.Generator, canvas: _Canvas) -> np.ndarray:
    """Sediment: a bright irregular lump like a fragment but rough, granular and soft-edged."""
    size = canvas.size
    centre = rng.uniform(0, size, 2)
    mask = _polygon_mask(size, _blob_outline(rng, centre, rng.uniform(3.0, 8.0), 10, 0.5))
    grain = cv2.GaussianBlur(rng.normal(0, 1, (size, size)).astype(np.float32), (0, 0), 0.8)
    alpha = _soft(mask, 1.0)
    canvas.blend(alpha, canvas.shading * (rng.uniform(1.3, 1.9) + 0.5 * grain))
    return alpha


def _draw_debris(rng: np.random.Generator, canvas: _Canvas) -> np.ndarray:
    """Organic debris: a short thick fuzzy strand, dark or bright, that mimics a fibre."""
    size = canvas.size
    curve = _walk(rng, rng.uniform(0, size, 2), rng.uniform(0, 2 * np.pi), rng.uniform(8, 25), rng.normal(0, 0.12))
    alpha = _soft(_polyline_mask(size, curve, int(rng.integers(2, 5))), 1.2)
    gain = rng.uniform(0.3, 0.6) if rng.random() < 0.5 else rng.uniform(1.3, 1.7)
    canvas.blend(alpha, canvas.shading * gain)
    return alpha


def _draw_specks(rng: np.random.Generator, canvas: _Canvas, count: int) -> np.ndarray:
    layer = np.zeros((canvas.size, canvas.size), np.uint8)
    for _ in range(count):
        cv2.circle(layer, tuple(int(v) for v in rng.integers(0, canvas.size, 2)), int(rng.integers(0, 2)), 1, -1)
    alpha = _soft(layer.astype(bool), 0.5)
    canvas.blend(alpha, canvas.shading * rng.uniform(1.5, 2.2))
    return alpha


def _target_gain(rng: np.random.Generator, camouflaged: float = 0.2) -> float:
    """Brightness of a particle relative to the background: clear, or camouflaged (barely brighter)."""
    return float(rng.uniform(1.1, 1.22) if rng.random() < camouflaged else rng.uniform(1.45, 2.1))


def make_demo_image(rng: np.random.Generator, size: int = DEMO_SIZE) -> tuple[np.ndarray, np.ndarray, dict[int, str]]:
    """One demo image: (uint8 HxW grey, int32 instances 0..N, class of each ID)."""
    if size < 32:
        raise SkipnasError(f"demo images need at least 32 px a side, got {size}")
    texture, shading = _background(rng, size)
    canvas = _Canvas(texture, shading)
    area_scale = (size / DEMO_SIZE) ** 2

    for _ in range(int(rng.integers(0, 2))):
        _draw_film(rng, canvas)
    for _ in range(int(rng.poisson(3 * area_scale))):
        canvas.occlude(_draw_grain(rng, canvas))
    for _ in range(int(rng.poisson(2 * area_scale))):
        canvas.occlude(_draw_debris(rng, canvas))
    for _ in range(int(rng.integers(1, 4))):
        _draw_fragment(rng, canvas, _target_gain(rng))
    for cluster in range(int(rng.integers(1, 3))):
        beads = int(rng.integers(2, 5)) if cluster == 0 or rng.random() < 0.5 else 1
        _draw_bead_cluster(rng, canvas, beads, _target_gain(rng, camouflaged=0.1))
    crossing = bool(rng.random() < 0.8)
    for curve in _fibre_curves(rng, size, int(rng.integers(1, 4)), crossing):
        _draw_fibre(rng, canvas, curve, _target_gain(rng))
    # clutter on top: partly hides some particles
    for _ in range(int(rng.poisson(1 * area_scale))):
        canvas.occlude(_draw_debris(rng, canvas))
    canvas.occlude(_draw_specks(rng, canvas, int(rng.integers(4, 16))))

    image = cv2.GaussianBlur(canvas.image, (0, 0), 0.6)  # the optics' blur
    image = image + rng.normal(0, rng.uniform(0.015, 0.035), image.shape).astype(np.float32)
    pixels = np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)
    instances, classes = _drop_hidden(canvas.instances, canvas.classes)
    return pixels, instances, classes


def _drop_hidden(instances: np.ndarray, classes: dict[int, str]) -> tuple[np.ndarray, dict[int, str]]:
    """Unlabel particles with almost nothing visible and renumber the rest 1..N, keeping their classes."""
    areas = np.bincount(instances.ravel(), minlength=len(classes) + 1)
    lookup = np.zeros(len(areas), np.int32)
    kept: dict[int, str] = {}
    for old_id in range(1, len(areas)):
        if areas[old_id] >= MIN_VISIBLE_PIXELS:
            lookup[old_id] = len(kept) + 1
            kept[len(kept) + 1] = classes[old_id]
    return lookup[instances], kept


def _sample_rng(seed: int, split: str, index: int) -> np.random.Generator:
    # each image depends only on (seed, split, index)
    return np.random.default_rng([seed, list(DEMO_SPLITS).index(split), index])


def write_demo_dataset(out: Path, seed: int = 0) -> Path:
    """Write the demo dataset to ``out`` (``train/``, ``val/``, ``test/`` with ``images/`` and ``masks/``).

    Written to a temp folder beside ``out`` and renamed into place, so an interrupted run leaves
    nothing behind. An ``out`` already holding this demo (same version and seed) is kept as is.
    """
    out = Path(out)
    if out.exists():
        if _is_demo(out, seed):
            return out
        if not out.is_dir() or any(out.iterdir()):
            raise SkipnasError(f"{out}: already exists and is not an empty folder; choose a new folder or remove it")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        _write_splits(staging, seed)
        try:
            os.replace(staging, out)  # replaces an empty folder too
        except OSError:
            if not _is_demo(out, seed):  # else another process finished the same demo first
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return out


def _write_splits(root: Path, seed: int) -> None:
    classes: dict[str, dict[str, dict[str, str]]] = {}
    for split, count in DEMO_SPLITS.items():
        classes[split] = {}
        for index in range(count):
            image, instances, image_classes = make_demo_image(_sample_rng(seed, split, index))
            stem = f"{split}-{index:03d}"
            write_image(root / split / "images" / f"{stem}.tif", image)
            write_mask(root / split / "masks" / f"{stem}.tif", instances)
            classes[split][stem] = {str(k): v for k, v in image_classes.items()}
    write_json_atomic(
        root / DEMO_MARKER,
        {"format_version": DEMO_VERSION, "seed": seed, "size": DEMO_SIZE, "classes": classes},
    )


def _is_demo(root: Path, seed: int) -> bool:
    with contextlib.suppress(OSError, ValueError):
        marker = json.loads((root / DEMO_MARKER).read_text(encoding="utf-8"))
        return marker.get("format_version") == DEMO_VERSION and marker.get("seed") == seed
    return False


def demo_dataset_path(seed: int = 0) -> Path:
    """The demo dataset for ``seed``, generated into the cache on first use."""
    path = cache_dir() / f"demo-v{DEMO_VERSION}-seed{seed}"
    if _is_demo(path, seed):
        return path
    try:
        if path.exists():
            # a folder left by something else (or a damaged cache): regenerate it
            shutil.rmtree(path)
        return write_demo_dataset(path, seed)
    except OSError as exc:
        raise SkipnasError(
            f"{path}: cannot write the demo dataset there ({exc.strerror}); set SKIPNAS_CACHE_DIR to a writable folder"
        ) from None


def demo_classes(root: Path) -> dict[str, dict[str, dict[int, str]]]:
    """Per split, per image stem: the class of each instance ID of a demo dataset written here."""
    try:
        marker = json.loads((Path(root) / DEMO_MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise SkipnasError(f"{root}: no readable {DEMO_MARKER}; regenerate the demo with `skipnas data demo`") from None
    return {
        split: {stem: {int(k): v for k, v in ids.items()} for stem, ids in stems.items()}
        for split, stems in marker["classes"].items()
    }


def class_instances(instances: np.ndarray, classes: dict[int, str], keep: str) -> np.ndarray:
    """int32 ``instances`` with only the particles whose class (in ``classes``, from :func:`demo_classes`) is ``keep``."""
    instances = np.asarray(instances).astype(np.int32)
    kept = np.zeros(int(instances.max(initial=0)) + 1, np.int32)
    for particle, name in classes.items():
        if name == keep and particle < len(kept):
            kept[particle] = particle
    return kept[instances]
