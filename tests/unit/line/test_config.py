"""line/config.py: every setting is checked, with the field named."""

from __future__ import annotations

import math

import pytest

from anomalib_adaclip.line import LineConfig


def test_the_defaults_are_valid_and_frozen() -> None:
    config = LineConfig()
    assert config.threshold is None and config.max_backlog is None
    with pytest.raises(AttributeError):
        config.threshold = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"settle_seconds": -1.0}, "settle_seconds must be a finite number >= 0"),
        ({"poll_seconds": math.nan}, "poll_seconds must be a finite number >= 0"),
        ({"snapshot_every": 0}, "snapshot_every must be an integer >= 1"),
        ({"freeze_streak": True}, "freeze_streak must be an integer >= 1"),
        ({"threshold": math.inf}, "threshold must be a finite number"),
        ({"calibration_percentile": 101.0}, r"calibration_percentile must be in \[0, 100\]"),
        ({"rate_factor": 1.0}, "rate_factor must be > 1"),
        ({"max_backlog": 0}, "max_backlog must be >= 1 or None"),
        ({"snapshot_name": ".bank.pt"}, "snapshot_name must be a plain visible file name"),
        ({"class_name": " "}, "class_name must not be empty"),
    ],
)
def test_bad_settings_are_refused_by_name(overrides: dict, message: str) -> None:
    with pytest.raises(ValueError, match=f"Invalid LineConfig: {message}"):
        LineConfig(**overrides)


def test_the_rate_check_can_be_turned_off() -> None:
    assert LineConfig(rate_factor=math.inf).rate_factor == math.inf
