from __future__ import annotations

import pytest

from skipnas.cli._common import parse_auto
from skipnas.errors import SkipnasError


@pytest.mark.parametrize("value, kind, expected", [("auto", int, None), ("128", int, 128), ("0.5", float, 0.5)])
def test_parse_auto(value, kind, expected):
    assert parse_auto(value, kind, "--tile") == expected


def test_parse_auto_names_the_flag():
    with pytest.raises(SkipnasError, match="--tile must be auto or a whole number, got 'abc'"):
        parse_auto("abc", int, "--tile")


def test_calibrate_on_choices_are_the_training_configs() -> None:
    from skipnas.cli._common import CALIBRATE_ON_CHOICES
    from skipnas.train.config import CALIBRATE_ON

    assert sorted(CALIBRATE_ON_CHOICES) == sorted(CALIBRATE_ON)
