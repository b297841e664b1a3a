"""Overlays of counted particles (skipnas/count.py)."""

from __future__ import annotations

import numpy as np

from skipnas.count import _display_image, draw_overlay
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
    plain = _display_image(image)
    assert np.all(np.any(overlay != plain, axis=2)[detections.labels > 0])  # every particle pixel is tinted


def test_overlay_of_an_image_with_nothing_found_is_the_image() -> None:
    image = np.full((32, 48), 90, np.uint8)
    detections = count_particles(np.zeros((32, 48), np.float32))
    overlay = draw_overlay(image, {"particle": detections})
    assert np.array_equal(overlay, _display_image(image))


def test_a_model_at_half_scale_counts_in_the_images_own_pixels(tmp_path) -> None:
    import cv2
    import numpy as np

    from skipnas.count import count_images
    from skipnas.genome import Genome
    from skipnas.modelio import save_model_folder
    from skipnas.models import build_model
    from skipnas.train.data import Normalisation

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
