from __future__ import annotations

import pytest

from skipnas.cli import main


def test_bad_auxiliary_settings_exit_2_before_any_training(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["train", "--auxiliary", "edges", "--out", str(tmp_path / "m")])
    assert info.value.code == 2 and "invalid choice: 'edges'" in capsys.readouterr().err
    assert main(["train", "--auxiliary", "distance", "--auxiliary-weight", "-1", "--out", str(tmp_path / "m")]) == 2
    assert "auxiliary_weight must be a finite number >= 0" in capsys.readouterr().err
    assert main(["train", "--auxiliary", "none", "--auxiliary-weight", "2", "--out", str(tmp_path / "m")]) == 2
    assert "--auxiliary-weight needs --auxiliary" in capsys.readouterr().err
    assert main(["train", "--particle-weight", "-0.5", "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "particle_weight must be a finite number >= 0, got -0.5" in err and "Traceback" not in err
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--tile", "8"], "--tile must be at least 16 px"),
        (["--tile", "1"], "--tile must be at least 16 px"),
        (["--tile", "big"], "--tile must be auto or a whole number"),
        (["--scale", "0"], "--scale must be above 0"),
        (["--scale", "-1"], "--scale must be above 0"),
        (["--batch", "0"], "--batch must be at least 1"),
        (["--finetune-lr", "-1"], "--finetune-lr must be above 0"),
        (["--lr", "0"], "--lr must be above 0"),
        (["--pretrain-seconds", "-5"], "--pretrain-seconds must be 0 or more"),
    ],
)
def test_values_that_cannot_work_exit_2_with_one_line_before_training(tmp_path, capsys, flags, message) -> None:
    assert main(["train", *flags, "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "m").exists()
