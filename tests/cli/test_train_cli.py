from __future__ import annotations

import pytest

from skipnas.cli import main


def test_bad_auxiliary_settings_exit_2_before_any_training(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["train", "--auxiliary", "edges", "--out", str(tmp_path / "m")])
    assert info.value.code == 2 and "invalid choice: 'edges'" in capsys.readouterr().err
    assert main(["train", "--auxiliary", "distance", "--auxiliary-weight", "-1", "--out", str(tmp_path / "m")]) == 2
    assert "auxiliary_weight must be a finite number >= 0" in capsys.readouterr().err
    assert main(["train", "--auxiliary-weight", "2", "--out", str(tmp_path / "m")]) == 2
    assert "--auxiliary-weight needs --auxiliary" in capsys.readouterr().err
    assert main(["train", "--particle-weight", "-0.5", "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "particle_weight must be a finite number >= 0, got -0.5" in err and "Traceback" not in err
    assert not (tmp_path / "m").exists()
