"""Validators take whole values: a trailing newline or another script's digits
are not an id, a media source, a hex digest, a currency or an amount."""

from __future__ import annotations

import time
from typing import Any

import pytest

from lookback.api.types.v1 import device_pb2, install_pb2
from lookback.core.errors import Violations
from lookback.core.validation import check_event, check_install

NOW = int(time.time()) * 1_000_000
MD5 = "0" * 31 + "a"


def _install_violations(**fields: Any) -> set[str]:
    install = install_pb2.Install(app_id="com.example.app", install_id="i1")
    for name, value in fields.items():
        setattr(install, name, value)
    v = Violations()
    check_install(v, install, NOW)
    return {x.field for x in v.items}


def test_a_valid_install_passes() -> None:
    assert _install_violations() == set()


@pytest.mark.parametrize("field", ["app_id", "install_id"])
@pytest.mark.parametrize("value", ["abc\n", "abc\r\n", "\nabc"])
def test_ids_with_a_newline_are_refused(field: str, value: str) -> None:
    assert field in _install_violations(**{field: value})


def test_hashed_ids_and_imeis_must_be_ascii_hex_and_digits() -> None:
    install = install_pb2.Install(app_id="a", install_id="i1")
    install.device.hashed.add(
        type=device_pb2.DEVICE_ID_TYPE_GAID,
        algorithm=device_pb2.HASH_ALGORITHM_MD5,
        value=MD5[:-1] + "\n",
    )
    install.device.imei = "\u0661" * 15
    v = Violations()
    check_install(v, install, NOW)
    assert {x.field for x in v.items} == {"device.hashed[0].value", "device.imei"}


@pytest.mark.parametrize(
    ("fields", "bad"),
    [
        ({"revenue": "4.99\n", "currency": "USD"}, "revenue"),
        ({"revenue": "\u0664.99", "currency": "USD"}, "revenue"),
        ({"revenue": "4.99", "currency": "USD\n"}, "currency"),
    ],
)
def test_event_amounts_and_currencies_are_whole_ascii_values(
    fields: dict[str, str], bad: str
) -> None:
    event = install_pb2.InAppEvent(app_id="a", install_id="i1", name="purchase", **fields)
    v = Violations()
    check_event(v, event, NOW)
    assert bad in {x.field for x in v.items}
