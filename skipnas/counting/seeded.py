"""Seeds and floods: counting touching particles from the cores of a relief map.

:func:`peak_seeds` finds one core per particle on a relief (pixels near its local peaks) and
:func:`flood_from_seeds` grows the cores over the foreground mask until they meet. The
``watershed`` method uses the mask's own distance transform as the relief; ``seeded`` uses the
network's auxiliary map, whose target is :func:`instance_distance_map`: for every true particle,
the distance of its pixels to the particle's own border, scaled to 1 at its deepest point.
Touching particles get one peak each with a valley at their contact line, which the distance
transform of the merged foreground does not have. At counting time, :func:`seeded_labels` takes
as cores the pixels above ``seed_threshold`` and, with a ``peak_fraction`` above 0, near a local
peak, so a blurred predicted map that dips between touching particles without reaching 0 still
splits them. The other target, :func:`instance_centre_map`, is a Gaussian peak at each particle's
deepest point whose width follows the particle's depth: its peaks do not depend on the shape of a
particle's border, so a bead partly hidden under a fibre keeps one peak.

Numpy and OpenCV only: the training code imports :func:`auxiliary_target` to make targets.
"""

from __future__ import annotations

import cv2
import numpy as np

from skipnas.auxiliary import AUXILIARY_TARGETS, check_auxiliary


def instance_distance_map(instances: np.ndarray) -> np.ndarray:
    """float32 HxW in [0, 1]: each particle's distance to its own border over its largest distance.

    ``instances`` holds one ID per particle (0 = background). Pixels of another particle count as
    border, so two touching particles are separated by zeros along their contact line. A
    particle in several pieces (one ID) is scaled by its largest piece's depth.
    """
    ids, distance, peak = _own_border_distance(instances, "instance_distance_map")
    scale = peak[ids]
    return np.divide(distance, scale, out=np.zeros_like(distance), where=scale > 0).astype(np.float32)


def instance_centre_map(instances: np.ndarray, sigma_per_depth: float = 0.5) -> np.ndarray:
    """float32 HxW in [0, 1]: a Gaussian of height 1 at each particle's deepest point, the highest where they overlap.

    The deepest point is the particle's pixel farthest from its own border (as in
    :func:`instance_distance_map`; of several, the one nearest their mean). The Gaussian's sigma is
    ``sigma_per_depth`` times that depth (at least 1 px), so on a disc it falls to exp(-2) at the rim
    with the default: small beads get narrow peaks and a touching pair keeps two.
    """
    if not np.isfinite(sigma_per_depth) or sigma_per_depth <= 0:
        raise ValueError(f"sigma_per_depth must be a number > 0, got {sigma_per_depth!r}")
    ids, distance, peak = _own_border_distance(instances, "instance_centre_map")
    height, width = ids.shape
    centres = np.zeros(ids.shape, np.float32)
    yy, xx = np.nonzero((ids > 0) & (distance >= peak[ids]) & (distance > 0))
    for particle in np.unique(ids[yy, xx]):
        mine = ids[yy, xx] == particle
        ys, xs = yy[mine], xx[mine]
        nearest = int(np.argmin((ys - ys.mean()) ** 2 + (xs - xs.mean()) ** 2))
        cy, cx = int(ys[nearest]), int(xs[nearest])
        sigma = max(1.0, sigma_per_depth * float(peak[particle]))
        reach = int(np.ceil(3 * sigma))  # beyond 3 sigma the Gaussian is below 0.012
        top, bottom, left, right = max(0, cy - reach), min(height, cy + reach + 1), max(0, cx - reach), min(width, cx + reach + 1)
        gy, gx = np.ogrid[top - cy : bottom - cy, left - cx : right - cx]
        bump = np.exp(-(gy**2 + gx**2) / (2 * sigma**2)).astype(np.float32)
        np.maximum(centres[top:bottom, left:right], bump, out=centres[top:bottom, left:right])
    return centres


def auxiliary_target(name: str, instances: np.ndarray) -> np.ndarray:
    """The auxiliary head's float32 HxW target in [0, 1] for the target ``name``, made from an instance mask."""
    check_auxiliary(name)
    return {"distance": instance_distance_map, "centres": instance_centre_map}[name](instances)


