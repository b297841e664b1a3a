"""Overlays of counted particles (skipnas/count.py)."""

from __future__ import annotations

import numpy as np

from skipnas.count import display_image, draw_overlay
from skipnas.counting.postprocess import PostprocessConfig, count_particles


def _crossing_fibres() -> np.ndarray:
    prob = np.zeros((64, 64), np.float32)
    for i in range(64):
        prob[i, max(i - 2, 0) : i + 2] = 1.0
        prob[63 - i, max(i - 2, 0) : i + 2] = 1.0
    return prob


def test_overlay_tints_each_particle_in_its_own_colour() -> None:
    image = np.random.default_rng(0).integers(30, 60, (64, 64)).astype(np.uint8)
    detections = count_particles(_crossing_fibres(), PostprocessConfig(method="fibres", min_area=5))
    assert detections.count == 2
    overlay = draw_overlay(image, {"particle": detections})
    assert overlay.shape == (64, 64, 3)
    colours = [tuple(np.median(overlay[detections.labels == k], axis=0)) for k in (1, 2)]
    assert colours[0] != colours[1]
    plain = display_image(image)
    assert np.all(np.any(overlay != plain, axis=2)[detections.labels > 0])  # every particle pixel is tinted


def test_overlay_of_an_image_with_nothing_found_is_the_image() -> None:
    image = np.full((32, 48), 90, np.uint8)
    detections = count_particles(np.zeros((32, 48), np.float32))
    overlay = draw_overlay(image, {"particle": detections})
    assert np.array_equal(overlay, display_image(image))


def test_a_model_at_half_scale_counts_in_the_images_own_pixels(tmp_path) -> None:
    import cv2
    import numpy as np

    from skipnas.count import count_images
    from skipnas.genome import Genome
    from skipnas.modelio import save_model_folder
    from skipnas.models import build_model
    from skipnas.runtime.normalise import Normalisation

    genome = Genome.named("standard", base_width=4)
    model = build_model(genome, in_channels=1).eval()
    # a "model" whose counting keeps every pixel above 0: the whole image is one particle
    from skipnas.counting.postprocess import PostprocessConfig

    save_model_folder(tmp_path / "m", model, genome, Normalisation.stretched(1), PostprocessConfig(threshold=0.0, min_area=1),
                      in_channels=1, input_scale=0.5)
    image = np.random.default_rng(0).integers(0, 255, (70, 90), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), image)
    result = count_images(tmp_path / "m", [tmp_path / "a.png"], tmp_path / "out", device="cpu", progress=False)
    boxes = [(p["x"], p["y"], p["width"], p["height"]) for p in result.particles]
    assert result.total >= 1
    # boxes in the image's own pixels, not the network's half-size ones
    assert max(x + w for x, _, w, _ in boxes) > 60 and max(y + h for _, y, _, h in boxes) > 45
    assert all(x + w <= 90 and y + h <= 70 for x, y, w, h in boxes)


def _counting_model(path):
    """A tiny model folder whose counting keeps every pixel above 0: fast, and it always finds a particle."""
    from skipnas.counting.postprocess import PostprocessConfig
    from skipnas.genome import Genome
    from skipnas.modelio import save_model_folder
    from skipnas.models import build_model
    from skipnas.runtime.normalise import Normalisation

    genome = Genome.named("standard", base_width=4)
    return save_model_folder(path, build_model(genome, in_channels=1).eval(), genome, Normalisation.stretched(1),
                             PostprocessConfig(threshold=0.0, min_area=1), in_channels=1)


def _images(folder, names):
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    for index, name in enumerate(names):
        cv2.imwrite(str(folder / name), np.random.default_rng(index).integers(0, 255, (40, 50), dtype=np.uint8))
    return folder


def _snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_failure_half_way_leaves_out_as_it_was(tmp_path) -> None:
    import pytest

    from skipnas.count import count_images
    from skipnas.errors import SkipnasError

    model = _counting_model(tmp_path / "m")
    images = _images(tmp_path / "first", ["a.png", "b.png"])
    count_images(model, [images], tmp_path / "out", device="cpu", progress=False)
    (tmp_path / "out" / "notes.txt").write_text("mine")
    before = _snapshot(tmp_path / "out")
    broken = _images(tmp_path / "second", ["c.png", "d.png"])
    (broken / "d.png").write_bytes(b"not a png")  # the second image fails after the first was counted
    for out in (tmp_path / "out", tmp_path / "new" / "out"):
        with pytest.raises(SkipnasError, match="d.png"):
            count_images(model, [broken], out, device="cpu", progress=False, overwrite=True)
    assert _snapshot(tmp_path / "out") == before
    assert not (tmp_path / "new").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["first", "m", "out", "second"]  # no staging folder left


def test_an_earlier_count_is_replaced_only_with_overwrite_and_only_its_own_files(tmp_path) -> None:
    import pytest

    from skipnas.count import count_images
    from skipnas.errors import SkipnasError

    model = _counting_model(tmp_path / "m")
    count_images(model, [_images(tmp_path / "first", ["a.png", "b.png"])], tmp_path / "out", device="cpu", progress=False)
    (tmp_path / "out" / "notes.txt").write_text("mine")
    (tmp_path / "out" / "overlays" / "mine.png").write_bytes(b"my own picture")
    before = _snapshot(tmp_path / "out")
    second = _images(tmp_path / "second", ["c.png"])
    with pytest.raises(SkipnasError, match="holds an earlier count's outputs .*add --overwrite"):
        count_images(model, [second], tmp_path / "out", device="cpu", progress=False)
    assert _snapshot(tmp_path / "out") == before
    result = count_images(model, [second], tmp_path / "out", device="cpu", progress=False, overwrite=True)
    assert [row["file"] for row in result.images] == [str(second / "c.png")]
    # the earlier count's overlays a and b are gone; the user's files stay
    assert sorted(_snapshot(tmp_path / "out")) == [
        "counts.csv", "notes.txt", "overlays/c.png", "overlays/mine.png", "particles.csv", "summary.json"
    ]
    assert (tmp_path / "out" / "overlays" / "mine.png").read_bytes() == b"my own picture"

