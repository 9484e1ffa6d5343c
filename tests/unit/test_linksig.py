"""Signed links: the canonical query string, a fixed vector, and every way
a signature can fail (lookback.core.linksig, lookback.gateway.links)."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from lookback.api.types.v1 import app_pb2, postback_pb2
from lookback.core.errors import Code, Violations
from lookback.core.linksig import (
    LinkSignatureError,
    canonical_query,
    sign,
    signature,
    verify,
)
from lookback.core.validation import check_app
from lookback.gateway.links import check_link_signature

SECRET = "s3cret-for-adnet"
TS = 1_767_225_600  # 2026-01-01T00:00:00Z
PARAMS = {
    "media_source": "adnet",
    "campaign": "spring sale/été+1",
    "app_id": "com.example.game",
    "x~y": "a~b.c-d_e*",
}
# Written out by hand: sorted by name, RFC 3986 encoding (space %20, "/" %2F,
# "+" %2B, "*" %2A, UTF-8 bytes of "é" %C3%A9, "~" "." "-" "_" kept).
CANONICAL = (
    "app_id=com.example.game"
    "&campaign=spring%20sale%2F%C3%A9t%C3%A9%2B1"
    "&media_source=adnet"
    "&ts=1767225600"
    "&x~y=a~b.c-d_e%2A"
)


def test_fixed_vector() -> None:
    expected = hmac.new(SECRET.encode(), CANONICAL.encode(), hashlib.sha256).hexdigest()
    signed = sign(PARAMS, SECRET, TS)
    assert canonical_query(signed) == CANONICAL
    assert dict(signed)["ts"] == "1767225600"
    assert dict(signed)["sig"] == expected
    assert expected == expected.lower() and len(expected) == 64
    verify(signed, SECRET, now=TS + 10)


def test_canonical_order_repeats_and_names() -> None:
    pairs = [("b", "2"), ("a", "z"), ("b", "1"), ("sig", "ignored"), ("n m", "v")]
    assert canonical_query(pairs) == "a=z&b=1&b=2&n%20m=v"
    assert canonical_query({"k": ""}) == "k="


def test_sign_replaces_an_old_ts_and_sig() -> None:
    old = sign(PARAMS, SECRET, TS - 1000)
    again = sign(old, SECRET, TS)
    assert [k for k, _ in again].count("ts") == 1
    assert again == sign(PARAMS, SECRET, TS)


def _field(exc: pytest.ExceptionInfo[LinkSignatureError]) -> str:
    assert exc.value.code == Code.UNAUTHENTICATED
    (violation,) = exc.value.violations
    return violation.field


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda p: [kv for kv in p if kv[0] != "sig"], "sig"),
        (lambda p: [kv for kv in p if kv[0] != "ts"], "ts"),
        (lambda p: [*p, ("sig", "0" * 64)], "sig"),
        (lambda p: [(k, v.upper()) if k == "sig" else (k, v) for k, v in p], "sig"),
        (lambda p: [(k, "spring") if k == "campaign" else (k, v) for k, v in p], "sig"),
        (lambda p: [*p, ("click_id", "added")], "sig"),
        (lambda p: [(k, "soon") if k == "ts" else (k, v) for k, v in p], "ts"),
        (lambda p: [(k, "١٧٦٧٢٢٥٦٠٠") if k == "ts" else (k, v) for k, v in p], "ts"),
        (lambda p: [(k, "9" * 5000) if k == "ts" else (k, v) for k, v in p], "ts"),
    ],
)
def test_a_changed_link_fails(change: object, field: str) -> None:
    signed = sign(PARAMS, SECRET, TS)
    with pytest.raises(LinkSignatureError) as exc:
        verify(change(signed), SECRET, now=TS)  # type: ignore[operator]
    assert _field(exc) == field


def test_another_secret_fails() -> None:
    with pytest.raises(LinkSignatureError) as exc:
        verify(sign(PARAMS, SECRET, TS), "other", now=TS)
    assert _field(exc) == "sig"


def test_ts_within_five_minutes_either_way() -> None:
    signed = sign(PARAMS, SECRET, TS)
    verify(signed, SECRET, now=TS + 300)
    verify(signed, SECRET, now=TS - 300)
    for now in (TS + 301, TS - 301):
        with pytest.raises(LinkSignatureError) as exc:
            verify(signed, SECRET, now=now)
        assert _field(exc) == "ts"


def _app(click_signing: int, secret: str = "adnet") -> app_pb2.App:
    app = app_pb2.App(app_id="com.example.game", platform=app_pb2.PLATFORM_ANDROID)
    partner = app.settings.postbacks["adnet"]
    partner.signing_secret = secret
    partner.click_signing = click_signing  # type: ignore[assignment]
    return app


SECRETS = {"adnet": SECRET, "other": "other-secret"}
REQUIRED, OFF = postback_pb2.CLICK_SIGNING_REQUIRED, postback_pb2.CLICK_SIGNING_OFF


def test_where_signing_is_required() -> None:
    signed = sign(PARAMS, SECRET, TS)
    assert check_link_signature(signed, _app(REQUIRED), "adnet", SECRETS, TS) is True
    with pytest.raises(LinkSignatureError) as exc:
        check_link_signature(list(PARAMS.items()), _app(REQUIRED), "adnet", SECRETS, TS)
    assert _field(exc) == "sig"
    # A secret the gateway does not have, or one bound to another partner: refused.
    for secrets, name in (({}, "adnet"), (SECRETS, "other")):
        with pytest.raises(LinkSignatureError):
            check_link_signature(signed, _app(REQUIRED, name), "adnet", secrets, TS)


def test_where_signing_is_off_a_present_sig_is_checked() -> None:
    unsigned = list(PARAMS.items())
    for app in (_app(OFF), _app(postback_pb2.CLICK_SIGNING_UNSPECIFIED)):
        assert check_link_signature(unsigned, app, "adnet", SECRETS, TS) is False
        assert check_link_signature(sign(PARAMS, SECRET, TS), app, "adnet", SECRETS, TS)
        bad = [*unsigned, ("ts", str(TS)), ("sig", signature(unsigned, "wrong"))]
        with pytest.raises(LinkSignatureError):
            check_link_signature(bad, app, "adnet", SECRETS, TS)
    # A partner without settings: unsigned links pass, a sig cannot be checked.
    app = app_pb2.App(app_id="com.example.game")
    assert check_link_signature(unsigned, app, "adnet", SECRETS, TS) is False
    with pytest.raises(LinkSignatureError):
        check_link_signature(sign(PARAMS, SECRET, TS), app, "adnet", SECRETS, TS)
    assert "adnet" not in app.settings.postbacks  # looked up without being added


def _fields_of(app: app_pb2.App) -> set[str]:
    v = Violations()
    check_app(v, app)
    return {item.field for item in v.items}


def test_check_app_needs_a_secret_where_links_must_be_signed() -> None:
    app = app_pb2.App(app_id="com.a", platform=app_pb2.PLATFORM_ANDROID)
    partner = app.settings.postbacks["adnet"]
    partner.click_signing = postback_pb2.CLICK_SIGNING_REQUIRED
    assert _fields_of(app) == {"settings.postbacks[adnet].signing_secret"}
    partner.signing_secret = "othernet"
    assert _fields_of(app) == {"settings.postbacks[adnet].signing_secret"}
    for name in ("adnet", "adnet.2026"):
        partner.signing_secret = name
        assert _fields_of(app) == set()
    partner.click_signing = postback_pb2.CLICK_SIGNING_OFF
    partner.signing_secret = ""
    assert _fields_of(app) == set()