def _own_border_distance(instances: np.ndarray, caller: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(int64 IDs, each pixel's float32 distance to its particle's own border, each ID's largest distance)."""
    instances = np.asarray(instances)
    if instances.ndim != 2:
        raise ValueError(f"{caller} expects an HxW instance map, got shape {instances.shape}")
    # a pixel with another particle as 4-neighbour is border: touching particles get a valley of zeros
    # (OpenCV counts pixels outside the image as far away, so a particle cut by the image edge keeps its depth)
    ids = instances.astype(np.int64, copy=False)
    inside = (ids != 0) & ~_touches_other_particle(ids)
    distance = cv2.distanceTransform(inside.astype(np.uint8), cv2.DIST_L2, 5)
    peak = np.zeros(int(ids.max(initial=0)) + 1, np.float32)
    np.maximum.at(peak, ids.ravel(), distance.ravel())
    return ids, distance, peak


def _touches_other_particle(ids: np.ndarray) -> np.ndarray:
    """True where a 4-neighbour holds a different non-zero ID."""
    touching = np.zeros(ids.shape, bool)
    for axis, step in ((0, 1), (0, -1), (1, 1), (1, -1)):
        neighbour = np.roll(ids, step, axis=axis)
        edge = [slice(None), slice(None)]
        edge[axis] = slice(0, 1) if step == 1 else slice(-1, None)
        neighbour[tuple(edge)] = 0  # no wrap-around
        touching |= (neighbour != 0) & (neighbour != ids)
    return touching


class Relief:
    """A relief map on a binary mask, with what every search for cores on it shares: the mask's
    8-connected blobs, each blob's highest point, the max filter of each peak window and the image
    the watershed floods.

    :func:`peak_seeds` and :func:`flood_from_seeds` build one for a single call; calibration keeps
    one per mask and relief while it tries every seed threshold, peak fraction and window.
    """

    def __init__(self, relief: np.ndarray, mask: np.ndarray) -> None:
        self.mask = np.ascontiguousarray(mask, dtype=np.uint8)
        if np.shape(relief) != self.mask.shape:
            raise ValueError(f"the relief map is {np.shape(relief)} but the mask is {self.mask.shape}")
        self.values = np.where(self.mask > 0, relief, 0).astype(np.float32)
        self.blob_count, self.blobs = cv2.connectedComponents(self.mask, connectivity=8, ltype=cv2.CV_32S)
        self._at_blob_peak: np.ndarray | None = None
        self._nearby_peak: dict[int, np.ndarray] = {}
        self._flood_bgr: np.ndarray | None = None

    @property
    def at_blob_peak(self) -> np.ndarray:
        """True at each blob's highest points."""
        if self._at_blob_peak is None:
            blob_peak = np.zeros(self.blob_count, np.float32)
            np.maximum.at(blob_peak, self.blobs.ravel(), self.values.ravel())
            self._at_blob_peak = (self.mask > 0) & (self.values >= blob_peak[self.blobs])
        return self._at_blob_peak

    def nearby_peak(self, min_distance: int) -> np.ndarray:
        """The highest relief within ``min_distance`` px of each pixel (an elliptical max filter)."""
        if min_distance not in self._nearby_peak:
            window = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * min_distance + 1, 2 * min_distance + 1))
            self._nearby_peak[min_distance] = cv2.dilate(self.values, window)
        return self._nearby_peak[min_distance]

    def seeds(self, min_distance: int, peak_fraction: float, floor: float = -np.inf) -> np.ndarray:
        """int32 seeds, one label per 8-connected core: see :func:`peak_seeds`."""
        core = self.values > floor
        # a fraction of 0 leaves only the relief's sign to test: no max filter needed
        core &= self.values >= (peak_fraction * self.nearby_peak(min_distance) if peak_fraction > 0 else 0)
        cores = ((self.mask > 0) & (core | self.at_blob_peak)).astype(np.uint8)
        return cv2.connectedComponents(cores, connectivity=8, ltype=cv2.CV_32S)[1]

    def _flood_image(self) -> np.ndarray:
        """The image cv2.watershed floods: the mask flat (0) on a high background (255), padded by one pixel."""
        if self._flood_bgr is None:
            # cv2.watershed floods in order of the colour step between neighbours: a flat particle on a
            # high background makes it a breadth-first growth of every seed inside its particle, so touching
            # particles split where the floods from their seeds meet, before any background is flooded
            relief = np.where(self.mask > 0, 0, 255).astype(np.uint8)
            # cv2.watershed marks the image's outer pixel frame as boundary: pad so the frame is flooded too
            relief = cv2.copyMakeBorder(relief, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=255)
            self._flood_bgr = cv2.cvtColor(relief, cv2.COLOR_GRAY2BGR)
        return self._flood_bgr

    def flood(self, seeds: np.ndarray) -> np.ndarray:
        """int32 labels of the mask grown from ``seeds``: see :func:`flood_from_seeds`."""
        mask, blobs = self.mask, self.blobs
        markers = np.where(mask > 0, seeds, 0).astype(np.int32)
        seeded = np.zeros(self.blob_count, bool)
        seeded[blobs[markers > 0]] = True
        seeded[0] = True
        unseeded = ~seeded[blobs]
        if unseeded.any():  # whole blobs as their own seeds, numbered after the given ones, in blob order
            lookup = np.zeros(self.blob_count, np.int32)
            lookup[~seeded] = int(markers.max(initial=0)) + 1 + np.arange(int((~seeded).sum()), dtype=np.int32)
            markers[unseeded] = lookup[blobs[unseeded]]
        if not markers.any():
            return markers
        padded = cv2.copyMakeBorder(markers, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
        cv2.watershed(self._flood_image(), padded)
        markers = padded[1:-1, 1:-1]
        labels = np.where((markers > 0) & (mask > 0), markers, 0).astype(np.int32)
        return _fill_from_neighbours(labels, mask)


def flood_from_seeds(mask: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """int32 labels: every foreground pixel of ``mask`` takes the label of the seed that reaches it first.

    ``seeds`` is an int32 map (0 = no seed, k = seed of particle k) inside ``mask``. A
    foreground blob holding no seed becomes one particle of its own.
    """
    return Relief(np.zeros(np.shape(mask), np.float32), mask).flood(seeds)


def _fill_from_neighbours(labels: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Give unlabelled mask pixels (the watershed lines) their highest neighbour's label."""
    square = np.ones((3, 3), np.uint8)
    for _ in range(8):  # lines are one pixel wide; a few rounds cover where they meet
        holes = (labels == 0) & (mask > 0)
        if not holes.any():
            break
        grown = cv2.dilate(labels.astype(np.float32), square).astype(np.int32)
        fillable = holes & (grown > 0)
        if not fillable.any():
            break
        labels[fillable] = grown[fillable]
    return labels


def peak_seeds(
    relief: np.ndarray, mask: np.ndarray, min_distance: int, peak_fraction: float, floor: float = -np.inf
) -> np.ndarray:
    """int32 seeds (one label per 8-connected core) of the particles in ``mask`` on a ``relief`` map.

    A core pixel is above ``floor`` and at least ``peak_fraction`` of the highest relief within
    ``min_distance`` px (a max filter), and each blob's highest point is one too. On the distance
    transform a strand of even width has one core along its ridge and two touching discs have one
    core each, cut apart at the narrow neck; on a blurred learned map, each particle keeps its own
    local peak even where the map does not fall to 0 between touching particles.
    """
    return Relief(relief, mask).seeds(min_distance, peak_fraction, floor)


def seeded_labels(
    mask: np.ndarray, auxiliary: np.ndarray, seed_threshold: float, min_distance: int = 10, peak_fraction: float = 0.0
) -> np.ndarray:
    """int32 labels of ``mask``: one particle per core of the ``auxiliary`` map (see :func:`peak_seeds`;
    with ``peak_fraction`` 0 a core is simply a region above ``seed_threshold``)."""
    relief = Relief(np.asarray(auxiliary), mask)
    return relief.flood(relief.seeds(min_distance, peak_fraction, floor=seed_threshold))


__all__ = [
    "AUXILIARY_TARGETS",
    "Relief",
    "auxiliary_target",
    "flood_from_seeds",
    "instance_centre_map",
    "instance_distance_map",
    "peak_seeds",
    "seeded_labels",
]
