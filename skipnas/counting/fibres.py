"""Fibre-aware counting: follow each strand of the mask's skeleton through its junctions.

Counting connected blobs merges crossing fibres into one; this method separates them:

1. skeletonise the mask (scikit-image's ``skeletonize``);
2. find the junctions (skeleton pixels with three or more skeleton neighbours) and grow each into a
   disc of ``junction_scale`` times the strand's half-width there, so the skeleton's distorted
   stretch around a crossing belongs to the junction; overlapping discs are one junction;
3. cut the skeleton at the junctions into segments (simple paths, or rings with no junction), drop
   spurs (a segment with a free tip no longer than its junction's radius, or 3 px: the skeleton's
   artefacts at a blob's corners) and absorb bridges (a segment joining two junctions that is no
   longer than their radii together: two nearby junctions are one crossing);
4. at each junction, pair the segment ends that continue each other most straight (the smallest
   turn between one end's direction and the other's), greedily, up to ``max_turn`` degrees; a
   junction with just two ends always joins them. Two crossing lines make four ends and two
   pairs; three lines crossing at one point make six ends and three pairs; in a T the bar's two
   ends pair and the stem ends there. A loop (a segment leaving and re-entering one junction) is
   part of a curled fibre, so it always continues the fibre it leaves from;
5. strands are the groups of segments joined by pairs (union-find); every mask pixel goes to the
   strand of its nearest skeleton pixel, so where fibres cross each pixel belongs to one of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from skipnas.errors import SkipnasError

_NEIGHBOURS = np.ones((3, 3), np.float32)


def skeleton_of(mask: np.ndarray) -> np.ndarray:
    """bool HxW one-pixel-wide skeleton of a 0/1 mask (scikit-image, Zhang's thinning)."""
    # imported here: scikit-image's import is slow and only this method needs it
    try:
        from skimage.morphology import skeletonize
    except ImportError:
        raise SkipnasError(
            "fibre counting needs scikit-image, which this environment lacks: pip install scikit-image "
            "(or reinstall skipnas)"
        ) from None

    return skeletonize(np.asarray(mask) > 0)


def _neighbour_count(pixels: np.ndarray) -> np.ndarray:
    """int32: how many of each pixel's 8 neighbours are set."""
    pixels = pixels.astype(np.float32)
    total = cv2.filter2D(pixels, -1, _NEIGHBOURS, borderType=cv2.BORDER_CONSTANT)
    return np.rint(total - pixels).astype(np.int32)


class _UnionFind:
    def __init__(self, size: int) -> None:
        self.parent = list(range(size))

    def find(self, item: int) -> int:
        while self.parent[item] != item:
            self.parent[item] = self.parent[self.parent[item]]
            item = self.parent[item]
        return item

    def union(self, a: int, b: int) -> None:
        self.parent[self.find(a)] = self.find(b)


@dataclass
class SkeletonGraph:
    """Segments of a skeleton cut at its junctions.

    ``segments`` is int32 HxW (0 = not a segment pixel, s = segment s); ``junctions`` int32 HxW
    labels the junction discs; ``ends`` holds one row per segment end: (segment, junction or 0
    for a free tip, y, x); ``junction_radius[k]`` is junction k's disc radius.
    """

    segments: np.ndarray
    segment_count: int
    junctions: np.ndarray
    junction_count: int
    junction_radius: np.ndarray
    ends: np.ndarray

    def segment_length(self) -> np.ndarray:
        """Pixels per segment (index 0 unused)."""
        return np.bincount(self.segments.ravel(), minlength=self.segment_count + 1)


def skeleton_graph(skeleton: np.ndarray, half_width: np.ndarray, junction_scale: float) -> SkeletonGraph:
    """The graph of ``skeleton`` (bool HxW); ``half_width`` is the mask's distance transform."""
    skeleton = np.asarray(skeleton, bool)
    branching = skeleton & (_neighbour_count(skeleton) >= 3)
    discs = np.zeros(skeleton.shape, np.uint8)
    ys, xs = np.nonzero(branching)
    radii = np.maximum(2, np.rint(junction_scale * half_width[ys, xs])).astype(np.int32)
    for y, x, radius in zip(ys.tolist(), xs.tolist(), radii.tolist()):
        cv2.circle(discs, (x, y), radius, 1, thickness=-1)
    junction_count, junctions = cv2.connectedComponents(discs, connectivity=8, ltype=cv2.CV_32S)
    junction_radius = np.zeros(junction_count, np.float64)
    if len(ys):
        np.maximum.at(junction_radius, junctions[ys, xs], radii)

    segment_pixels = (skeleton & (discs == 0)).astype(np.uint8)
    segment_count, segments = cv2.connectedComponents(segment_pixels, connectivity=8, ltype=cv2.CV_32S)
    # the junction each segment end touches: the label of a neighbouring skeleton pixel inside a disc
    junction_skeleton = np.where(skeleton, junctions, 0).astype(np.float32)
    touching = cv2.dilate(junction_skeleton, np.ones((3, 3), np.uint8)).astype(np.int32)
    neighbours = _neighbour_count(segment_pixels)
    rows = []
    tips_y, tips_x = np.nonzero(segment_pixels.astype(bool) & (neighbours <= 1))
    for y, x in zip(tips_y.tolist(), tips_x.tolist()):
        segment = int(segments[y, x])
        if neighbours[y, x] == 1:
            rows.append((segment, int(touching[y, x]), y, x))
            continue
        # a one-pixel segment has two ends at one pixel, each touching its own junction
        window = junctions[max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2]
        window_skeleton = skeleton[max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2]
        near = np.unique(window[window_skeleton & (window > 0)])
        # next to one junction only, its other end is a free tip (a stub the spur rule drops), not a loop
        near = [int(k) for k in near] + [0, 0]
        rows.append((segment, near[0], y, x))
        rows.append((segment, near[1], y, x))
    ends = np.asarray(rows, np.int64).reshape(-1, 4)
    return SkeletonGraph(segments, segment_count - 1, junctions, junction_count - 1, junction_radius, ends)


def _end_direction(points: np.ndarray, end: np.ndarray, reach: float) -> np.ndarray:
    """Unit vector (y, x) from the segment's pixels within ``reach`` of ``end`` towards ``end``."""
    near = points[np.sum((points - end) ** 2, axis=1) <= reach * reach]
    vector = end - near.mean(axis=0)
    length = float(np.hypot(*vector))
    return vector / length if length > 0 else np.zeros(2)


def _turns(directions: np.ndarray) -> np.ndarray:
    """Degrees each end would turn to continue into each other end (0 = straight on)."""
    # an end's direction points into the junction; its continuation points out of it
    return np.degrees(np.arccos(np.clip(-(directions @ directions.T), -1.0, 1.0)))


def _pair_ends(segments: list[int], directions: np.ndarray, max_turn: float) -> list[tuple[int, int]]:
    """Pairs of ends (indices) at one junction that continue each other, straightest first.

    A loop (a segment with both ends here) is part of a curled fibre, never a fibre of its own:
    one of its ends first joins the straightest other end, whatever the turn. Then a junction
    left with two ends joins them; otherwise ends pair greedily, turning at most ``max_turn``.
    """
    turn = _turns(directions)
    open_ends = list(range(len(segments)))
    pairs: list[tuple[int, int]] = []

    def take(i: int, j: int) -> None:
        pairs.append((i, j))
        open_ends.remove(i)
        open_ends.remove(j)

    loops = [segment for segment in dict.fromkeys(segments) if segments.count(segment) == 2]
    for loop in loops:
        own = [i for i in open_ends if segments[i] == loop]
        others = [j for j in open_ends if segments[j] != loop]
        if len(own) == 2 and others:
            _, i, j = min((turn[i, j], i, j) for i in own for j in others)
            take(i, j)
    if len(open_ends) == 2:
        take(*open_ends)
    candidates = sorted(
        (turn[i, j], i, j)
        for i in open_ends
        for j in open_ends
        if i < j and segments[i] != segments[j] and turn[i, j] <= max_turn
    )
    for _, i, j in candidates:
        if i in open_ends and j in open_ends:
            take(i, j)
    return pairs


def follow_strands(graph: SkeletonGraph, max_turn: float) -> np.ndarray:
    """int32 per segment (index 0 unused): the strand it belongs to (1..S), 0 for dropped segments."""
    count = graph.segment_count
    length = graph.segment_length()
    ends = graph.ends
    free_tips = np.zeros(count + 1, bool)
    free_tips[ends[ends[:, 1] == 0, 0]] = True
    junction_merge = _UnionFind(graph.junction_count + 1)
    dropped = np.zeros(count + 1, bool)
    for segment in range(1, count + 1):
        at = ends[(ends[:, 0] == segment) & (ends[:, 1] > 0), 1]
        if len(at) == 0:
            continue
        radius = graph.junction_radius[at].max()
        if free_tips[segment] and length[segment] <= max(radius, 3):
            dropped[segment] = True  # spur
        elif len(at) == 2 and at[0] != at[1] and length[segment] <= graph.junction_radius[at].sum():
            dropped[segment] = True  # bridge between two junctions of one crossing
            junction_merge.union(int(at[0]), int(at[1]))

    ys, xs = np.nonzero(graph.segments)
    ids = graph.segments[ys, xs]
    order = np.argsort(ids, kind="stable")
    starts = np.searchsorted(ids[order], np.arange(count + 2))
    points = np.stack([ys[order], xs[order]], axis=1).astype(np.float64)

    strands = _UnionFind(count + 1)
    attached = [row for row in ends.tolist() if row[1] > 0 and not dropped[row[0]]]
    by_junction: dict[int, list[tuple[int, np.ndarray]]] = {}
    for segment, junction, y, x in attached:
        root = junction_merge.find(junction)
        reach = max(6.0, 2.5 * graph.junction_radius[junction])
        direction = _end_direction(points[starts[segment] : starts[segment + 1]], np.array([y, x], float), reach)
        by_junction.setdefault(root, []).append((segment, direction))
    for members in by_junction.values():
        if len(members) < 2:
            continue
        directions = np.stack([direction for _, direction in members])
        for i, j in _pair_ends([segment for segment, _ in members], directions, max_turn):
            strands.union(members[i][0], members[j][0])

    strand_of = np.zeros(count + 1, np.int32)
    roots: dict[int, int] = {}
    for segment in range(1, count + 1):
        if not dropped[segment]:
            strand_of[segment] = roots.setdefault(strands.find(segment), len(roots) + 1)
    return strand_of


def fibre_labels(mask: np.ndarray, max_turn: float = 45.0, junction_scale: float = 1.5) -> np.ndarray:
    """int32 labels of ``mask`` (0/1 HxW), one per followed strand; see the module for the method."""
    mask = np.ascontiguousarray(mask, dtype=np.uint8)
    if not mask.any():
        return np.zeros(mask.shape, np.int32)
    blob_count, blobs = cv2.connectedComponents(mask, connectivity=8, ltype=cv2.CV_32S)
    half_width = cv2.distanceTransform(mask, cv2.DIST_L2, 5)
    graph = skeleton_graph(skeleton_of(mask), half_width, junction_scale)
    strand_of = follow_strands(graph, max_turn)
    strand_pixels = strand_of[graph.segments]

    # every mask pixel takes the strand of its nearest kept skeleton pixel
    labels = np.zeros(mask.shape, np.int32)
    if strand_pixels.any():
        not_strand = (strand_pixels == 0).astype(np.uint8)
        _, nearest = cv2.distanceTransformWithLabels(not_strand, cv2.DIST_L2, 5, labelType=cv2.DIST_LABEL_PIXEL)
        lookup = np.zeros(int(nearest.max()) + 1, np.int32)
        on_strand = strand_pixels > 0
        lookup[nearest[on_strand]] = strand_pixels[on_strand]
        labels = np.where(mask > 0, lookup[nearest], 0).astype(np.int32)

    # a blob keeps its own strands: pixels that went to another blob's strand (or to none) fall back
    # to the blob's first strand, or to a new particle when all its skeleton was spurs
    strand_count = int(strand_of.max(initial=0))
    blob_of_strand = np.zeros(strand_count + 1, np.int32)
    blob_of_strand[strand_pixels[strand_pixels > 0]] = blobs[strand_pixels > 0]
    first_strand = np.zeros(blob_count, np.int32)
    for strand in range(strand_count, 0, -1):
        first_strand[blob_of_strand[strand]] = strand
    orphan_blobs = np.nonzero(first_strand[1:] == 0)[0] + 1
    first_strand[orphan_blobs] = strand_count + 1 + np.arange(len(orphan_blobs), dtype=np.int32)
    stray = (mask > 0) & (blob_of_strand[labels] != blobs)
    labels[stray] = first_strand[blobs[stray]]
    return labels


__all__ = ["SkeletonGraph", "fibre_labels", "follow_strands", "skeleton_graph", "skeleton_of"]
