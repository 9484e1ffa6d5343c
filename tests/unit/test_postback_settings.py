"""The dispatcher's isolation settings are checked at start: a bad one is a
clear error naming it (exit 2 from ``lookback serve``), not a dispatcher
that runs without isolation."""

from __future__ import annotations

import pytest

from lookback.cli.main import run_service
from lookback.core.config import ConfigError
from lookback.postback.config import PostbackConfig
from lookback.postback.dispatcher import partner_limits


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"workers": 0}, "workers"),
        ({"circuit_failures": 0}, "circuit_failures"),
        ({"circuit_cooldown": 0.0}, "circuit_cooldown"),
        ({"circuit_cooldown": 10.0, "circuit_max_cooldown": 5.0}, "circuit_max_cooldown"),
        ({"slow_attempt": -1.0}, "slow_attempt"),
        ({"max_in_flight_per_partner": 1001}, "max_in_flight_per_partner"),
        ({"max_in_flight_by_partner": {"adnet": "lots"}}, "adnet='lots'"),
        ({"max_in_flight_by_partner": {"adnet": "-1"}}, "adnet='-1'"),
    ],
)
def test_a_bad_setting_is_refused_by_name(overrides: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        partner_limits(PostbackConfig(**overrides))  # type: ignore[arg-type]


def test_per_partner_limits_are_read_as_numbers() -> None:
    config = PostbackConfig(max_in_flight_by_partner={"adnet": "4", "other": "0"})
    assert partner_limits(config) == {"adnet": 4, "other": 0}


def test_serve_exits_2_naming_the_setting(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_service("postback", ["--circuit-failures", "0"]) == 2
    assert "circuit_failures must be at least 1" in capsys.readouterr().err
