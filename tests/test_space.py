from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest

from skipnas.genome import Genome
from skipnas.space import Choice, FloatRange, SpaceError, budget_bytes, link_param_name, load_space, space_from_dict

REPO = Path(__file__).resolve().parents[1]


def test_default_space_loads_by_name_and_path() -> None:
    space = load_space("default")
    assert space == load_space(REPO / "search_spaces" / "default.toml")
    assert space.depth == 4 and space.tile is None  # auto: chosen from the particles
    assert len(space.searchable_links()) == 16 and space.num_candidates() == 2**16
    assert isinstance(space.hyperparameters["base_width"], Choice)
    assert isinstance(space.hyperparameters["lr"], FloatRange) and space.hyperparameters["lr"].log
    assert space.budget_mib is not None and budget_bytes(space) == space.budget_mib * 2**20
    assert budget_bytes(space, override_mib=10) == 10 * 2**20


@pytest.mark.parametrize("path", sorted((REPO / "search_spaces").glob("*.toml")), ids=lambda p: p.name)
def test_every_shipped_space_is_valid(path: Path) -> None:
    assert load_space(path).depth >= 1


def test_suggest_builds_a_genome_and_training_hyperparameters() -> None:
    space = load_space("default")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    genome, hps = space.suggest(trial)
    assert isinstance(genome, Genome) and genome.base_width in (8, 16)
    assert set(hps) == {"lr", "weight_decay"}
    for i, j in space.searchable_links():
        assert trial.params[link_param_name(i, j)] == genome.skips[i][j]


def test_links_outside_the_mask_keep_their_fixed_value() -> None:
    space = space_from_dict({"depth": 2, "searchable": [[0, 1], [0, 0]], "fixed": "standard"})
    assert space.searchable_links() == [(0, 1)]
    study = optuna.create_study()
    study.enqueue_trial({"skip_e0_d1": 1})
    genome, _ = space.suggest(study.ask())
    assert genome.skips == ((1, 1), (0, 1))
    assert space.contains(Genome.named("standard", depth=2))
    assert not space.contains(Genome.named("reverse", depth=2))
    with pytest.raises(SpaceError, match="reverse uses links this space fixes"):
        space.params_for(Genome.named("reverse", depth=2))


def test_baseline_params_reproduce_the_baseline() -> None:
    space = load_space("default")
    study = optuna.create_study()
    study.enqueue_trial(space.params_for(Genome.named("reverse")))
    genome, _ = space.suggest(study.ask())
    assert genome.skips == Genome.named("reverse").skips


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("depth = 0", "depth must be an integer"),
        ("tile = 60", "multiple of 2\\*\\*depth"),
        ("budget_mib = -1", "budget_mib"),
        ("budget_steps = 0", "budget_steps must be a whole number of training steps, at least 1, got 0"),
        ("budget_steps = 2.5", "budget_steps must be a whole number"),
        ("searchable = [[1, 0], [0, 1]]", "searchable: skips must be 4x4"),
        ('searchable = "some"', "searchable = 'some'"),
        ("colour = 3", "unknown key"),
        ("[hyperparameters]\nlr = { low = 1.0, high = 0.1 }", "low \\(1.0\\) must be below high"),
        ("[hyperparameters]\nlr = { low = 0.0, high = 0.1, log = true }", "log range needs low > 0"),
        ("[hyperparameters]\nlr = { between = 1 }", "hyperparameters.lr: use a value"),
        ("[hyperparameters]\nbase_width = { choices = [8, 0] }", "base_width must be positive"),
        ('[hyperparameters]\nfusion = "mul"', "fusion must be among"),
        ("depth = [", "not valid TOML"),
    ],
)
def test_malformed_space_files_name_the_file_and_problem(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(SpaceError, match=message) as info:
        load_space(path)
    assert str(path) in str(info.value)


def test_missing_space_file_and_unknown_name() -> None:
    with pytest.raises(SpaceError, match="no such search-space file"):
        load_space("nowhere/space.toml")
    with pytest.raises(SpaceError, match="'nosuchspace' not found"):
        load_space("nosuchspace")


def test_no_budget_means_infinite() -> None:
    assert math.isinf(budget_bytes(space_from_dict({})))


def test_the_auxiliary_head_is_a_training_setting_of_the_space() -> None:
    space = space_from_dict({"hyperparameters": {"auxiliary": "distance", "auxiliary_weight": {"choices": [0.5, 1.0]}}})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    genome, hps = space.suggest(study.ask())
    assert hps["auxiliary"] == "distance" and hps["auxiliary_weight"] in (0.5, 1.0)
    assert not any("auxiliary" in key for key in genome.to_dict())  # the genome knows nothing of it
