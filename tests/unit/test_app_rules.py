"""App settings rules that keep outbound requests where they belong: a
postback template's host is fixed text, a signing secret belongs to its
partner, an app names a bounded set of SRN networks, a partner's
``max_in_flight`` is in range (checked by check_app, before any destination
is resolved)."""

from __future__ import annotations

from typing import Any

import pytest

from lookback.api.types.v1 import app_pb2
from lookback.core.errors import Violations
from lookback.core.validation import check_app


def app_with(**settings: Any) -> app_pb2.App:
    return app_pb2.App(
        app_id="com.example",
        platform=app_pb2.PLATFORM_ANDROID,
        settings=app_pb2.AppSettings(**settings),
    )


def violations(app: app_pb2.App) -> dict[str, str]:
    v = Violations()
    check_app(v, app)
    return {item.field: item.description for item in v.items}


def test_a_signing_secret_must_be_bound_to_its_partner() -> None:
    app = app_with()
    app.settings.postbacks["adnet"].signing_secret = "othernet"
    app.settings.postbacks["adnet"].install.url = "https://93.184.216.34/i"
    app.settings.postbacks["othernet"].signing_secret = "othernet.2026"
    app.settings.postbacks["third"].signing_secret = "thirdparty"  # a prefix is not enough
    found = violations(app)
    assert set(found) == {
        "settings.postbacks[adnet].signing_secret",
        "settings.postbacks[third].signing_secret",
    }
    assert "'adnet'" in found["settings.postbacks[adnet].signing_secret"]


def test_a_template_host_may_not_hold_macros() -> None:
    app = app_with()
    app.settings.postbacks["adnet"].install.url = "https://{click_id}.example/i"
    app.settings.postbacks["adnet"].event.url = "https://93.184.216.34/e?n={event_name}"
    assert violations(app) == {
        "settings.postbacks[adnet].install.url": "the host and port may not contain macros"
    }


def test_srn_networks_are_capped_unique_and_named_well() -> None:
    assert violations(app_with(srn_networks=[f"srn{i}" for i in range(20)])) == {}
    too_many = violations(app_with(srn_networks=[f"srn{i}" for i in range(21)]))
    assert "settings.srn_networks" in too_many
    assert "at most 20" in too_many["settings.srn_networks"]
    twice = violations(app_with(srn_networks=["srn_a", "srn_b", "srn_a"]))
    assert set(twice) == {"settings.srn_networks[2]"}
    assert set(violations(app_with(srn_networks=["Bad Name"]))) == {"settings.srn_networks[0]"}


@pytest.mark.parametrize("value", [0, 1, 20, 1000])
def test_a_partner_max_in_flight_of_0_to_1000_is_accepted(value: int) -> None:
    app = app_with()
    app.settings.postbacks["adnet"].max_in_flight = value
    assert violations(app) == {}


@pytest.mark.parametrize("value", [-1, 1001, 2**31 - 1])
def test_a_partner_max_in_flight_out_of_range_is_named(value: int) -> None:
    app = app_with()
    app.settings.postbacks["adnet"].max_in_flight = value
    app.settings.postbacks["othernet"].max_in_flight = 5
    found = violations(app)
    assert set(found) == {"settings.postbacks[adnet].max_in_flight"}
    assert "1 to 1000" in found["settings.postbacks[adnet].max_in_flight"]
