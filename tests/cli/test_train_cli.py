from __future__ import annotations

import pytest

from skipnas.cli import main
from skipnas.cli.train import AUXILIARY_CHOICES
from skipnas.counting.seeded import AUXILIARY_TARGETS


def test_auxiliary_choices_are_the_auxiliary_targets() -> None:
    assert AUXILIARY_CHOICES == AUXILIARY_TARGETS


def test_bad_auxiliary_settings_exit_2_before_any_training(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["train", "--auxiliary", "centres", "--out", str(tmp_path / "m")])
    assert info.value.code == 2 and "invalid choice: 'centres'" in capsys.readouterr().err
    assert main(["train", "--auxiliary", "distance", "--auxiliary-weight", "-1", "--out", str(tmp_path / "m")]) == 2
    assert "auxiliary_weight must be a finite number >= 0" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()
