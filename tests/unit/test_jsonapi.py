"""Friendly JSON: the fast path gives exactly what the general path gives,
and anything it does not take goes to the general path, which names the field."""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import json_format
from google.protobuf.message import Message

from lookback.api.apps.v1 import app_settings_service_pb2 as apps_pb
from lookback.api.ingestion.v1 import ingestion_service_pb2 as ingestion_pb
from lookback.api.types.v1 import app_pb2, decision_pb2, install_pb2
from lookback.core import fastjson, jsonapi
from lookback.core.errors import InvalidArgument
from lookback.domain.durations import parse_duration

GAID = "38400000-8cf0-11bd-b23e-10b96e40000d"

BODIES: list[tuple[type[Message], dict[str, Any]]] = [
    (install_pb2.Install, {"app_id": "a", "install_id": "i1", "device": {"gaid": GAID}}),
    (
        install_pb2.Install,
        {
            "app_id": "a",
            "install_id": "i1",
            "installed_at": "2026-03-01T10:00:00Z",
            "device": {
                "idfa": GAID,
                "hashed": [{"type": "gaid", "algorithm": "sha1", "value": "ab"}],
            },
            "ip": "203.0.113.7",
            "att_status": "authorized",
            "install_referrer": {
                "referrer": "click_id=c1",
                "install_begin_at": "2026-03-01T09:59:00.5Z",
            },
            "preload": {
                "type": "PRELOAD_TYPE_PAI",
                "media_source": "oem",
                "preloaded_at": "2026-01-01T00:00:00Z",
            },
        },
    ),
    (install_pb2.Install, {"app_id": "a", "install_id": "i1", "install_referrer": {}}),
    (
        app_pb2.App,
        {
            "app_id": "a",
            "platform": "android",
            "version": "3",
            "settings": {
                "click_lookback": "7d",
                "click_lookback_by_source": {"networkb": "3d"},
                "min_ctit": "0",
                "srn_networks": ["srn_social"],
                "postbacks": {
                    "networka": {
                        "install": {"url": "https://p/i?c={click_id}", "method": "post"},
                        "max_in_flight": 20,
                    }
                },
            },
        },
    ),
    (
        ingestion_pb.RecordTouchesRequest,
        {"touches": [{"app_id": "a", "type": "click", "is_retargeting": True}]},
    ),
]


def general_parse(cls: type[Message], data: dict[str, Any]) -> Message:
    message = cls()
    json_format.ParseDict(jsonapi._to_proto_json(message.DESCRIPTOR, data, ""), message)
    return message


@pytest.mark.parametrize(("cls", "body"), BODIES)
def test_fast_parse_and_dump_match_the_general_path(
    cls: type[Message], body: dict[str, Any]
) -> None:
    fast = cls()
    fastjson.fill(fast, body)
    general = general_parse(cls, body)
    assert fast == general
    assert fast.SerializeToString(deterministic=True) == general.SerializeToString(
        deterministic=True
    )
    for defaults in (False, True):
        data = json_format.MessageToDict(
            general, preserving_proto_field_name=True, always_print_fields_with_no_presence=defaults
        )
        assert fastjson.dump(fast, defaults) == jsonapi._from_proto_json(general.DESCRIPTOR, data)


def test_a_decision_dumps_the_same_both_ways() -> None:
    d = decision_pb2.Decision(
        decision_id="d1", kind=decision_pb2.DECISION_KIND_INSTALL, counted=True
    )
    d.contributors.append("networkb")
    d.rejected.add(click_id="c9", reason=decision_pb2.REJECTION_REASON_CTIT_TOO_SHORT)
    d.latency.FromMicroseconds(2100)
    d.event_time.FromSeconds(1_700_000_000)
    data = json_format.MessageToDict(
        d, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    assert fastjson.dump(d, True) == jsonapi._from_proto_json(d.DESCRIPTOR, data)
    assert fastjson.dump(d, True)["method"] == "unspecified"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"installed_at": "yesterday"}, "installed_at"),
        ({"device": {"gaid": 42}}, "device.gaid"),
        ({"att_status": "maybe"}, "att_status"),
        ({"colour": "blue"}, "colour"),
        ({"ip": 7}, "ip"),
    ],
)
def test_what_the_fast_path_refuses_is_named_by_the_general_path(
    body: dict[str, Any], field: str
) -> None:
    with pytest.raises(fastjson.Unsupported):
        fastjson.fill(install_pb2.Install(), body)
    with pytest.raises(InvalidArgument) as info:
        jsonapi.parse(install_pb2.Install, body, prefix="install.")
    assert f"install.{field}" in {v.field for v in info.value.violations}


@pytest.mark.parametrize(
    ("cls", "body", "field"),
    [
        # Found by the fuzz test (tests/integration/test_fuzz.py): each was a 500.
        (app_pb2.App, {"version": "²"}, "version"),  # a digit to isdigit(), not to int()
        (app_pb2.App, {"version": 2**64}, "version"),  # beyond int64
        (app_pb2.App, {"version": "9" * 5000}, "version"),  # beyond int()'s digit limit
        (install_pb2.Install, {"att_status": "\ud800"}, "att_status"),  # enum name not Unicode
        (apps_pb.RotateAppKeyRequest, {"grace_period": "9" * 400 + "d"}, "grace_period"),
    ],
)
def test_values_the_fast_path_choked_on_are_named(
    cls: type[Message], body: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidArgument) as info:
        jsonapi.parse(cls, body)
    assert field in {v.field for v in info.value.violations}


@pytest.mark.parametrize("text", ["9" * 400 + "d", "9" * 30 + "mo", "\u0661d", "\uff17d"])
def test_durations_too_long_or_not_ascii_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)
