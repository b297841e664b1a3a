"""Fixtures of the experiment scripts' tests."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"


@pytest.fixture(scope="session")
def load_experiment() -> Callable[[str], ModuleType]:
    """Loads ``experiments/NAME.py`` as a fresh module (experiments/ is no package; its main() does not run)."""

    if str(EXPERIMENTS) not in sys.path:  # as `python experiments/NAME.py` does, for the scripts' shared helpers
        sys.path.insert(0, str(EXPERIMENTS))

    def load(name: str) -> ModuleType:
        spec = importlib.util.spec_from_file_location(name, EXPERIMENTS / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up by name
        spec.loader.exec_module(module)
        return module

    return load
