"""Semi-synthetic training images: real particles cut out and pasted onto backgrounds.

Every annotated particle of a real image is cut out with its mask (:func:`cut_particles`), then
pasted at a random position, angle, flip and scale onto either a blank background (particle-free
images, or real images whose particles were inpainted away) or a real image that keeps its own
particles ("semi"). The new instance mask is known exactly, so a few annotated images give
as many training pairs as wanted. numpy + OpenCV only.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

from skipnas.data.io import relabel_consecutive
from skipnas.errors import SkipnasError

BACKGROUND_MODES: tuple[str, ...] = ("blank", "semi")
# a blank background's holes grow past the mask: hand-painted masks miss a particle's rim and shadow
BACKGROUND_HOLE_GROWTH = 6
# a source image whose particles cover more than this leaves too little real background to inpaint from
MAX_HOLE_FRACTION = 0.8

ImagePair = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True, eq=False)
class Particle:
    """One annotated particle: the image pixels around it and its mask, both cropped to its bounding box.

    ``mask`` may hold several disconnected pieces (a fibre crossed by another): it is one particle.
    The crop keeps a small margin of real surroundings so interpolation at the edge stays natural.
    """

    image: np.ndarray
    mask: np.ndarray

    @property
    def area(self) -> int:
        return int(np.count_nonzero(self.mask))


@dataclass(frozen=True)
class SynthConfig:
    """How synthetic images are made.

    ``feather``: width in pixels over which a pasted particle fades into the background at its edge
    (0 pastes hard edges). ``background``: ``"blank"`` pastes onto particle-free backgrounds,
    ``"semi"`` onto real images that keep their own particles. ``size``: output (height, width);
    ``None`` keeps each background's size. ``border_clipping``: particles may be cut by the image
    border, like tiles of a larger micrograph; otherwise each lies wholly inside.
    """

    particles_per_image: tuple[int, int] = (3, 10)
    scale_range: tuple[float, float] = (0.8, 1.25)
    rotate: bool = True
    flip: bool = True
    feather: float = 2.0
    background: str = "blank"
    size: tuple[int, int] | None = None
    allow_overlap: bool = True
    border_clipping: bool = True
    placement_attempts: int = 50
    min_area: int = 16

    def __post_init__(self) -> None:
        low, high = self.particles_per_image
        if not 0 <= low <= high:
            raise SkipnasError(f"particles_per_image must be (low, high) with 0 <= low <= high, got {self.particles_per_image}")
        smallest, largest = self.scale_range
        if not 0 < smallest <= largest:
            raise SkipnasError(f"scale_range must be (low, high) with 0 < low <= high, got {self.scale_range}")
        if self.feather < 0:
            raise SkipnasError(f"feather must be 0 or more pixels, got {self.feather}")
        if self.background not in BACKGROUND_MODES:
            raise SkipnasError(f"background must be one of {', '.join(BACKGROUND_MODES)}, got {self.background!r}")
        if self.size is not None and (len(self.size) != 2 or min(self.size) < 1):
            raise SkipnasError(f"size must be (height, width) in pixels or None, got {self.size}")
        if self.placement_attempts < 1:
            raise SkipnasError(f"placement_attempts must be at least 1, got {self.placement_attempts}")
        if self.min_area < 1:
            raise SkipnasError(f"min_area must be at least 1 pixel, got {self.min_area}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SynthConfig:
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise SkipnasError(f"unknown synth config field(s): {', '.join(sorted(unknown))}")
        values = dict(data)
        for name in ("particles_per_image", "scale_range", "size"):
            if values.get(name) is not None:
                values[name] = tuple(values[name])
        return cls(**values)


# array helpers ----------------------------------------------------------------------------------


def pixel_format(image: np.ndarray) -> tuple[np.dtype[Any], int]:
    """(dtype, channels) of an HxW or HxWxC image."""
    return image.dtype, 1 if image.ndim == 2 else image.shape[2]


def describe_format(fmt: tuple[np.dtype[Any], int]) -> str:
    dtype, channels = fmt
    return f"{dtype} {'grey' if channels == 1 else f'{channels}-channel'}"


def check_source_image(image: np.ndarray, what: str) -> None:
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3):
        if image.dtype in (np.uint8, np.uint16, np.float32):
            return
    raise SkipnasError(
        f"{what}: shape {image.shape} dtype {image.dtype} is not supported; "
        "use HxW grey or HxWx3 RGB, uint8, uint16 or float32"
    )


def checked_image(image: np.ndarray, what: str) -> np.ndarray:
    check_source_image(image, what)
    return image


def convert_format(image: np.ndarray, dtype: np.dtype[Any], channels: int) -> np.ndarray:
    """``image`` as ``dtype`` with ``channels`` (1 or 3): grey <-> RGB, 8 <-> 16 bit rescaled."""
    out = image
    if out.ndim == 3 and channels == 1:
        out = cv2.cvtColor(np.ascontiguousarray(out), cv2.COLOR_RGB2GRAY)
    elif out.ndim == 2 and channels == 3:
        out = np.repeat(out[:, :, None], 3, axis=2)
    if out.dtype == dtype:
        return out
    # scale through [0, 1] so 8-bit white stays white in 16 bit and back
    scale_in = float(np.iinfo(out.dtype).max) if np.issubdtype(out.dtype, np.integer) else 1.0
    scale_out = float(np.iinfo(dtype).max) if np.issubdtype(dtype, np.integer) else 1.0
    return _to_dtype(out.astype(np.float32) * (scale_out / scale_in), dtype)


def _to_dtype(values: np.ndarray, dtype: np.dtype[Any]) -> np.ndarray:
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype)
    return values.astype(dtype)


def cut_particles(image: np.ndarray, instances: np.ndarray, min_area: int = 16, margin: int = 2) -> list[Particle]:
    """Every annotated instance of ``image`` with at least ``min_area`` pixels, cropped with ``margin`` px."""
    if image.shape[:2] != instances.shape:
        raise SkipnasError(
            f"image is {image.shape[1]}x{image.shape[0]} but its mask is {instances.shape[1]}x{instances.shape[0]}; "
            "give the mask made for this image"
        )
    height, width = instances.shape
    particles: list[Particle] = []
    for instance_id in np.unique(instances):
        if instance_id == 0:
            continue
        mask = instances == instance_id
        if np.count_nonzero(mask) < min_area:
            continue
        x, y, w, h = cv2.boundingRect(mask.astype(np.uint8))
        top, left = max(y - margin, 0), max(x - margin, 0)
        bottom, right = min(y + h + margin, height), min(x + w + margin, width)
        particles.append(Particle(image[top:bottom, left:right].copy(), mask[top:bottom, left:right].copy()))
    return particles


def _transform(
    particle: Particle, scale: float, angle: float, flip_x: bool, flip_y: bool
) -> tuple[np.ndarray, np.ndarray]:
    """The particle's image (float32) and mask (bool) flipped, rotated by ``angle`` degrees and scaled."""
    image, mask = particle.image, particle.mask
    if flip_x:
        image, mask = image[:, ::-1], mask[:, ::-1]
    if flip_y:
        image, mask = image[::-1], mask[::-1]
    image = np.ascontiguousarray(image, dtype=np.float32)
    mask_u8 = np.ascontiguousarray(mask, dtype=np.uint8)
    if angle == 0 and scale == 1:
        return image, mask_u8.astype(bool)
    height, width = mask.shape
    matrix = cv2.getRotationMatrix2D(((width - 1) / 2, (height - 1) / 2), angle, scale)
    corners = np.array([[0, 0, 1], [width - 1, 0, 1], [0, height - 1, 1], [width - 1, height - 1, 1]], np.float64)
    moved = corners @ matrix.T
    low = np.floor(moved.min(axis=0))
    matrix[:, 2] -= low
    out_w, out_h = (int(v) + 1 for v in np.ceil(moved.max(axis=0) - low))
    warped_image = cv2.warpAffine(image, matrix, (out_w, out_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    warped_mask = cv2.warpAffine(mask_u8, matrix, (out_w, out_h), flags=cv2.INTER_NEAREST, borderValue=0)
    return warped_image, warped_mask.astype(bool)


def feathered_alpha(mask: np.ndarray, feather: float) -> np.ndarray:
    """Opacity (float32 0..1) rising from the mask's edge to 1 over ``feather`` px; 0 outside the mask.

    The ramp lies inside the mask so no pixel from around the source particle leaks into the new
    image, and every labelled pixel shows some of the particle. A particle thinner than the ramp
    still reaches full opacity on its centre line, so thin fibres do not fade away.
    """
    if feather <= 0 or not mask.any():
        return mask.astype(np.float32)
    # padded with background so a mask touching the crop border fades there too
    padded = np.pad(mask.astype(np.uint8), 1)
    distance = cv2.distanceTransform(padded, cv2.DIST_L2, 3)[1:-1, 1:-1]
    ramp = min(feather + 1.0, float(distance.max()))
    return np.clip(distance / ramp, 0.0, 1.0).astype(np.float32)


def _placement(
    mask: np.ndarray, instances: np.ndarray, config: SynthConfig, rng: np.random.Generator
) -> tuple[int, int] | None:
    """Top-left corner for ``mask`` on the canvas, or None when no allowed position was found."""
    canvas_h, canvas_w = instances.shape
    height, width = mask.shape
    if config.border_clipping:
        # the particle's centre lands inside the canvas; the rest may hang over the border
        top_range, left_range = (-(height // 2), canvas_h - height // 2), (-(width // 2), canvas_w - width // 2)
    else:
        if height > canvas_h or width > canvas_w:
            return None
        top_range, left_range = (0, canvas_h - height + 1), (0, canvas_w - width + 1)
    attempts = 1 if config.allow_overlap else config.placement_attempts
    for _ in range(attempts):
        top, left = int(rng.integers(*top_range)), int(rng.integers(*left_range))
        window, part = _windows(top, left, mask.shape, instances.shape)
        visible = mask[part]
        if not visible.any():
            continue
        if config.allow_overlap or not np.any(instances[window][visible]):
            return top, left
    return None


def _windows(
    top: int, left: int, shape: tuple[int, ...], canvas: tuple[int, ...]
) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    """(canvas slices, particle slices) of the overlap of a particle at (top, left) with the canvas."""
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + shape[0], canvas[0]), min(left + shape[1], canvas[1])
    y1, x1 = max(y1, y0), max(x1, x0)
    return (slice(y0, y1), slice(x0, x1)), (slice(y0 - top, y1 - top), slice(x0 - left, x1 - left))


def paste_particles(
    background: np.ndarray,
    background_instances: np.ndarray | None,
    particles: Sequence[Particle],
    config: SynthConfig,
    rng: np.random.Generator,
) -> ImagePair:
    """Paste a random number (``config.particles_per_image``) of ``particles`` onto ``background``.

    ``background_instances`` are the particles already there (semi mode) or None (blank). Each
    pasted particle gets a new ID after them; later pastes occlude earlier ones. The returned
    mask is relabelled 1..N over exactly the visible particles, in order (background ones first).
    The image keeps the background's dtype.
    """
    check_source_image(background, "background")
    if background_instances is not None and background_instances.shape != background.shape[:2]:
        raise SkipnasError(
            f"background is {background.shape[1]}x{background.shape[0]} but its mask is "
            f"{background_instances.shape[1]}x{background_instances.shape[0]}; give the mask made for this image"
        )
    canvas = background.astype(np.float32)
    instances = (
        np.zeros(background.shape[:2], np.int32)
        if background_instances is None
        else background_instances.astype(np.int32, copy=True)
    )
    for particle in particles:
        if pixel_format(particle.image) != pixel_format(background):
            raise SkipnasError(
                f"a particle is {describe_format(pixel_format(particle.image))} but the background is "
                f"{describe_format(pixel_format(background))}; convert one of them with convert_format()"
            )
    low, high = config.particles_per_image
    count = int(rng.integers(low, high + 1)) if particles else 0
    picks = rng.choice(len(particles), size=count, replace=len(particles) < count) if count else []
    next_id = int(instances.max(initial=0)) + 1
    for index in picks:
        scale = float(rng.uniform(*config.scale_range))
        angle = float(rng.uniform(0.0, 360.0)) if config.rotate else 0.0
        flip_x, flip_y = (bool(v) for v in rng.random(2) < 0.5) if config.flip else (False, False)
        image, mask = _transform(particles[int(index)], scale, angle, flip_x, flip_y)
        if not mask.any():
            continue  # scaled down to nothing
        position = _placement(mask, instances, config, rng)
        if position is None:
            continue
        window, part = _windows(*position, mask.shape, instances.shape)
        alpha = feathered_alpha(mask, config.feather)[part]
        if canvas.ndim == 3:
            alpha = alpha[:, :, None]
        canvas[window] = canvas[window] * (1.0 - alpha) + image[part] * alpha
        instances[window][mask[part]] = next_id
        next_id += 1
    return _to_dtype(canvas, background.dtype), relabel_consecutive(instances)


# backgrounds ------------------------------------------------------------------------------------


def _inpaint(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """cv2.inpaint for any supported layout (it takes 3 channels only at 8 bit)."""
    hole_u8 = hole.astype(np.uint8)
    radius = 5
    if image.ndim == 3 and image.dtype != np.uint8:
        channels = [cv2.inpaint(np.ascontiguousarray(image[:, :, c]), hole_u8, radius, cv2.INPAINT_TELEA)
                    for c in range(image.shape[2])]
        return np.stack(channels, axis=2)
    return cv2.inpaint(np.ascontiguousarray(image), hole_u8, radius, cv2.INPAINT_TELEA)


def blank_background(
    image: np.ndarray, instances: np.ndarray, rng: np.random.Generator, grow: int = BACKGROUND_HOLE_GROWTH
) -> np.ndarray:
    """``image`` with its annotated particles removed: inpainted, then re-noised like the real background.

    Inpainting alone leaves smooth patches that a network would learn to spot, so Gaussian noise
    of the image's own high-frequency level is added inside the holes.
    """
    check_source_image(image, "background source")
    hole = instances > 0
    if grow > 0:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1))
        hole = cv2.dilate(hole.astype(np.uint8), kernel).astype(bool)
    if not hole.any():
        return image.copy()
    filled = _inpaint(image, hole).astype(np.float32)
    values = image.astype(np.float32)
    residual = values - cv2.GaussianBlur(values, (0, 0), 1.5)
    kept = residual[~hole]
    # median absolute deviation: robust to the edges of unlabelled clutter
    sigma = 1.4826 * float(np.median(np.abs(kept - np.median(kept)))) if kept.size else 0.0
    noise = rng.normal(0.0, sigma, size=filled.shape).astype(np.float32)
    hole_values = hole if filled.ndim == 2 else np.repeat(hole[:, :, None], filled.shape[2], axis=2)
    filled = np.where(hole_values, filled + noise, filled)
    return _to_dtype(filled, image.dtype)


def fit_to_size(
    image: np.ndarray, instances: np.ndarray | None, size: tuple[int, int] | None, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray | None]:
    """A random ``size`` (height, width) crop, after enlarging an image smaller than ``size``."""
    if size is None:
        return image, instances
    out_h, out_w = size
    height, width = image.shape[:2]
    factor = max(out_h / height, out_w / width)
    if factor > 1:
        new_size = (max(out_w, math.ceil(width * factor)), max(out_h, math.ceil(height * factor)))
        image = cv2.resize(image, new_size, interpolation=cv2.INTER_LINEAR)
        if instances is not None:
            instances = cv2.resize(instances.astype(np.int32), new_size, interpolation=cv2.INTER_NEAREST)
        height, width = image.shape[:2]
    top = int(rng.integers(0, height - out_h + 1))
    left = int(rng.integers(0, width - out_w + 1))
    crop = (slice(top, top + out_h), slice(left, left + out_w))
    return image[crop], None if instances is None else instances[crop]


class SyntheticGenerator:
    """Makes synthetic (image, instances) pairs from real annotated ``sources``.

    ``backgrounds``: particle-free images for blank mode; without them, blank backgrounds are the
    sources with their particles inpainted away. Output dtype and channels follow the sources;
    backgrounds are converted to match.
    """

    def __init__(
        self,
        sources: Sequence[ImagePair],
        config: SynthConfig | None = None,
        backgrounds: Sequence[np.ndarray] | None = None,
    ) -> None:
        self.config = config or SynthConfig()
        if not sources:
            raise SkipnasError("no source images to cut particles from; give a dataset with annotated images")
        for index, (image, instances) in enumerate(sources):
            check_source_image(image, f"source image {index}")
            if image.shape[:2] != instances.shape:
                raise SkipnasError(
                    f"source image {index} is {image.shape[1]}x{image.shape[0]} but its mask is "
                    f"{instances.shape[1]}x{instances.shape[0]}; give the mask made for this image"
                )
        self.format = pixel_format(sources[0][0])
        for index, (image, _) in enumerate(sources):
            if pixel_format(image) != self.format:
                raise SkipnasError(
                    f"source image {index} is {describe_format(pixel_format(image))} but source image 0 is "
                    f"{describe_format(self.format)}; convert the dataset to one pixel format"
                )
        self.sources = list(sources)
        self.particles = [
            particle
            for image, instances in self.sources
            for particle in cut_particles(image, instances, self.config.min_area)
        ]
        if not self.particles:
            raise SkipnasError(
                f"the source images hold no annotated particle of at least {self.config.min_area} px; "
                "give a dataset whose masks label particles"
            )
        self._given_backgrounds = [
            convert_format(checked_image(b, f"background image {i}"), *self.format) for i, b in enumerate(backgrounds or [])
        ]
        # sources with enough real background to inpaint from, and their blanks made on first use
        self._blank_sources = [
            index for index, (_, instances) in enumerate(self.sources) if np.mean(instances > 0) <= MAX_HOLE_FRACTION
        ]
        self._blanks: dict[int, np.ndarray] = {}

    def blank_background(self, rng: np.random.Generator) -> np.ndarray:
        """A given background, or else a source with its particles inpainted away, drawn with ``rng``."""
        if self._given_backgrounds:
            return self._given_backgrounds[int(rng.integers(len(self._given_backgrounds)))]
        if not self._blank_sources:
            raise SkipnasError(
                "every source image is mostly particles, leaving no background to inpaint; "
                "give a folder of particle-free images (--backgrounds)"
            )
        index = self._blank_sources[int(rng.integers(len(self._blank_sources)))]
        if index not in self._blanks:
            image, instances = self.sources[index]
            # seeded by the source's index so a blank does not depend on which sample needed it first
            self._blanks[index] = blank_background(image, instances, np.random.default_rng(index))
        return self._blanks[index]

    def sample(self, rng: np.random.Generator) -> ImagePair:
        """One synthetic (image, instances) pair drawn with ``rng``."""
        if self.config.background == "semi":
            image, instances = self.sources[int(rng.integers(len(self.sources)))]
            background, background_instances = fit_to_size(image, instances, self.config.size, rng)
        else:
            background, background_instances = fit_to_size(self.blank_background(rng), None, self.config.size, rng)
        return paste_particles(background, background_instances, self.particles, self.config, rng)

    def generate(self, n: int, seed: int = 0) -> Iterator[ImagePair]:
        """``n`` pairs; pair ``i`` depends only on (seed, i), so a longer run extends a shorter one."""
        for index in range(n):
            yield self.sample(np.random.default_rng([seed, index]))
