from __future__ import annotations

import cv2
import numpy as np
import pytest

from skipnas.counting.calibrate import CalibrationGrid, calibrate
from skipnas.counting.evaluation import Evaluation
from skipnas.counting.postprocess import PostprocessConfig
from skipnas.counting.seeded import instance_distance_map
from skipnas.errors import SkipnasError


def _tricky_image(rng: np.random.Generator, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """True particles at 0.65, bright 2x2 specks at 0.9 and faint large smudges at 0.45 (not particles).

    Only a threshold of 0.5 or 0.6 with a min_area between 5 and the particles' area counts right.
    """
    truth = np.zeros((size, size), np.int32)
    prob = np.full((size, size), 0.1, np.float32)
    cells = [(x, y) for y in range(8, size - 8, 16) for x in range(8, size - 8, 16)]
    order = rng.permutation(len(cells))
    particles = int(rng.integers(1, 5))
    for index, cell in enumerate(cells[i] for i in order[: particles + 3]):
        x, y = cell
        if index < particles:
            cv2.circle(truth, (x, y), 5, index + 1, -1)
        elif index < particles + 2:
            prob[y : y + 2, x : x + 2] = 0.9
        else:
            cv2.circle(prob, (x, y), 6, 0.45, -1)
    prob[truth > 0] = 0.65
    return prob, truth


def _tricky_set(images: int = 6, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    pairs = [_tricky_image(rng) for _ in range(images)]
    return [p for p, _ in pairs], [t for _, t in pairs]


def test_calibration_picks_the_setting_that_counts_right() -> None:
    probs, truths = _tricky_set()
    wrong = Evaluation(PostprocessConfig(threshold=0.4, min_area=0))
    for prob, truth in zip(probs, truths, strict=True):
        wrong.add(prob, truth)
    assert wrong.summary()["count_mae"] > 1  # a careless setting counts the smudges and specks

    grid = CalibrationGrid(thresholds=(0.3, 0.4, 0.5, 0.6, 0.7), dilate=(0, 3, 5), min_area=(0, 10, 30, 100, 300), methods=None)
    best, table = calibrate(probs, truths, PostprocessConfig(min_area=0), grid)
    # count MAE 0 for threshold 0.5 or 0.6 and min_area 10 or 30; the tie goes to the simpler 0.5 and 10
    assert best == PostprocessConfig(threshold=0.5, erode=0, dilate=0, min_area=10)
    right = Evaluation(best)
    for prob, truth in zip(probs, truths, strict=True):
        right.add(prob, truth)
    assert table["best"]["count_mae"] == 0.0 == right.summary()["count_mae"]
    # Dice is the segmentation's (the specks above the threshold count against it), as Evaluation has it
    assert table["best"]["dice"] == pytest.approx(right.summary()["dice"]) and table["best"]["dice"] < 1.0
    assert table["images"] == len(probs)
    assert table["settings"] == grid.size() == len(table["results"])
    # by default the rows come best first by the particles wrong; "mean" ranks them by the count MAE
    assert table["best"]["object_errors"] == 0.0 and table["best"]["object_precision"] == 1.0
    _, by_count = calibrate(probs, truths, PostprocessConfig(min_area=0), grid, selection="mean")
    maes = [row["count_mae"] for row in by_count["results"]]
    assert maes == sorted(maes)


def test_calibration_drops_doubtful_particles_where_that_counts_right() -> None:
    # per image: sure discs (0.9, the truth) and one doubtful smudge (0.55, not a particle) of the same
    # size; no threshold that keeps the discs drops the smudge, the minimum peak probability does
    probs, truths = [], []
    for particles in (1, 2, 3):
        truth = np.zeros((48, 64), np.int32)
        for index in range(particles):
            cv2.circle(truth, (10 + 16 * index, 12), 5, index + 1, -1)
        prob = np.where(truth > 0, 0.9, 0.05).astype(np.float32)
        cv2.circle(prob, (32, 36), 5, 0.55, -1)
        probs.append(prob)
        truths.append(truth)
    grid = CalibrationGrid(thresholds=(0.4, 0.5), erode=(0,), dilate=(0,), min_area=(0, 10), min_peak_probability=(0.0, 0.7, 0.95), methods=None)
    best, table = calibrate(probs, truths, PostprocessConfig(), grid)
    assert table["best"]["count_mae"] == 0.0 and best.min_peak_probability == 0.7
    assert grid.size() == 2 * 2 * 3 == table["settings"]
    without = [row["count_mae"] for row in table["results"] if row["min_peak_probability"] == 0.0]
    assert min(without) == 1.0  # each image counts its smudge


def test_equal_count_error_goes_to_the_higher_dice() -> None:
    # a particle whose rim (part of the truth) sits at 0.45: threshold 0.4 gets it all, 0.5 only its core
    truth = np.zeros((40, 40), np.int32)
    cv2.circle(truth, (20, 20), 9, 1, -1)
    prob = np.where(truth > 0, 0.45, 0.05).astype(np.float32)
    cv2.circle(prob, (20, 20), 5, 0.9, -1)
    grid = CalibrationGrid(thresholds=(0.4, 0.5), erode=(0,), dilate=(0,), min_area=(0,), methods=None)
    best, table = calibrate([prob], [truth], grid=grid)
    assert [row["count_mae"] for row in table["results"]] == [0.0, 0.0]
    assert best.threshold == 0.4 and table["best"]["dice"] == pytest.approx(1.0)


def test_every_row_matches_count_particles() -> None:
    # each setting counted on its own gives the row: calibration shares each image's masks and reliefs
    # between settings, and sharing must not change a count
    probs, truths = _tricky_set(images=3, seed=1)
    rng = np.random.default_rng(2)
    maps = [
        np.clip(cv2.GaussianBlur(instance_distance_map(truth), (0, 0), 1.5) + rng.normal(0, 0.05, truth.shape), 0, 1).astype(np.float32)
        for truth in truths
    ]
    grid = CalibrationGrid(
        thresholds=(0.4, 0.6), erode=(0, 3), dilate=(0, 5), min_area=(0, 30), min_peak_probability=(0.0, 0.62),
        methods=("blobs", "watershed", "seeded"), seed_threshold=(0.3, 0.6),
    )
    _, table = calibrate(probs, truths, PostprocessConfig(), grid, auxiliary=maps)
    # 32 masks and filters x (blobs, watershed with each of 3 peak windows, seeded: 2 thresholds x (no peaks, or 3 windows))
    assert table["settings"] == 32 * (1 + 3 + 2 * 4)
    by_peak = {
        peak: sorted((row["threshold"], row["erode"], row["dilate"], row["min_area"], row["method"], row["seed_threshold"],
                            row["seed_peak_fraction"], row["watershed_min_distance"], row["count_mae"])
                           for row in table["results"] if row["min_peak_probability"] == peak)
        for peak in (0.0, 0.62)
    }
    assert by_peak[0.0] != by_peak[0.62]  # the peak filter changes some counts
    fields = set(PostprocessConfig().to_dict())
    for row in table["results"]:
        config = PostprocessConfig.from_dict({key: row[key] for key in fields})
        evaluation = Evaluation(config)
        for prob, truth, extra in zip(probs, truths, maps, strict=True):
            evaluation.add(prob, truth, auxiliary=extra)
        summary = evaluation.summary()
        assert row["count_mae"] == pytest.approx(summary["count_mae"]), row
        assert row["dice"] == pytest.approx(summary["dice"]), row
        # the particles matched as an evaluation matches them, filtered setting by setting
        assert row["object_precision"] == pytest.approx(summary["object_precision"]), row
        assert row["object_recall"] == pytest.approx(summary["object_recall"]), row


def test_calibration_reports_each_mask_tried_to_a_progress_listener() -> None:
    from skipnas.progress import report_progress_to

    probs, truths = _tricky_set(images=4, seed=4)
    heard: list[tuple[str, float, float | None]] = []
    with report_progress_to(lambda description, done, total: heard.append((description, done, total))):
        calibrate(probs, truths, PostprocessConfig(), CalibrationGrid(thresholds=(0.4, 0.6), min_area=(0,)), progress=True)
    # 2 thresholds x 2 erosions x 2 dilations
    assert heard[0] == ("choosing the counting setting", 0.0, 8) and [done for _, done, _ in heard] == [float(n) for n in range(9)]


def test_grid_keeps_the_base_settings_it_does_not_vary() -> None:
    probs, truths = _tricky_set(images=2)
    base = PostprocessConfig(dilate_iterations=2, method="watershed", watershed_min_distance=4)
    grid = {"thresholds": [0.5], "erode": [0], "dilate": [0, 3], "min_area": [10], "methods": None, "watershed_min_distance": None}
    best, table = calibrate(probs, truths, base, grid)
    assert (best.dilate_iterations, best.method, best.watershed_min_distance) == (2, "watershed", 4)
    assert {row["method"] for row in table["results"]} == {"watershed"}


def test_default_grid_tries_every_counting_method_with_its_own_settings() -> None:
    grid = CalibrationGrid()
    assert set(grid.methods or ()) == {"blobs", "watershed", "fibres", "seeded"}
    masks = len(grid.thresholds) * len(grid.erode) * len(grid.dilate) * len(grid.min_area) * len(grid.min_peak_probability)
    # blobs, watershed with three peak windows, one fibre setting, three seed thresholds x (no peak
    # fraction, or 0.8 with each of the three windows)
    assert grid.method_settings("fibres") == [{"fibre_max_turn": 45.0, "fibre_junction_scale": 1.5}]
    assert len(grid.method_settings("watershed")) == 3
    assert len(grid.method_settings("seeded")) == 3 * (1 + 3)
    assert grid.size() == masks * (1 + 3 + 1 + 12)
    assert grid.size(auxiliary=False) == masks * (1 + 3 + 1)


def _touching_pairs(images: int = 2, size: int = 64) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Pairs of touching discs: one blob each, two particles each."""
    probs, truths = [], []
    for image in range(images):
        truth = np.zeros((size, size), np.int32)
        for pair in range(image + 1):
            y = 14 + 24 * pair
            cv2.circle(truth, (20, y), 8, 2 * pair + 1, -1)
            cv2.circle(truth, (36, y), 8, 2 * pair + 2, -1)
        probs.append(np.where(truth > 0, 0.9, 0.05).astype(np.float32))
        truths.append(truth)
    return probs, truths


def test_methods_needing_the_auxiliary_map_run_only_with_it() -> None:
    probs, truths = _touching_pairs()
    grid = {
        "thresholds": [0.5], "erode": [0], "dilate": [0], "min_area": [10], "methods": ["blobs", "seeded"],
        "seed_peak_fraction": [0.0],
    }
    _, table = calibrate(probs, truths, grid=grid)
    assert {row["method"] for row in table["results"]} == {"blobs"}
    auxiliary = [instance_distance_map(truth) for truth in truths]
    best, table = calibrate(probs, truths, grid=grid, auxiliary=auxiliary)
    assert {row["method"] for row in table["results"]} == {"blobs", "seeded"}
    assert table["settings"] == CalibrationGrid.from_dict(grid).size() == 4
    # the true cores split every touching pair: seeded counts exactly
    assert best.method == "seeded" and table["best"]["count_mae"] == 0
    with pytest.raises(SkipnasError, match="auxiliary"):
        calibrate(probs, truths, grid={**grid, "methods": ["seeded"]})


def test_bad_input_is_a_user_error() -> None:
    with pytest.raises(SkipnasError, match="no labelled validation images"):
        calibrate([], [])
    with pytest.raises(SkipnasError, match="make the mask the image's size"):
        calibrate([np.zeros((8, 8))], [np.zeros((8, 16), np.int32)])  # no input scale makes 8 x 16 square
    with pytest.raises(SkipnasError, match="threshold"):
        CalibrationGrid(thresholds=(0.5, 1.5))
    with pytest.raises(SkipnasError, match="non-empty"):
        CalibrationGrid(erode=())
    with pytest.raises(SkipnasError, match="unknown calibration grid"):
        CalibrationGrid.from_dict({"kernel": [3]})


def test_size_counts_what_calibrate_tries_whatever_the_base_method() -> None:
    probs, truths = _touching_pairs()
    auxiliary = [instance_distance_map(truth) for truth in truths]
    grid = CalibrationGrid(thresholds=(0.5,), erode=(0,), dilate=(0,), min_area=(1, 10), methods=None)
    base = PostprocessConfig(method="seeded")
    _, table = calibrate(probs, truths, base, grid, auxiliary=auxiliary)
    assert table["settings"] == grid.size(base) == 2 * 3 * (1 + 3)
    _, table = calibrate(probs, truths, PostprocessConfig(method="fibres"), grid)
    assert table["settings"] == grid.size(PostprocessConfig(method="fibres"), auxiliary=False) == 2


def _uneven_touching_pair(size: int = 48) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(probability, true instances, learned-looking map) of a large and a small touching particle
    whose map peaks (1.0 and 0.6, 10 px apart) stay joined above 0.3."""
    truth = np.zeros((size, size), np.int32)
    big, small = (19, 24), (29, 24)
    cv2.circle(truth, small, 5, 2, -1)
    cv2.circle(truth, big, 6, 1, -1)
    yy, xx = np.mgrid[:size, :size]
    bumps = [height * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 32.0) for (x, y), height in ((big, 1.0), (small, 0.6))]
    relief = np.where(truth > 0, np.maximum(*bumps), 0).astype(np.float32)
    return np.where(truth > 0, 0.9, 0.05).astype(np.float32), truth, relief


def test_a_peak_window_near_the_particles_radius_splits_a_small_particle_from_a_large_one() -> None:
    prob, truth, relief = _uneven_touching_pair()
    grid = {
        "thresholds": [0.5], "erode": [0], "dilate": [0], "min_area": [1], "methods": ["seeded"], "seed_threshold": [0.3],
        "watershed_min_distance": None,
    }
    # the base window (10 px) reaches the large particle's peak from the small one's: one core
    best, table = calibrate([prob], [truth], grid=grid, auxiliary=[relief])
    assert table["best"]["count_mae"] == 1 and best.watershed_min_distance == 10
    best, table = calibrate([prob], [truth], grid={**grid, "watershed_min_distance": [3, 10]}, auxiliary=[relief])
    assert table["best"]["count_mae"] == 0
    assert (best.watershed_min_distance, best.seed_peak_fraction) == (3, 0.8)


def test_the_peak_window_is_tried_only_where_it_shapes_the_cores() -> None:
    grid = CalibrationGrid(watershed_min_distance=(3, 10))
    seeded = grid.method_settings("seeded")
    # three seed thresholds x (no peak fraction, or 0.8 with either window)
    assert len(seeded) == 3 * (1 + 2)
    assert {s["watershed_min_distance"] for s in seeded if s["seed_peak_fraction"] == 0} == {3}
    assert grid.method_settings("watershed") == [{"watershed_min_distance": 3}, {"watershed_min_distance": 10}]
    assert CalibrationGrid(watershed_min_distance=None).method_settings("watershed") == [{}]
    with pytest.raises(SkipnasError, match="watershed_min_distance"):
        CalibrationGrid(watershed_min_distance=(0,))


def _steady_or_lucky_set() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Three images where min_area 10 counts two exactly and the third 6 too many (specks), and
    min_area 50 counts every image 2 too few (two small true particles dropped): the same count MAE."""
    probs, truths = [], []
    for specks in (0, 0, 6):
        truth = np.zeros((96, 96), np.int32)
        prob = np.full((96, 96), 0.05, np.float32)
        for index in range(3):  # large true particles
            cv2.circle(truth, (15 + 30 * index, 15), 6, index + 1, -1)
        for index in range(2):  # small true particles, 30 px
            truth[40:45, 10 + 30 * index : 16 + 30 * index] = 10 + index
        prob[truth > 0] = 0.9
        for index in range(specks):  # 25 px specks, no particle
            prob[70:75, 5 + 15 * index : 10 + 15 * index] = 0.9
        probs.append(prob)
        truths.append(truth)
    return probs, truths


def test_stable_selection_prefers_steady_errors_to_lucky_ones():
    probs, truths = _steady_or_lucky_set()
    grid = CalibrationGrid(thresholds=(0.5,), erode=(0,), dilate=(0,), min_area=(10, 50), methods=("blobs",))
    steady, table = calibrate(probs, truths, grid=grid, selection="stable")
    assert steady.min_area == 50
    assert table["best"]["count_mae"] == pytest.approx(2.0)
    assert table["spread"]["per_image_errors"] == [-2, -2, -2]
    assert table["particles"] == 15 and table["selection"] == "stable"
    # the same count MAE by the plain mean: the tie goes to the simpler, smaller minimum area
    lucky, plain = calibrate(probs, truths, grid=grid, selection="mean")
    assert lucky.min_area == 10 and plain["best"]["count_mae"] == pytest.approx(2.0)


def _right_total_wrong_particles() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Two true particles: a large one the map finds and a small one it misses, where the map holds a
    small false blob instead. With every blob kept the total is right but two particles are wrong;
    a minimum area above the false blob counts one short with one particle wrong."""
    truth = np.zeros((64, 64), np.int32)
    truth[10:20, 10:20] = 1  # 100 px, found
    truth[40:44, 40:44] = 2  # 16 px, missed
    prob = np.full((64, 64), 0.1, np.float32)
    prob[10:20, 10:20] = 0.9
    prob[40:44, 10:14] = 0.9  # 16 px of nothing
    return [prob], [truth]


def test_particle_selections_weigh_what_matching_gets_wrong():
    from skipnas.counting.calibrate import calibrate_each

    probs, truths = _right_total_wrong_particles()
    grid = CalibrationGrid(thresholds=(0.5,), erode=(0,), dilate=(0,), min_area=(0, 30), methods=("blobs",))
    chosen = calibrate_each(probs, truths, grid=grid, selections=("stable", "objects", "balanced"))
    by_count, count_table = chosen["stable"]
    assert by_count.min_area == 0 and count_table["best"]["count_mae"] == 0  # the total right, both particles wrong
    assert count_table["best"]["object_errors"] == 2
    assert count_table["best"]["object_precision"] == pytest.approx(0.5) and count_table["best"]["object_recall"] == pytest.approx(0.5)
    by_objects, objects_table = chosen["objects"]
    assert by_objects.min_area == 30 and objects_table["best"]["object_errors"] == 1
    assert objects_table["spread"]["per_image_object_errors"] == [1] and "fewest particles wrong" in objects_table["objective"]
    # the larger of false and missed is 1 either way: the tie goes to the lower count error
    assert chosen["balanced"][0].min_area == 0
    assert calibrate(probs, truths, grid=grid, selection="objects")[0] == by_objects


def test_bootstrap_maes_resample_images_alike_for_every_setting():
    from skipnas.counting.calibrate import bootstrap_maes

    errors = np.array([[0.0, 0.0, 6.0], [2.0, 2.0, 2.0]])
    resampled = bootstrap_maes(errors, resamples=500)
    assert resampled.shape == (2, 500)
    assert np.allclose(resampled[1], 2.0)  # steady errors: every resample the same
    assert resampled[0].mean() == pytest.approx(2.0, abs=0.3) and resampled[0].max() == pytest.approx(6.0)
    assert np.quantile(resampled[0], 0.8) > np.quantile(resampled[1], 0.8)


def test_unknown_selection_is_refused():
    probs, truths = _steady_or_lucky_set()
    with pytest.raises(SkipnasError, match="selection must be one of"):
        calibrate(probs, truths, selection="luck")


def test_maps_at_an_input_scale_calibrate_against_full_size_masks():
    probs, truths = _steady_or_lucky_set()
    half = [cv2.resize(p, (48, 48), interpolation=cv2.INTER_AREA) for p in probs]
    grid = CalibrationGrid(thresholds=(0.5,), erode=(0,), dilate=(0,), min_area=(3, 13), methods=("blobs",))
    config, table = calibrate(half, truths, grid=grid)
    # at half size the 25 px specks are about 6 px and the small true particles about 7: the areas are the map's
    assert table["particles"] == 15
    assert config.min_area in (3, 13)


def test_calibration_record_says_how_and_on_how_little_it_chose():
    from skipnas.counting.calibrate import calibration_record

    probs, truths = _steady_or_lucky_set()
    grid = CalibrationGrid(thresholds=(0.5,), erode=(0,), dilate=(0,), min_area=(10, 50), methods=("blobs",))
    _, table = calibrate(probs, truths, grid=grid)
    record = calibration_record(table, grid)
    assert record["particles"] == 15 and record["images"] == 3 and record["min_area_grid"] == [10, 50]
    low, high = record["count_mae_90_interval"]
    assert low <= record["count_mae"] <= high
    assert "fewer than 100" in record["caution"] and "selection score" in record["score"]
