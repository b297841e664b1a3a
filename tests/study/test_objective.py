"""The auxiliary head as a search setting: space file -> training config -> cost -> trained trial."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from skipnas.errors import SkipnasError
from skipnas.genome import Genome
from skipnas.space import space_from_dict
from skipnas.study.objective import candidate_hash, check_training_hyperparameters, training_config
from skipnas.train.config import TrainConfig

TINY_SPACE = """
name = "tiny-auxiliary"
depth = 2
searchable = [[0, 1], [0, 0]]
fixed = "standard"
tile = 32
batch = 4

[hyperparameters]
base_width = 4
lr = 1e-3
auxiliary = "distance"
auxiliary_weight = 0.5
"""


def test_a_space_can_train_every_candidate_with_the_auxiliary_head() -> None:
    base = TrainConfig()
    config = training_config(base, {"auxiliary": "distance", "auxiliary_weight": 0.5})
    assert config.auxiliary == "distance" and config.auxiliary_weight == 0.5
    assert training_config(config, {"auxiliary": "none"}).auxiliary is None  # TOML has no null
    assert training_config(base, {"lr": 1e-3}).auxiliary is None  # off unless asked for
    genome = Genome.named("standard", base_width=4)
    assert candidate_hash(genome, {"auxiliary": "distance"}) != candidate_hash(genome, {"auxiliary": "none"})



def test_a_space_can_search_the_particle_weight_beside_the_other_loss_settings() -> None:
    base = TrainConfig()
    config = training_config(base, {"particle_weight": 0.5})
    assert config.loss.particle_weight == 0.5 and config.loss.kind == base.loss.kind and config.loss.needs_instances
    both = training_config(base, {"loss": "focal", "dice_weight": 2, "particle_weight": 1})
    assert (both.loss.kind, both.loss.dice_weight, both.loss.particle_weight) == ("focal", 2.0, 1.0)
    space = space_from_dict({"hyperparameters": {"particle_weight": {"choices": [0.0, -1.0]}}}, source="bad.toml")
    with pytest.raises(SkipnasError, match="bad.toml: hyperparameters.particle_weight = -1.0 cannot be used"):
        check_training_hyperparameters(space, base)


def test_a_space_with_an_unknown_auxiliary_target_is_refused_before_any_trial() -> None:
    space = space_from_dict({"hyperparameters": {"auxiliary": {"choices": ["none", "edges"]}}}, source="bad.toml")
    with pytest.raises(SkipnasError, match="bad.toml: hyperparameters.auxiliary = 'edges' cannot be used"):
        check_training_hyperparameters(space, TrainConfig())


def test_a_search_with_the_auxiliary_head_costs_trains_and_records_it(tiny_dataset: Path, tmp_path: Path) -> None:
    from skipnas.modelio import load_model_folder
    from skipnas.study.driver import search
    from skipnas.study.settings import SearchSettings

    space = tmp_path / "tiny-auxiliary.toml"
    space.write_text(TINY_SPACE)
    settings = SearchSettings(
        trials=1, data=str(tiny_dataset), space=str(space), trial_seconds=1.0, synthetic_images=4, device="cpu",
        runs_dir=tmp_path / "runs", sampler="random", pruner="none", objective="count_mae",
    )
    result = search(settings)
    trial = result.study.trials[0]
    assert trial.state == optuna.trial.TrialState.COMPLETE, trial.user_attrs.get("fail_reason")
    attrs = trial.user_attrs
    assert attrs["auxiliary"] == "distance"
    # the cost model built the net with its head: one 1x1 conv more than the plain net
    from skipnas.cost import count_params
    from skipnas.models import build_model

    genome = Genome.named("standard", depth=2, base_width=4)
    assert attrs["params"] == count_params(build_model(genome, auxiliary="distance"))
    folder = load_model_folder(attrs["model_dir"])
    assert folder.auxiliary == "distance" and folder.postprocess.method == attrs["counting_method"]
    info = json.loads((Path(attrs["model_dir"]) / "model.json").read_text())
    assert info["train_config"]["auxiliary"] == "distance" and info["train_config"]["auxiliary_weight"] == 0.5
    # count_mae is the calibrated method's, the one stored with the model
    assert trial.values == [attrs["count_mae"]]
    assert json.loads((Path(attrs["model_dir"]) / "metrics.json").read_text())["count_mae"] == attrs["count_mae"]


def _study_with_models(values: list[float], model_dirs: dict[int, str]) -> optuna.Study:
    """Completed trials with these Dice values; ``model_dirs`` overrides a trial's stored ``model_dir``."""
    study = optuna.create_study(direction="maximize")
    for number, value in enumerate(values):
        study.add_trial(optuna.trial.create_trial(value=value, user_attrs={"model_dir": model_dirs.get(number, "")}))
    return study


