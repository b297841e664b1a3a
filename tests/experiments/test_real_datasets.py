"""The real-datasets experiment: a recipe's label names every setting it changed, the fine-tuning
rate it is given is the one its networks train at, and each row says how many steps its network trained."""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"


def _args(module: ModuleType, **changes: float) -> argparse.Namespace:
    values = {"pretrain_seconds": module.DEFAULTS.pretrain.seconds, "finetune_seconds": module.DEFAULTS.finetune.seconds,
              "finetune_lr": module.DEFAULTS.finetune.lr, "width": None, "steps": None, "ema_decay": module.DEFAULTS.ema_decay}
    return argparse.Namespace(**{**values, **changes})


def test_the_label_names_each_changed_setting_and_the_defaults_none(load_experiment: Callable[[str], ModuleType]) -> None:
    module = load_experiment("real_datasets")
    assert module.recipe_name({}, _args(module)) == "skipnas defaults"
    assert module.recipe_name({"invert": False}, _args(module, finetune_lr=1e-3)) == "skipnas invert=off, fine-tuning rate 0.001"
    assert module.recipe_name(module.parse_recipe(["scale=0.5"]), _args(module, width=8)) == "skipnas scale=0.5, width 8"
    assert module.recipe_name({}, _args(module, steps=600)) == "skipnas 600 steps"
    assert module.recipe_name({}, _args(module, ema_decay=0.99)) == "skipnas weight average 0.99"
    assert module.recipe_name({}, _args(module, steps=30, pretrain_seconds=60.0, finetune_seconds=120.0)) == (
        "skipnas 30 steps (60:120 pretraining:fine-tuning)"
    )


def test_the_fine_tuning_rate_and_a_step_budget_reach_the_training_config(load_experiment: Callable[[str], ModuleType]) -> None:
    module = load_experiment("real_datasets")
    config = module.train_config(3, 0.0, 180.0, finetune_lr=2e-3)
    assert (config.seed, config.finetune.lr, config.finetune.seconds, config.pretrain.enabled) == (3, 2e-3, 180.0, False)
    assert module.train_config(0, 0.0, 180.0).finetune.lr == module.DEFAULTS.finetune.lr
    assert module.train_config(0, 0.0, 180.0, ema_decay=0.99).ema_decay == 0.99
    on_steps = module.train_config(0, 60.0, 120.0, steps=30)  # split as the seconds are, with no time limit
    assert (on_steps.pretrain.steps, on_steps.finetune.steps, on_steps.pretrain.seconds, on_steps.finetune.seconds) == (10, 20, None, None)
    assert on_steps.pretrain.lr == module.DEFAULTS.pretrain.lr


def test_the_width_is_skipnas_trains_choice_unless_given(load_experiment: Callable[[str], ModuleType]) -> None:
    import dataclasses

    module = load_experiment("real_datasets")
    large = dataclasses.replace(module.DEFAULTS, tile=dataclasses.replace(module.DEFAULTS.tile, size=144), batch_size=8)
    assert module.network_genome(None, large).base_width == 8  # as skipnas train --width auto
    assert module.network_genome(None, module.DEFAULTS).base_width == 16
    assert module.network_genome(12, large).base_width == 12


def test_each_row_holds_the_steps_its_network_trained(tmp_path: Path) -> None:
    out = tmp_path / "rows.csv"
    options = ["--smoke", "--no-classical", "--steps", "6", "--finetune-lr", "2e-3", "--selection", "stable", "--out", str(out)]
    result = subprocess.run(
        [sys.executable, str(EXPERIMENTS / "real_datasets.py"), *options],
        capture_output=True, text=True, cwd=tmp_path, check=False,
    )
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(out.open()))
    assert rows and {row["method"] for row in rows} >= {"skipnas 6 steps (1:2 pretraining:fine-tuning), fine-tuning rate 0.002, width 4"}
    assert {row["training_steps"] for row in rows} == {"6"} and {row["width"] for row in rows} == {"4"}
    # the same network counted as another rule chooses: on the defaults' calibration images, and each rule on train alone
    method = "skipnas 6 steps (1:2 pretraining:fine-tuning), fine-tuning rate 0.002, width 4"
    others = {f"{method}, counting chosen by {rule}" for rule in ("stable", "objects on train alone", "stable on train alone")}
    assert {(row["method"], row["split"]) for row in rows} >= {(name, split) for name in others for split in ("val", "test")}
