"""One image's counted particles and the user's corrections to them. Pure numpy: no web, no torch.

Every class has an instance map (0 background, particle ``i`` where it is ``i``), as the counting gives
it. A particle keeps its number through every correction, so a corrected table lines up with
``skipnas count``'s: a rejected particle stays in the map (shown struck out) but leaves the totals
and the exports; a split keeps the number for the piece around the first click and numbers the
others after the highest; a merge keeps the lowest number. Undo restores the state before an edit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from skipnas.count import particle_row
from skipnas.counting.measure import equivalent_diameter, particle_length
from skipnas.counting.postprocess import Detections
from skipnas.errors import SkipnasError

UNDO_BYTES = 256 * 2**20  # the snapshots kept for undo, per image, at most
_OUTLINE_TOLERANCE = 0.7  # px: outlines are simplified this much before they go to the page


class CorrectionError(SkipnasError):
    """An edit that cannot apply (a click on nothing, a split of one piece): the state is unchanged."""


@dataclass
class Particle:
    id: int
    class_name: str
    bbox: tuple[int, int, int, int]  # x, y, w, h
    area: int
    centroid: tuple[float, float]  # x, y
    confidence: float  # mean probability inside it
    length: float | None  # along the skeleton, for fibres
    origin: str = "counted"  # counted, added, split or merged
    kept: bool = True

    def row(self, file: str) -> dict[str, Any]:
        """The particle as a ``particles.csv`` row of ``skipnas count``."""
        return particle_row(file, self.id, self.class_name, self.bbox, self.area, self.length, self.confidence)


@dataclass
class _Snapshot:
    labels: dict[str, np.ndarray]
    particles: dict[str, dict[int, Particle]]

    @property
    def nbytes(self) -> int:
        return sum(labels.nbytes for labels in self.labels.values())


def _copy_particles(particles: dict[str, dict[int, Particle]]) -> dict[str, dict[int, Particle]]:
    return {name: {pid: Particle(**vars(p)) for pid, p in found.items()} for name, found in particles.items()}


@dataclass
class ImageCorrections:
    """The particles of one image, per class, with the edits a user makes to them.

    ``probabilities``: per class, the network's map at the image's size (for the confidence of
    new pieces and for seeding an added particle). ``threshold``: the counting's probability threshold.
    ``fibres``: measure lengths along the skeleton.
    """

    labels: dict[str, np.ndarray]
    probabilities: dict[str, np.ndarray]
    threshold: float
    fibres: bool = False
    particles: dict[str, dict[int, Particle]] = field(default_factory=dict)
    version: int = 0
    _undo: list[_Snapshot] = field(default_factory=list, repr=False)

    @classmethod
    def from_detections(
        cls, detections: dict[str, Detections], probabilities: dict[str, np.ndarray], threshold: float, fibres: bool = False
    ) -> ImageCorrections:
        state = cls({name: found.labels.astype(np.int32, copy=True) for name, found in detections.items()},
                    probabilities, threshold, fibres)
        for name, found in detections.items():
            state.particles[name] = {}
            for row in found.rows():
                bbox = (int(row["bbox"][0]), int(row["bbox"][1]), int(row["bbox"][2]), int(row["bbox"][3]))
                length = particle_length(state.labels[name], row["id"], bbox) if fibres else None
                state.particles[name][row["id"]] = Particle(
                    row["id"], name, bbox, row["area"], (row["centroid"][0], row["centroid"][1]), row["confidence"], length
                )
        return state

    # ---- what the page shows ------------------------------------------------------------------

    @property
    def shape(self) -> tuple[int, int]:
        return next(iter(self.labels.values())).shape if self.labels else (0, 0)

    def kept(self) -> list[Particle]:
        return [p for found in self.particles.values() for p in sorted(found.values(), key=lambda p: p.id) if p.kept]

    def counts(self) -> dict[str, int]:
        """Kept particles per class."""
        return {name: sum(p.kept for p in found.values()) for name, found in self.particles.items()}

    def outline(self, particle: Particle) -> list[list[int]]:
        """The particle's outer contours as flat [x0, y0, x1, y1, ...] lists in image pixels."""
        x, y, w, h = particle.bbox
        crop = (self.labels[particle.class_name][y : y + h, x : x + w] == particle.id).astype(np.uint8)
        contours, _ = cv2.findContours(crop, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        outlines = []
        for contour in contours:
            simple = cv2.approxPolyDP(contour, _OUTLINE_TOLERANCE, True).reshape(-1, 2) + (x, y)
            outlines.append([int(v) for v in simple.ravel()])
        return outlines

    def anchor(self, particle: Particle) -> tuple[int, int]:
        """The pixel (x, y) deepest inside the particle, where its number goes: a curved fibre's
        centroid may lie off the fibre."""
        x, y, w, h = particle.bbox
        crop = np.pad((self.labels[particle.class_name][y : y + h, x : x + w] == particle.id).astype(np.uint8), 1)
        row, col = np.unravel_index(int(np.argmax(cv2.distanceTransform(crop, cv2.DIST_L2, 3))), crop.shape)
        return int(x + col - 1), int(y + row - 1)

    def particle_at(self, x: float, y: float) -> Particle | None:
        """The particle under image pixel (x, y): a kept one before a rejected one."""
        height, width = self.shape
        col, row = int(x), int(y)
        if not (0 <= row < height and 0 <= col < width):
            return None
        under = [self.particles[name].get(int(labels[row, col])) for name, labels in self.labels.items() if labels[row, col]]
        under = [p for p in under if p is not None]
        return next((p for p in under if p.kept), under[0] if under else None)

    def find(self, class_name: str, particle_id: int) -> Particle:
        particle = self.particles.get(class_name, {}).get(particle_id)
        if particle is None:
            raise CorrectionError(f"no particle {particle_id} of class {class_name!r} in this image")
        return particle

    # ---- edits --------------------------------------------------------------------------------

    def _remember(self) -> None:
        self._undo.append(_Snapshot({n: m.copy() for n, m in self.labels.items()}, _copy_particles(self.particles)))
        while len(self._undo) > 1 and sum(s.nbytes for s in self._undo) > UNDO_BYTES:
            self._undo.pop(0)
        self.version += 1

    def undo(self) -> None:
        if not self._undo:
            raise CorrectionError("nothing to undo")
        snapshot = self._undo.pop()
        self.labels, self.particles = snapshot.labels, snapshot.particles
        self.version += 1

    def toggle(self, class_name: str, particle_id: int) -> Particle:
        """Reject a kept particle, or keep a rejected one again."""
        particle = self.find(class_name, particle_id)
        self._remember()
        particle.kept = not particle.kept
        return particle

    def add_polygon(self, points: list[tuple[float, float]], class_name: str | None = None) -> Particle:
        """A missed particle drawn as a polygon (image pixels); it takes only pixels no kept particle holds."""
        if len(points) < 3:
            raise CorrectionError("draw at least three points around the missed particle")
        region = np.zeros(self.shape, np.uint8)
        cv2.fillPoly(region, [np.round(np.asarray(points, np.float64)).astype(np.int32)], 1)
        return self._add(region.astype(bool), class_name)

    def add_seed(self, x: float, y: float, class_name: str | None = None) -> Particle:
        """A missed particle grown from a click: the connected pixels around it where the network's
        probability is above half the counting threshold, else a disk as wide as the image's typical particle."""
        name = class_name or next(iter(self.labels))
        height, width = self.shape
        col, row = int(x), int(y)
        if not (0 <= row < height and 0 <= col < width):
            raise CorrectionError(f"({x:.0f}, {y:.0f}) lies outside the image")
        taken = self._taken(name)
        if taken[row, col]:
            raise CorrectionError(f"that spot is already particle {int(self.labels[name][row, col])}; reject or split it instead")
        free = ~taken
        likely = (self.probabilities[name] > self.threshold / 2) & free
        region = np.zeros(self.shape, bool)
        typical = self._typical_area(name)
        if likely[row, col]:
            _, components = cv2.connectedComponents(likely.astype(np.uint8), connectivity=8)
            region = components == components[row, col]
        if not region.any() or region.sum() > 4 * typical:
            radius = max(2, round(equivalent_diameter(typical) / 2))
            disk = np.zeros(self.shape, np.uint8)
            cv2.circle(disk, (col, row), radius, 1, -1)
            region = disk.astype(bool) & free
        return self._add(region, name)

    def split(self, class_name: str, particle_id: int, seeds: list[tuple[float, float]]) -> list[Particle]:
        """Cut one particle into as many pieces as clicks inside it (a watershed of its distance map)."""
        particle = self.find(class_name, particle_id)
        x, y, w, h = particle.bbox
        inside = self.labels[class_name][y : y + h, x : x + w] == particle_id
        points = list(dict.fromkeys((int(col) - x, int(row) - y) for col, row in seeds))  # distinct, in click order
        if len(points) < 2:
            raise CorrectionError("click at least two points inside the particle to split it")
        if any(not (0 <= r < h and 0 <= c < w and inside[r, c]) for c, r in points):
            raise CorrectionError(f"every click of a split must lie inside particle {particle_id}")
        pieces = _watershed_pieces(inside, points)
        if sum(piece.any() for piece in pieces) < 2:
            raise CorrectionError(f"particle {particle_id} cannot be cut there; click farther apart")
        self._remember()
        crop = self.labels[class_name][y : y + h, x : x + w]
        kept_pieces = [piece for piece in pieces if piece.any()]
        first_new = self._next_id(class_name)
        ids = [particle_id, *range(first_new, first_new + len(kept_pieces) - 1)]
        for pid, piece in zip(ids, kept_pieces):
            crop[piece] = pid
        return [self._measure(class_name, pid, "split") for pid in ids]

    def merge(self, class_name: str, particle_ids: list[int]) -> Particle:
        """Join particles of one class into one, numbered as the lowest of them."""
        ids = sorted(set(particle_ids))
        if len(ids) < 2:
            raise CorrectionError("pick two different particles to merge")
        for pid in ids:
            self.find(class_name, pid)
        self._remember()
        labels = self.labels[class_name]
        keep = ids[0]
        for pid in ids[1:]:
            labels[labels == pid] = keep
            del self.particles[class_name][pid]
        return self._measure(class_name, keep, "merged")

    # ---- helpers ------------------------------------------------------------------------------

    def _taken(self, class_name: str) -> np.ndarray:
        labels = self.labels[class_name]
        kept_ids = np.array([p.id for p in self.particles[class_name].values() if p.kept], np.int32)
        return np.isin(labels, kept_ids) if kept_ids.size else np.zeros(labels.shape, bool)

    def _typical_area(self, class_name: str) -> float:
        areas = [p.area for p in self.particles[class_name].values() if p.kept]
        return float(np.median(areas)) if areas else 50.0

    def _next_id(self, class_name: str) -> int:
        return max(self.particles[class_name], default=0) + 1

    def _add(self, region: np.ndarray, class_name: str | None) -> Particle:
        name = class_name or next(iter(self.labels))
        if name not in self.labels:
            raise CorrectionError(f"no class {name!r}; the model counts {', '.join(self.labels)}")
        taken = self._taken(name) & region
        if not region.any() or np.count_nonzero(taken) * 2 > np.count_nonzero(region):
            raise CorrectionError("that spot is mostly a particle already; reject or split it instead")
        region = region & ~taken
        self._remember()
        pid = self._next_id(name)
        # a rejected particle under the new one loses those pixels to it
        self.labels[name][region] = pid
        for other in list(self.particles[name].values()):
            if not other.kept:
                self._remeasure_or_drop(name, other.id)
        return self._measure(name, pid, "added")

    def _remeasure_or_drop(self, class_name: str, particle_id: int) -> None:
        if np.any(self.labels[class_name] == particle_id):
            kept = self.particles[class_name][particle_id].kept
            self._measure(class_name, particle_id, self.particles[class_name][particle_id].origin).kept = kept
        else:
            del self.particles[class_name][particle_id]

    def _measure(self, class_name: str, particle_id: int, origin: str) -> Particle:
        inside = self.labels[class_name] == particle_id
        rows, cols = np.nonzero(inside)
        x, y = int(cols.min()), int(rows.min())
        bbox = (x, y, int(cols.max()) - x + 1, int(rows.max()) - y + 1)
        particle = Particle(
            particle_id, class_name, bbox, int(rows.size), (float(cols.mean()), float(rows.mean())),
            float(self.probabilities[class_name][inside].mean()),
            particle_length(self.labels[class_name], particle_id, bbox) if self.fibres else None, origin,
        )
        self.particles[class_name][particle_id] = particle
        return particle


def _watershed_pieces(inside: np.ndarray, seeds: list[tuple[int, int]]) -> list[np.ndarray]:
    """The pieces of a bool mask flooded from ``seeds`` (col, row) over its inverted distance map, one
    per seed, that together cover the mask: touching round particles part at their neck."""
    from skimage.segmentation import watershed  # scikit-image's import is slow; only a split needs it

    markers = np.zeros(inside.shape, np.int32)
    for number, (col, row) in enumerate(seeds, start=1):
        markers[row, col] = number
    distance = cv2.distanceTransform(np.pad(inside, 1).astype(np.uint8), cv2.DIST_L2, 5)[1:-1, 1:-1]
    flooded = watershed(-distance, markers, mask=inside)
    return [flooded == number for number in range(1, len(seeds) + 1)]
