from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from skipnas.data.io import read_image, read_mask
from skipnas.data.synth import (
    Particle,
    SynthConfig,
    SyntheticGenerator,
    blank_background,
    cut_particles,
    paste_particles,
)
from skipnas.errors import SkipnasError

BACKGROUND_LEVEL = 50
PARTICLE_LEVEL = 200


def _source(size: int = 64, seed: int = 0, dtype: type = np.uint8, rgb: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """A noisy dark image with three bright particles: a disc, a rectangle and a two-piece strand."""
    rng = np.random.default_rng(seed)
    scale = 257 if dtype == np.uint16 else 1
    image = rng.normal(BACKGROUND_LEVEL, 3, (size, size))
    instances = np.zeros((size, size), np.int32)
    cv2.circle(instances, (16, 16), 7, 1, -1)
    instances[40:48, 8:30] = 2
    instances[10:13, 36:44] = 3
    instances[20:23, 50:60] = 3  # the same particle in a second piece
    image[instances > 0] = PARTICLE_LEVEL
    image = np.clip(image * scale, 0, np.iinfo(dtype).max).astype(dtype)
    if rgb:
        image = np.stack([image, image // 2, image], axis=2)
    return image, instances


def _square(side: int, level: int = PARTICLE_LEVEL) -> Particle:
    return Particle(np.full((side, side), level, np.uint8), np.ones((side, side), bool))


def _blank(size: int = 96, level: int = BACKGROUND_LEVEL) -> np.ndarray:
    return np.full((size, size), level, np.uint8)


def _ids(instances: np.ndarray) -> list[int]:
    return [int(v) for v in np.unique(instances) if v != 0]


def test_cut_particles_keeps_every_instance_whole_and_drops_tiny_ones() -> None:
    image, instances = _source()
    instances[60:62, 60:62] = 4  # 4 px: below min_area
    particles = cut_particles(image, instances, min_area=16)
    assert len(particles) == 3
    areas = sorted(p.area for p in particles)
    expected = sorted(int(np.count_nonzero(instances == i)) for i in (1, 2, 3))
    assert areas == expected
    strand = next(p for p in particles if p.area == np.count_nonzero(instances == 3))
    pieces, _ = cv2.connectedComponents(strand.mask.astype(np.uint8))
    assert pieces - 1 == 2  # both pieces stay in one particle
    for particle in particles:
        assert particle.image.shape[:2] == particle.mask.shape
        assert np.all(particle.image[particle.mask] == PARTICLE_LEVEL)


def test_cut_particles_rejects_a_mask_of_another_size() -> None:
    image, instances = _source()
    with pytest.raises(SkipnasError, match="mask"):
        cut_particles(image, instances[:32])


def test_generate_is_deterministic_for_a_seed() -> None:
    generator = SyntheticGenerator([_source(seed=0), _source(seed=1)], SynthConfig(particles_per_image=(2, 5)))
    first = list(generator.generate(3, seed=7))
    again = list(SyntheticGenerator([_source(seed=0), _source(seed=1)], SynthConfig(particles_per_image=(2, 5))).generate(3, seed=7))
    other = list(generator.generate(3, seed=8))
    for (image_a, mask_a), (image_b, mask_b) in zip(first, again):
        np.testing.assert_array_equal(image_a, image_b)
        np.testing.assert_array_equal(mask_a, mask_b)
    assert any(not np.array_equal(a[0], b[0]) or not np.array_equal(a[1], b[1]) for a, b in zip(first, other))
    # pair i depends only on (seed, i): a shorter run is a prefix of a longer one
    np.testing.assert_array_equal(next(generator.generate(1, seed=7))[0], first[0][0])


@pytest.mark.parametrize("seed", range(4))
def test_disjoint_pastes_each_keep_their_own_id_and_area(seed: int) -> None:
    particles = [_square(side) for side in (6, 9, 12, 15)]
    config = SynthConfig(
        particles_per_image=(4, 4),
        scale_range=(1.0, 1.0),
        allow_overlap=False,
        border_clipping=False,
        feather=0,
    )
    image, instances = paste_particles(_blank(), None, particles, config, np.random.default_rng(seed))
    ids = _ids(instances)
    assert ids == [1, 2, 3, 4]
    areas = sorted(int(np.count_nonzero(instances == i)) for i in ids)
    for area, particle in zip(areas, sorted(particles, key=lambda p: p.area)):
        assert area == pytest.approx(particle.area, rel=0.2)  # rotation by nearest neighbour
    # hard edges: every labelled pixel shows the particle
    assert np.all(image[instances > 0] >= PARTICLE_LEVEL - 40)


@pytest.mark.parametrize("seed", range(6))
def test_overlapping_pastes_leave_no_id_without_pixels(seed: int) -> None:
    particles = [_square(side) for side in (4, 10, 20, 30)]
    config = SynthConfig(particles_per_image=(25, 25), scale_range=(0.2, 1.5))
    _, instances = paste_particles(_blank(48), None, particles, config, np.random.default_rng(seed))
    ids = _ids(instances)
    assert ids == list(range(1, len(ids) + 1))
    assert 1 <= len(ids) < 25  # big squares hide earlier ones: those IDs are gone, not left empty
    assert instances.dtype == np.int32


def test_semi_mode_keeps_the_background_particles_and_their_ids() -> None:
    background, background_instances = _source()
    config = SynthConfig(particles_per_image=(3, 3), allow_overlap=False, scale_range=(1.0, 1.0))
    image, instances = paste_particles(
        background, background_instances, [_square(5, 120)], config, np.random.default_rng(0)
    )
    kept = background_instances > 0
    np.testing.assert_array_equal(instances[kept], background_instances[kept])
    np.testing.assert_array_equal(image[kept], background[kept])
    assert _ids(instances) == [1, 2, 3, 4, 5, 6]  # the pasted ones come after


def test_semi_generator_pastes_onto_real_particles() -> None:
    source = _source()
    config = SynthConfig(background="semi", particles_per_image=(2, 2), allow_overlap=False)
    image, instances = next(SyntheticGenerator([source], config).generate(1, seed=3))
    assert len(_ids(instances)) == 5
    kept = source[1] > 0
    np.testing.assert_array_equal(image[kept], source[0][kept])


def test_feathered_edges_blend_background_and_particle() -> None:
    rng_seed = 1
    soft = SynthConfig(particles_per_image=(1, 1), rotate=False, flip=False, scale_range=(1, 1), feather=2)
    image, instances = paste_particles(_blank(), None, [_square(15)], soft, np.random.default_rng(rng_seed))
    mask = (instances > 0).astype(np.uint8)
    edge = mask.astype(bool) & ~cv2.erode(mask, np.ones((3, 3), np.uint8)).astype(bool)
    assert np.all((image[edge] > BACKGROUND_LEVEL) & (image[edge] < PARTICLE_LEVEL))
    assert image[instances > 0].max() == PARTICLE_LEVEL  # the core is the particle itself
    hard = SynthConfig(particles_per_image=(1, 1), rotate=False, flip=False, scale_range=(1, 1), feather=0)
    hard_image, _ = paste_particles(_blank(), None, [_square(15)], hard, np.random.default_rng(rng_seed))
    assert np.all(hard_image[edge] == PARTICLE_LEVEL)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("rgb", [False, True])
def test_output_follows_the_source_dtype_and_channels(dtype: type, rgb: bool) -> None:
    source = _source(dtype=dtype, rgb=rgb)
    image, instances = next(SyntheticGenerator([source]).generate(1, seed=0))
    assert image.dtype == dtype
    assert image.shape == source[0].shape
    assert instances.shape == source[1].shape
    labelled = image[instances > 0]
    if dtype == np.uint16:
        assert labelled.max() > 255 * 40  # 16-bit values kept, not squashed to 8 bit


def test_given_backgrounds_are_converted_to_the_source_format() -> None:
    source = _source(dtype=np.uint16)
    background = np.full((48, 40, 3), 30, np.uint8)
    generator = SyntheticGenerator([source], SynthConfig(particles_per_image=(1, 1)), backgrounds=[background])
    image, _ = next(generator.generate(1, seed=0))
    assert image.dtype == np.uint16 and image.shape == (48, 40)
    assert np.median(image) == 30 * 257


def test_output_size_crops_or_enlarges_the_background() -> None:
    generator = SyntheticGenerator([_source()], SynthConfig(size=(80, 40), particles_per_image=(1, 1)))
    image, instances = next(generator.generate(1, seed=0))
    assert image.shape == (80, 40) and instances.shape == (80, 40)


def test_blank_background_replaces_particles_with_noisy_background() -> None:
    image, instances = _source(size=96)
    blank = blank_background(image, instances, np.random.default_rng(0))
    assert blank.dtype == image.dtype
    hole = instances > 0
    assert abs(float(blank[hole].mean()) - BACKGROUND_LEVEL) < 10
    # re-noised like the rest of the image, not a smooth inpainted patch
    assert 1.0 < float(blank[hole].std()) < 10.0


def test_sources_of_mixed_formats_are_refused() -> None:
    with pytest.raises(SkipnasError, match="one pixel format"):
        SyntheticGenerator([_source(), _source(dtype=np.uint16)])


def test_sources_without_particles_are_refused() -> None:
    image, _ = _source()
    with pytest.raises(SkipnasError, match="no annotated particle"):
        SyntheticGenerator([(image, np.zeros(image.shape, np.int32))])


@pytest.mark.parametrize(
    "changes",
    [{"background": "tiled"}, {"particles_per_image": (3, 1)}, {"scale_range": (0, 1)}, {"feather": -1}],
)
def test_config_rejects_impossible_values(changes: dict[str, object]) -> None:
    with pytest.raises(SkipnasError):
        SynthConfig(**changes)  # type: ignore[arg-type]


def test_config_round_trips_through_a_dict() -> None:
    config = SynthConfig(size=(64, 32), background="semi", particles_per_image=(1, 2))
    assert SynthConfig.from_dict(config.to_dict()) == config


# dataset folders --------------------------------------------------------------------------------


def test_real_sem_fibres_make_synthetic_tiles(sem_fibres_dir: Path) -> None:
    images = sorted((sem_fibres_dir / "train" / "images").glob("*.png"))[:2]
    sources = [(read_image(p), read_mask(sem_fibres_dir / "train" / "masks" / p.name).instances) for p in images]
    generator = SyntheticGenerator(sources, SynthConfig(size=(128, 128)))
    image, instances = next(generator.generate(1, seed=0))
    assert image.dtype == np.uint8 and image.shape == (128, 128)
    assert len(generator.particles) >= 2
    assert _ids(instances) == list(range(1, len(_ids(instances)) + 1))


def test_paste_refuses_particles_of_another_pixel_format() -> None:
    rgb_particle = Particle(np.full((5, 5, 3), 200, np.uint8), np.ones((5, 5), bool))
    with pytest.raises(SkipnasError, match="convert"):
        paste_particles(_blank(), None, [rgb_particle], SynthConfig(), np.random.default_rng(0))


def test_feathering_never_fades_a_thin_particle_away() -> None:
    line = Particle(np.full((1, 20), PARTICLE_LEVEL, np.uint8), np.ones((1, 20), bool))
    config = SynthConfig(particles_per_image=(1, 1), rotate=False, flip=False, scale_range=(1, 1), feather=3)
    image, instances = paste_particles(_blank(), None, [line], config, np.random.default_rng(0))
    assert np.count_nonzero(instances) == 20
    assert np.all(image[instances > 0] == PARTICLE_LEVEL)