def _model_folder(folder: Path, *extra: str) -> Path:
    """A folder with a model folder's files (as save_model_folder writes them) and the user's ``extra`` files."""
    from skipnas.modelio import MODEL_FOLDER_FILES

    folder.mkdir(parents=True)
    for name in (*MODEL_FOLDER_FILES, *extra):
        (folder / name).write_text("x")
    return folder


def test_keep_models_deletes_only_the_trials_own_model_files_never_a_stored_model_dir(tmp_path: Path) -> None:
    from skipnas.modelio import MODEL_FOLDER_FILES
    from skipnas.study.objective import prune_model_folders

    trials_dir = tmp_path / "runs" / "study" / "trials"
    folders = [_model_folder(trials_dir / str(n)) for n in range(4)]
    # a hostile model_dir: someone who can write the study points trial 3 at the user's own folder,
    # which even holds files with a model folder's names
    victim = _model_folder(tmp_path / "victim", "thesis.tex")
    (folders[2] / "notes.txt").write_text("mine")
    study = _study_with_models([0.9, 0.5, 0.4, 0.1], {0: str(folders[0]), 1: str(folders[1]), 2: str(folders[2]), 3: str(victim)})
    removed = prune_model_folders(study, keep=1, objective="dice", trials_dir=trials_dir)
    assert sorted(removed) == folders[1:]
    assert sorted(p.name for p in victim.iterdir()) == sorted(["thesis.tex", *MODEL_FOLDER_FILES])
    assert sorted(p.name for p in folders[0].iterdir()) == sorted(MODEL_FOLDER_FILES)  # the best is kept whole
    assert not folders[1].exists() and not folders[3].exists()
    assert [p.name for p in folders[2].iterdir()] == ["notes.txt"]  # the user's file stays, and its folder


def test_keep_models_leaves_links_and_folders_that_are_not_model_folders(tmp_path: Path) -> None:
    from skipnas.modelio import MODEL_FOLDER_FILES
    from skipnas.study.objective import prune_model_folders

    trials_dir = tmp_path / "trials"
    _model_folder(trials_dir / "0")
    (trials_dir / "1").symlink_to(_model_folder(tmp_path / "elsewhere"), target_is_directory=True)
    (trials_dir / "2").mkdir()
    (trials_dir / "2" / "data.csv").write_text("1,2")
    study = _study_with_models([0.9, 0.5, 0.4], {})
    assert prune_model_folders(study, keep=1, objective="dice", trials_dir=trials_dir) == []
    assert len(list((tmp_path / "elsewhere").iterdir())) == len(MODEL_FOLDER_FILES) and (trials_dir / "2" / "data.csv").exists()


def test_keep_models_ranks_by_the_studys_direction(tmp_path: Path) -> None:
    from skipnas.study.objective import prune_model_folders

    trials_dir = tmp_path / "trials"
    study = optuna.create_study(direction="minimize")
    for number, mae in enumerate([3.0, 1.0, 2.0]):
        _model_folder(trials_dir / str(number))
        study.add_trial(optuna.trial.create_trial(value=mae))
    prune_model_folders(study, keep=2, objective="count_mae", trials_dir=trials_dir)
    assert sorted(p.name for p in trials_dir.iterdir()) == ["1", "2"]  # the two lowest count errors
