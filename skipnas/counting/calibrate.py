"""Choosing the post-processing on validation images: a small grid search minimising count errors.

Every setting of the grid (threshold x erode x dilate x min_area x min_peak_probability x counting
method, each method with its own settings: the fibre method's maximum turn, the seeded method's
seed threshold and peak fraction, and where the grid gives them, the peak window of watershed and
seeded) is scored on all images: its count and which particles it gets right (matched to the true
ones). The best gets them right most steadily (``selection``, see :func:`calibrate`); ties go to
the lower count MAE, the higher pooled Dice, then to the simpler setting (the methods in the order
of ``METHODS``, fewer and smaller morphology steps, threshold nearer 0.5, smaller min_area, no peak
filter). Work is shared: each threshold, erosion and
dilation is computed once per image for every method, each mask's relief (its distance transform
for watershed, the auxiliary map for seeded: :class:`~skipnas.counting.seeded.Relief`) once for
all of that method's settings, and the min_area and min_peak_probability values only filter the
particles already labelled. Methods that need the network's auxiliary map are tried only when it
is given.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

import numpy as np

from skipnas.counting.postprocess import (
    AUXILIARY_METHODS,
    METHODS,
    PostprocessConfig,
    PostprocessConfigError,
    as_probabilities,
    dilate_mask,
    erode_mask,
    label_particles,
    particle_peaks,
    particle_relief,
    threshold_probabilities,
)
from skipnas.counting.seeded import Relief
from skipnas.data.io import count_instances
from skipnas.data.rescale import resize_instances
from skipnas.errors import SkipnasError
from skipnas.progress import progress_bar
from skipnas.runtime.metrics import PixelMetrics, matched_count, object_metrics, overlap_pairs, pixel_confusion

T = TypeVar("T")
U = TypeVar("U")


@dataclass(frozen=True)
class CalibrationGrid:
    """The values tried; ``methods=None`` keeps the base config's method, ``watershed_min_distance=None`` its peak window."""

    # dense, touching particles count best with a high threshold, an erosion, a large minimum area
    # and watershed splitting; the grid keeps the simpler settings for easier data
    thresholds: tuple[float, ...] = (0.4, 0.5, 0.6, 0.7, 0.8)
    erode: tuple[int, ...] = (0, 3)
    dilate: tuple[int, ...] = (0, 3)
    min_area: tuple[int, ...] = (0, 30, 100, 300, 600)
    # a particle's highest probability (0: no filter); above 0, a low threshold can keep faint particles whole
    min_peak_probability: tuple[float, ...] = (0.0,)
    methods: tuple[str, ...] | None = METHODS
    # each method's own settings, tried only with that method
    fibre_max_turn: tuple[float, ...] = (45.0,)
    fibre_junction_scale: tuple[float, ...] = (1.5,)
    seed_threshold: tuple[float, ...] = (0.3, 0.5, 0.7)
    seed_peak_fraction: tuple[float, ...] = (0.0, 0.8)
    # the peak window of watershed and seeded (a window near the particles' radius splits a small
    # particle from a large neighbour); None keeps the base's
    watershed_min_distance: tuple[int, ...] | None = (3, 5, 10)

    def __post_init__(self) -> None:
        for item in fields(self):
            values = getattr(self, item.name)
            if values is None and item.name in ("methods", "watershed_min_distance"):
                continue
            if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) == 0:
                raise PostprocessConfigError(f"calibration grid {item.name} must be a non-empty list, got {values!r}")
            object.__setattr__(self, item.name, tuple(dict.fromkeys(values)))  # drop repeats, keep order
        # every value must make a valid config
        for threshold in self.thresholds:
            PostprocessConfig(threshold=threshold)
        for value in self.erode:
            PostprocessConfig(erode=value)
        for value in self.dilate:
            PostprocessConfig(dilate=value)
        for value in self.min_area:
            PostprocessConfig(min_area=value)
        for value in self.min_peak_probability:
            PostprocessConfig(min_peak_probability=value)
        for method in self.methods or ():
            PostprocessConfig(method=method)
        for names in _METHOD_FIELDS.values():
            for name in names:
                for value in getattr(self, name) or ():
                    PostprocessConfig(**{name: value})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CalibrationGrid:
        known = {item.name for item in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise PostprocessConfigError(
                f"unknown calibration grid field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        return cls(**{key: (None if value is None else tuple(value)) for key, value in data.items()})

    def method_settings(self, method: str) -> list[dict[str, Any]]:
        """The method-specific settings tried with ``method`` (one empty dict for a method without any)."""
        names = [n for n in _METHOD_FIELDS.get(method, ()) if getattr(self, n) is not None]
        settings = [dict(zip(names, values, strict=True)) for values in itertools.product(*(getattr(self, n) for n in names))]
        if method == "seeded" and self.watershed_min_distance is not None:
            # with no peak fraction a core is any region above the seed threshold: the window plays no part
            for setting in settings:
                if setting["seed_peak_fraction"] == 0:
                    setting["watershed_min_distance"] = self.watershed_min_distance[0]
        unique = {tuple(sorted(setting.items())): setting for setting in settings}
        return list(unique.values())

    def method_configs(self, base: PostprocessConfig, auxiliary: bool = True) -> list[PostprocessConfig]:
        """``base`` with each method and its own settings (``methods=None``: base's method); the methods
        needing the network's auxiliary map only when it is there."""
        methods = [m for m in self.methods or (base.method,) if auxiliary or m not in AUXILIARY_METHODS]
        return [base.replace(method=m, **extra) for m in methods for extra in self.method_settings(m)]

    def size(self, base: PostprocessConfig | None = None, auxiliary: bool = True) -> int:
        """The number of settings :func:`calibrate` tries with this ``base`` and with or without auxiliary maps."""
        masks = len(self.thresholds) * len(self.erode) * len(self.dilate) * len(self.min_area) * len(self.min_peak_probability)
        return masks * len(self.method_configs(base or PostprocessConfig(), auxiliary))


_METHOD_FIELDS: dict[str, tuple[str, ...]] = {
    "watershed": ("watershed_min_distance",),
    "fibres": ("fibre_max_turn", "fibre_junction_scale"),
    "seeded": ("seed_threshold", "seed_peak_fraction", "watershed_min_distance"),
}


def _simplicity(config: PostprocessConfig) -> tuple[float, ...]:
    """Smaller is simpler: blobs, fewer then smaller morphology steps, threshold near 0.5, small min_area, no peak filter."""
    steps = int(config.erode > 0) + int(config.dilate > 0)
    return (
        float(METHODS.index(config.method)),
        float(steps),
        float(config.erode + config.dilate),
        abs(config.threshold - 0.5),
        float(config.min_area),
        config.min_peak_probability,
        config.seed_peak_fraction,
        abs(config.seed_threshold - 0.5),
        -float(config.watershed_min_distance),  # a wider window: fewer cores
    )


@dataclass
class _Scores:
    """One setting's segmentation confusion and, per image, its count error and the particles matching gets wrong."""

    tp: int = 0
    fp: int = 0
    fn: int = 0
    errors: list[int] = field(default_factory=list)
    # counted particles matching no true one, and true ones matched by none
    false_particles: list[int] = field(default_factory=list)
    missed_particles: list[int] = field(default_factory=list)


SELECTIONS: tuple[str, ...] = ("stable", "mean", "objects", "balanced")
# the rule training, the search and the classical baseline choose by (RESULTS: chosen on val with the
# counting chosen on training images alone, on the beads, the fibres and the demo)
DEFAULT_SELECTION = "objects"
# bootstrap resamples of the images, and the quantile of a setting's resampled error that the resampled selections minimise
BOOTSTRAP_RESAMPLES = 200
STABLE_QUANTILE = 0.8
_RESAMPLED_AT = f"taken at its {STABLE_QUANTILE:.0%} quantile over {BOOTSTRAP_RESAMPLES} bootstrap resamples of the images"
OBJECTIVES: dict[str, str] = {
    "stable": f"lowest count MAE, {_RESAMPLED_AT}",
    "mean": "lowest count MAE",
    "objects": f"fewest particles wrong per image (counted ones matching no true particle plus true ones matched by none), {_RESAMPLED_AT}",
    "balanced": f"lowest per-image larger of the counted particles matching no true one and the true ones matched by none, {_RESAMPLED_AT}",
}


def check_selection(selection: str, name: str = "selection") -> str:
    """``selection`` if it is one of ``SELECTIONS``; else a user error naming ``name`` (the option or field given)."""
    if selection not in SELECTIONS:
        raise PostprocessConfigError(f"{name} must be one of {', '.join(SELECTIONS)}, got {selection!r}")
    return selection


def bootstrap_maes(abs_errors: np.ndarray, resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> np.ndarray:
    """(settings, resamples) count MAEs of ``abs_errors`` (settings, images) over resamples of the
    images drawn with replacement; the same resamples for every setting, so they compare alike."""
    images = abs_errors.shape[1]
    draws = np.random.default_rng(seed).integers(0, images, size=(resamples, images))
    # how often each image is drawn in each resample: one matrix product instead of a gather per resample
    weights = np.zeros((resamples, images))
    np.add.at(weights, (np.repeat(np.arange(resamples), images), draws.ravel()), 1.0)
    return abs_errors @ weights.T / images


def _same_picture(map_shape: tuple[int, ...], mask_shape: tuple[int, ...]) -> bool:
    """Whether a map is its mask's picture, at the mask's size or resized by an input scale (to a pixel)."""
    if len(map_shape) != 2 or len(mask_shape) != 2:
        return False
    if map_shape == mask_shape:
        return True
    (map_h, map_w), (mask_h, mask_w) = map_shape, mask_shape
    # resized by one scale, each side rounded: the two sides' ratios differ by at most a pixel's worth
    return abs(map_h * mask_w - map_w * mask_h) <= max(mask_h, mask_w)


def _check_inputs(
    probs: Sequence[np.ndarray], true_instances: Sequence[np.ndarray], auxiliary: Sequence[np.ndarray] | None
) -> None:
    if len(probs) != len(true_instances):
        raise ValueError(f"calibrate: {len(probs)} probability maps but {len(true_instances)} masks")
    if auxiliary is not None and (
        len(auxiliary) != len(probs) or any(np.shape(a) != np.shape(p) for a, p in zip(auxiliary, probs))
    ):
        raise ValueError("calibrate: the auxiliary maps must match the probability maps one to one, shape for shape")
    if not probs:
        raise SkipnasError("no labelled validation images to calibrate the post-processing on; add masks to val/")
    for index, (prob, true) in enumerate(zip(probs, true_instances, strict=True)):
        if not _same_picture(np.shape(prob), np.shape(true)):
            raise SkipnasError(
                f"calibration image {index}: probability map is {np.shape(prob)} but its mask is {np.shape(true)}; "
                "make the mask the image's size"
            )


def calibrate(
    probs: Sequence[np.ndarray],
    true_instances: Sequence[np.ndarray],
    base: PostprocessConfig | None = None,
    grid: CalibrationGrid | Mapping[str, Any] | None = None,
    auxiliary: Sequence[np.ndarray] | None = None,
    selection: str = DEFAULT_SELECTION,
    progress: bool = False,
) -> tuple[PostprocessConfig, dict[str, Any]]:
    """The grid setting that counts these images best (ties: see the module), and the table.

    ``selection`` (default ``DEFAULT_SELECTION``, ``"objects"``) is the rule. ``"stable"`` takes the
    lowest ``STABLE_QUANTILE`` quantile of the count MAE over bootstrap resamples of the images: on
    a few images a setting that counts one image exactly and another badly loses to one that counts every image nearly right, which carries over to new
    images more often. ``"mean"`` takes the lowest count MAE on the images as they are. Two choose
    by the particles, as :func:`~skipnas.runtime.metrics.match_objects` matches them, at the same
    quantile over the same resamples: ``"objects"`` the fewest wrong per image (counted particles
    matching no true one plus true ones matched by none), where a merge cannot cancel a split;
    ``"balanced"`` the lowest larger of the two per image, which is half that sum plus half the
    count error.

    ``base`` supplies the settings the grid does not vary (iterations, the watershed's peak fraction).
    The maps may be at a model's input scale, smaller than the masks: the settings' pixel sizes are
    then the maps'. ``auxiliary``: the network's auxiliary maps, one per probability map, for the methods that
    need them (without them those methods are left out). ``progress``: a bar of the masks (threshold,
    erosion and dilation) tried. The
    table holds ``images``, ``settings``, ``objective``, ``best`` (the winning row) and
    ``results``: one row per setting, best first, with its config fields, ``count_mae``,
    ``count_mse``, ``exact_count_accuracy``, ``stable_count_mae``, ``object_errors`` (particles wrong
    per image), ``object_precision``, ``object_recall`` and ``dice``; ``spread``: the
    chosen setting's count MAE over the resamples (5th and 95th percentile) and its errors per image;
    the particles calibrated on and how many settings were tried.
    """
    return calibrate_each(probs, true_instances, base, grid, auxiliary, (selection,), progress)[selection]


def calibrate_each(
    probs: Sequence[np.ndarray],
    true_instances: Sequence[np.ndarray],
    base: PostprocessConfig | None = None,
    grid: CalibrationGrid | Mapping[str, Any] | None = None,
    auxiliary: Sequence[np.ndarray] | None = None,
    selections: Sequence[str] = (DEFAULT_SELECTION,),
    progress: bool = False,
) -> dict[str, tuple[PostprocessConfig, dict[str, Any]]]:
    """:func:`calibrate` under each of ``selections``, the grid scored once: selection -> (setting, table)."""
    for selection in selections:
        check_selection(selection)
    base = base or PostprocessConfig()
    if grid is None:
        grid = CalibrationGrid()
    elif not isinstance(grid, CalibrationGrid):
        grid = CalibrationGrid.from_dict(grid)
    _check_inputs(probs, true_instances, auxiliary)
    true_counts = [count_instances(true) for true in true_instances]
    scores = _score_grid(probs, true_instances, true_counts, base, grid, auxiliary, progress)
    return {selection: _rank(scores, true_counts, selection) for selection in selections}


def _score_grid(
    probs: Sequence[np.ndarray],
    true_instances: Sequence[np.ndarray],
    true_counts: Sequence[int],
    base: PostprocessConfig,
    grid: CalibrationGrid,
    auxiliary: Sequence[np.ndarray] | None,
    progress: bool,
) -> dict[PostprocessConfig, _Scores]:
    """Every setting of ``grid`` scored on every image."""
    settings = grid.method_configs(base, auxiliary is not None)
    if not settings:
        raise PostprocessConfigError(
            f"calibration grid methods {', '.join(grid.methods or (base.method,))} all need the auxiliary map "
            "of a model trained with an auxiliary head; add a method such as blobs"
        )
    # Dice (a tie-break) and the particle matching on the maps' pixels; the counts always come from the masks as drawn
    true_at_maps = [resize_instances(np.asarray(true), np.shape(prob)) for prob, true in zip(probs, true_instances)]
    truths = [true != 0 for true in true_at_maps]
    filters = list(itertools.product(grid.min_area, grid.min_peak_probability))
    # checked and converted once: every threshold and the particles' peaks read the same maps
    probs = [as_probabilities(prob) for prob in probs]
    # particle peaks are needed only where the grid filters by them
    filter_peaks = any(grid.min_peak_probability)
    scores: dict[PostprocessConfig, _Scores] = {}
    masks_tried = len(grid.thresholds) * len(grid.erode) * len(grid.dilate)
    with progress_bar("choosing the counting setting", total=masks_tried, enabled=progress) as bar:
        for threshold in grid.thresholds:
            binaries = [threshold_probabilities(prob, threshold) for prob in probs]
            # the segmentation's Dice, as Evaluation measures it: the threshold alone decides it
            confusion = np.sum([pixel_confusion(binary, truth)[:3] for binary, truth in zip(binaries, truths)], axis=0)
            for erode in grid.erode:
                eroded = [erode_mask(binary, erode, base.erode_iterations) for binary in binaries]
                for dilate in grid.dilate:
                    masks = [dilate_mask(mask, dilate, base.dilate_iterations) for mask in eroded]
                    # per image, each method's relief (distance transform or auxiliary map) serves all its settings
                    reliefs: list[dict[str, Relief | None]] = [{} for _ in masks]
                    for setting in settings:
                        shared = setting.replace(threshold=threshold, erode=erode, dilate=dilate)
                        # built once per setting, not per image: a config validates itself on creation
                        by_filter = [
                            (
                                max(min_area, 1),
                                min_peak,
                                scores.setdefault(shared.replace(min_area=min_area, min_peak_probability=min_peak), _Scores(*confusion)),
                            )
                            for min_area, min_peak in filters
                        ]
                        for image, mask in enumerate(masks):
                            extra = None if auxiliary is None else auxiliary[image]
                            if shared.method not in reliefs[image]:
                                reliefs[image][shared.method] = particle_relief(mask, shared, extra)
                            labels = label_particles(mask, shared, extra, reliefs[image][shared.method])
                            areas = np.bincount(labels.ravel())[1:]
                            if filter_peaks:
                                # a particle the peak filter drops gets area 0, below every min_area (at least 1)
                                peaks = particle_peaks(labels, probs[image], len(areas) + 1)[1:]
                                areas_by_peak = {least: np.where(peaks >= least, areas, 0) for least in grid.min_peak_probability}
                            else:
                                areas_by_peak = {0.0: areas}
                            pairs = overlap_pairs(labels, true_at_maps[image])
                            for smallest, least_peak, score in by_filter:
                                kept = np.concatenate([[False], areas_by_peak[least_peak] >= smallest])
                                count = int(kept.sum())
                                matched = matched_count(pairs, kept)
                                score.errors.append(count - true_counts[image])
                                score.false_particles.append(count - matched)
                                score.missed_particles.append(true_counts[image] - matched)
                    bar.advance()
    return scores


def _rank(scores: Mapping[PostprocessConfig, _Scores], true_counts: Sequence[int], selection: str) -> tuple[PostprocessConfig, dict[str, Any]]:
    """The best setting under ``selection`` and :func:`calibrate`'s table."""
    images = len(true_counts)
    configs = list(scores)

    def per_image(name: str) -> np.ndarray:
        return np.array([getattr(scores[config], name) for config in configs], dtype=np.float64).reshape(len(configs), images)

    errors, false, missed = per_image("errors"), per_image("false_particles"), per_image("missed_particles")
    abs_errors = np.abs(errors)
    resampled = bootstrap_maes(abs_errors)
    stable = np.quantile(resampled, STABLE_QUANTILE, axis=1)
    per_image_criterion = {"objects": false + missed, "balanced": np.maximum(false, missed)}
    primary = (
        np.quantile(bootstrap_maes(per_image_criterion[selection]), STABLE_QUANTILE, axis=1)
        if selection in per_image_criterion
        else {"stable": stable, "mean": abs_errors.mean(axis=1)}[selection]
    )
    total_true = int(sum(true_counts))
    rows = []
    for index, config in enumerate(configs):
        score = scores[config]
        dice = PixelMetrics.from_counts(score.tp, score.fp, score.fn).dice
        mae = float(abs_errors[index].mean())
        matched = total_true - int(missed[index].sum())
        matches = object_metrics([(matched, int(false[index].sum()), int(missed[index].sum()))])
        rows.append(
            (
                # rounded so that float noise never outranks the tie-breaks
                (round(float(primary[index]), 9), mae, -dice, _simplicity(config)),
                index,
                config,
                {
                    **config.to_dict(),
                    "count_mae": mae,
                    "count_mse": float(np.mean(errors[index] ** 2)),
                    "exact_count_accuracy": float(np.mean(errors[index] == 0)),
                    "stable_count_mae": float(stable[index]),
                    "object_errors": float((false[index] + missed[index]).mean()),
                    "object_precision": matches["object_precision"],
                    "object_recall": matches["object_recall"],
                    "dice": dice,
                },
            )
        )
    rows.sort(key=lambda row: row[0])
    best_index = rows[0][1]
    table = {
        "images": images,
        "particles": total_true,
        "settings": len(rows),
        "selection": selection,
        "objective": f"{OBJECTIVES[selection]}, then lowest count MAE, highest Dice, the simplest setting",
        "spread": {
            "count_mae": float(abs_errors[best_index].mean()),
            "count_mae_p5": float(np.percentile(resampled[best_index], 5)),
            "count_mae_p95": float(np.percentile(resampled[best_index], 95)),
            "per_image_errors": [int(e) for e in errors[best_index]],
            "per_image_object_errors": [int(e) for e in false[best_index] + missed[best_index]],
        },
        "best": rows[0][3],
        "results": [row[3] for row in rows],
    }
    return rows[0][2], table


# below this many particles in the calibration images, the record says that the choice rests on few
FEW_PARTICLES = 100
# training images join a calibration on few particles until it holds this many: beyond, the choice
# moves little while predicting and calibrating take ever longer
CALIBRATION_PARTICLES = 1000


def draw_until_enough(items: Sequence[T], load: Callable[[T], Sequence[U]], count: Callable[[U], int], held: int) -> list[U]:
    """``load`` each of ``items`` in a fixed shuffled order until, with the ``held`` particles already in
    the calibration, ``count`` says it holds ``CALIBRATION_PARTICLES``; what was loaded, in the items'
    own order (the calibration's bootstrap resamples images by their place)."""
    chosen: dict[int, Sequence[U]] = {}
    for number in np.random.default_rng(0).permutation(len(items)):
        if held >= CALIBRATION_PARTICLES:
            break
        chosen[int(number)] = loaded = load(items[int(number)])
        held += sum(count(item) for item in loaded)
    return [item for number in sorted(chosen) for item in chosen[number]]


def calibration_record(table: Mapping[str, Any], grid: CalibrationGrid | None = None) -> dict[str, Any]:
    """Why :func:`calibrate` chose its setting, in a form for ``postprocess.json``: the selection
    rule, the images and particles it saw, the chosen setting's spread over resamples, the minimum
    areas tried, and a caution when it saw few particles."""
    spread = table["spread"]
    record: dict[str, Any] = {
        "selection": table["selection"],
        "objective": table["objective"],
        "images": table["images"],
        "particles": table["particles"],
        "settings": table["settings"],
        "count_mae": spread["count_mae"],
        "count_mae_90_interval": [spread["count_mae_p5"], spread["count_mae_p95"]],
        "per_image_errors": spread["per_image_errors"],
        "object_precision": table["best"]["object_precision"],
        "object_recall": table["best"]["object_recall"],
        "min_area_grid": list((grid or CalibrationGrid()).min_area),
        "score": "selection score: measured on the images that chose the setting, optimistic for new images",
    }
    if table["particles"] < FEW_PARTICLES:
        record["caution"] = (
            f"chosen on {table['particles']} particles in {table['images']} images (fewer than {FEW_PARTICLES}): "
            "add labelled validation images for a setting that carries over, or choose it again on more labelled "
            "images with skipnas calibrate MODEL_DIR --split val --split train"
        )
    return record
