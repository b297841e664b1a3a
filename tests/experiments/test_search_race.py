"""experiments/search_race.py: studies raced on the clock."""

from __future__ import annotations

import optuna


def test_best_so_far_and_the_time_to_reach_another_studys_best(load_experiment) -> None:
    race = load_experiment("search_race")
    storage = race.smoke_storage()
    fixed = race.race_rows(optuna.load_study(study_name="fixed", storage=storage))
    pruned = race.race_rows(optuna.load_study(study_name="pruned", storage=storage))
    assert [row["best_so_far"] for row in fixed] == [0.70, 0.80, 0.80]
    assert [row["seconds"] for row in pruned] == [4.0, 9.0, 12.0]
    assert race.seconds_to_reach(pruned, 0.80) == 9.0  # pruned reaches fixed's best at its second trial
    assert race.seconds_to_reach(fixed, 0.81) is None  # fixed never reaches pruned's
    assert race.seconds_to_reach(fixed, 0.75, maximise=False) == 10.0
