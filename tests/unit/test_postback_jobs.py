"""A partner's ``max_in_flight`` goes from the app's settings (JSON or proto)
to every postback job rendered for it, and a job carrying one out of range is
refused by name."""

from __future__ import annotations

import pytest

from lookback.api.types.v1 import app_pb2, postback_pb2
from lookback.core import convert, jsonapi
from lookback.core.errors import Violations
from lookback.core.validation import check_postback_jobs
from lookback.domain.postbacks import render_postback

T0 = 1_772_359_200_000_000


def app_with_partner(max_in_flight: int) -> app_pb2.App:
    app = app_pb2.App(app_id="com.example", platform=app_pb2.PLATFORM_ANDROID)
    partner = app.settings.postbacks["networka"]
    partner.install.url = "https://p.example/i?c={click_id}"
    partner.max_in_flight = max_in_flight
    return app


@pytest.mark.parametrize("value", [0, 1, 20, 1000])
def test_the_setting_reaches_the_rendered_job(value: int) -> None:
    settings = convert.settings(app_with_partner(value))
    assert settings.postbacks["networka"].max_in_flight == value
    pb = render_postback(settings, "networka", "install", "d1", {"click_id": "c1"})
    assert pb is not None
    assert pb.max_in_flight == value
    job = convert.postback_job(pb, "com.example", T0)
    assert job.max_in_flight == value
    assert job.url == "https://p.example/i?c=c1"


def test_the_setting_round_trips_through_json() -> None:
    body = {"settings": {"postbacks": {"networka": {"max_in_flight": 20}}}}
    app = jsonapi.parse(app_pb2.App, body)
    assert app.settings.postbacks["networka"].max_in_flight == 20
    assert jsonapi.dump(app)["settings"]["postbacks"]["networka"] == {"max_in_flight": 20}


def job_violations(max_in_flight: int) -> dict[str, str]:
    job = postback_pb2.PostbackJob(
        job_id="d1:networka:install",
        partner="networka",
        url="https://p.example/i",
        trigger=postback_pb2.POSTBACK_TRIGGER_INSTALL,
        method=postback_pb2.HTTP_METHOD_GET,
        max_in_flight=max_in_flight,
    )
    v = Violations()
    check_postback_jobs(v, [job])
    return {item.field: item.description for item in v.items}


@pytest.mark.parametrize("value", [0, 1, 1000])
def test_a_job_max_in_flight_of_0_to_1000_is_accepted(value: int) -> None:
    assert job_violations(value) == {}


@pytest.mark.parametrize("value", [-1, 1001])
def test_a_job_max_in_flight_out_of_range_is_named(value: int) -> None:
    assert job_violations(value) == {"jobs[0].max_in_flight": "must be 0 to 1000"}
