"""The real-datasets experiment: a recipe's label names every setting it changed, and the
fine-tuning rate it is given is the one its networks train at."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from types import ModuleType


def _args(module: ModuleType, **changes: float) -> argparse.Namespace:
    values = {"pretrain_seconds": module.DEFAULTS.pretrain.seconds, "finetune_seconds": module.DEFAULTS.finetune.seconds,
              "finetune_lr": module.DEFAULTS.finetune.lr, "width": 16}
    return argparse.Namespace(**{**values, **changes})


def test_the_label_names_each_changed_setting_and_the_defaults_none(load_experiment: Callable[[str], ModuleType]) -> None:
    module = load_experiment("real_datasets")
    assert module.recipe_name({}, _args(module)) == "skipnas defaults"
    assert module.recipe_name({"invert": False}, _args(module, finetune_lr=1e-3)) == "skipnas invert=off, fine-tuning rate 0.001"
    assert module.recipe_name(module.parse_recipe(["scale=0.5"]), _args(module, width=8)) == "skipnas scale=0.5, width 8"


def test_the_fine_tuning_rate_reaches_the_training_config(load_experiment: Callable[[str], ModuleType]) -> None:
    module = load_experiment("real_datasets")
    config = module.train_config(3, 0.0, 180.0, finetune_lr=2e-3)
    assert (config.seed, config.finetune.lr, config.finetune.seconds, config.pretrain.enabled) == (3, 2e-3, 180.0, False)
    assert module.train_config(0, 0.0, 180.0).finetune.lr == module.DEFAULTS.finetune.lr
