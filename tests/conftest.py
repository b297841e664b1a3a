"""Shared fixtures. Tests mirror the package: tests/models/ for skipnas/models/, and so on."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = REPO_ROOT / "tests" / "fixtures"
SHARED_SEM_FIBRES = Path(
    os.environ.get("SKIPNAS_SEM_FIBRES", REPO_ROOT.parent / "shared" / "data" / "sem-fibres-shi2022" / "extracted")
)


@pytest.fixture
def sem_fibres_dir() -> Path:
    """The real SEM fibre set (Shi et al. 2022); tests using it skip in a clone without ../shared."""
    if not SHARED_SEM_FIBRES.is_dir():
        pytest.skip(f"real SEM fibre data not found at {SHARED_SEM_FIBRES} (set SKIPNAS_SEM_FIBRES)")
    return SHARED_SEM_FIBRES


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Caches (demo dataset, dataset statistics) go to one temp folder per test session."""
    monkeypatch.setenv("SKIPNAS_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "skipnas-cache"))


def write_tiny_dataset(root: Path, size: int = 48, counts: dict[str, int] | None = None, seed: int = 0) -> Path:
    """A small demo-like dataset (train/val/test, ``size`` px) for end-to-end tests that run in seconds."""
    import numpy as np

    from skipnas.data.demo import make_demo_image
    from skipnas.data.io import write_image, write_mask

    rng = np.random.default_rng(seed)
    for split, n in (counts or {"train": 6, "val": 2, "test": 2}).items():
        for index in range(n):
            image, instances, _ = make_demo_image(rng, size)
            write_image(root / split / "images" / f"{split}{index}-0.tif", image)
            write_mask(root / split / "masks" / f"{split}{index}-0.tif", instances)
    return root


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_dataset(tmp_path_factory.mktemp("tiny") / "data")


@pytest.fixture(scope="session")
def tiny_dataset_writer():
    """:func:`write_tiny_dataset`, for tests that need a tiny dataset of their own size or counts."""
    return write_tiny_dataset
