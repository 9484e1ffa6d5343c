"""Which redirect targets a link may send the browser to
(lookback.gateway.redirects), and the app settings that say so
(lookback.core.validation.check_app)."""

from __future__ import annotations

import pytest

from lookback.api.types.v1 import app_pb2
from lookback.core.errors import InvalidArgument, Violations
from lookback.core.validation import check_app
from lookback.gateway.redirects import check_redirect_target, host_allowed

ANDROID = app_pb2.App(
    app_id="com.example.game",
    platform=app_pb2.PLATFORM_ANDROID,
    settings=app_pb2.AppSettings(redirect_allowlist=["example.com", "*.landing.example.net"]),
)
IOS = app_pb2.App(app_id="id123456789", platform=app_pb2.PLATFORM_IOS)
IOS_DIGITS = app_pb2.App(app_id="123456789", platform=app_pb2.PLATFORM_IOS)


def allowed(target: str, app: app_pb2.App = ANDROID) -> bool:
    try:
        check_redirect_target(target, app)
    except InvalidArgument as exc:
        assert [v.field for v in exc.violations] == ["redirect"]
        return False
    return True


def test_host_allowlist_exact_and_subdomains() -> None:
    allowlist = ["example.com", "*.example.org"]
    assert host_allowed("example.com", allowlist)
    assert host_allowed("EXAMPLE.com.", allowlist)
    assert not host_allowed("www.example.com", allowlist)
    assert not host_allowed("example.com.evil.test", allowlist)
    assert not host_allowed("badexample.com", allowlist)
    assert host_allowed("www.example.org", allowlist)
    assert host_allowed("a.b.example.org", allowlist)
    assert not host_allowed("example.org", allowlist)
    assert not host_allowed("evilexample.org", allowlist)
    assert not host_allowed("", allowlist)


@pytest.mark.parametrize(
    "target",
    [
        "https://example.com/spring?utm=1",
        "http://example.com:8080/",
        "https://www.landing.example.net/x",
        "https://play.google.com/store/apps/details?id=com.example.game",
        "https://play.google.com/store/apps/details?id=com.example.game&referrer=utm_source%3Dadnet",
    ],
)
def test_allowed_targets(target: str) -> None:
    assert allowed(target)


@pytest.mark.parametrize(
    "target",
    [
        "https://evil.test/",
        "https://www.example.com/",  # not listed: only example.com itself
        "https://landing.example.net/",  # the wildcard covers subdomains only
        "https://example.com.evil.test/",
        "https://example.com@evil.test/",
        "https://user@example.com/",
        "https://evil.test\\@example.com/",
        "https://evil.test/\\example.com",
        "https://example.com/ x",
        "https://example.com/\nx",
        "javascript:alert(1)",
        "//example.com/",
        "https:example.com",
        "ftp://example.com/",
        "https://play.google.com/store/apps/details?id=com.other.game",
        "https://play.google.com/store/apps/details?id=com.example.game&id=com.other",
        "https://play.google.com/store/apps/details",
        "http://play.google.com/store/apps/details?id=com.example.game",
        "https://play.google.com:8443/store/apps/details?id=com.example.game",
        "https://play.google.com/store/apps/developer?id=com.example.game",
        "https://apps.apple.com/us/app/game/id123456789",  # an Android app
    ],
)
def test_refused_targets(target: str) -> None:
    assert not allowed(target)


def test_ios_store_pages() -> None:
    for app in (IOS, IOS_DIGITS):
        assert allowed("https://apps.apple.com/us/app/my-game/id123456789", app)
        assert allowed("https://apps.apple.com/app/id123456789?mt=8", app)
        assert allowed("https://itunes.apple.com/gb/app/id123456789", app)
        assert not allowed("https://apps.apple.com/us/app/my-game/id1234567890", app)
        assert not allowed("https://apps.apple.com/us/app/id123456789/evil", app)
        assert not allowed("https://apps.evil.com/us/app/id123456789", app)
        assert not allowed("https://play.google.com/store/apps/details?id=id123456789", app)
    named = app_pb2.App(app_id="com.example.ios", platform=app_pb2.PLATFORM_IOS)
    assert not allowed("https://apps.apple.com/us/app/id123456789", named)
    other = app_pb2.App(app_id="com.example.game", platform=app_pb2.PLATFORM_OTHER)
    assert not allowed("https://play.google.com/store/apps/details?id=com.example.game", other)


def _violations(app: app_pb2.App) -> dict[str, str]:
    v = Violations()
    check_app(v, app)
    return {item.field: item.description for item in v.items}


def test_check_app_validates_the_allowlist() -> None:
    good = ["example.com", "*.example.com", "xn--bcher-kva.de", "a-b.c", "192.0.2.1"]
    app = app_pb2.App(app_id="com.a", platform=app_pb2.PLATFORM_ANDROID)
    app.settings.redirect_allowlist.extend(good)
    assert _violations(app) == {}
    bad = [
        "*",
        "*.com",
        "http://example.com",
        "example.com/",
        "-a.com",
        "exa mple.com",
        "a..com",
        "*.*.example.com",
        "example.com\n",
        "",
        "bücher.de",
        "example.com:443",
    ]
    app.settings.redirect_allowlist[:] = bad
    found = _violations(app)
    assert set(found) == {f"settings.redirect_allowlist[{i}]" for i in range(len(bad))}
    app.settings.redirect_allowlist[:] = [f"h{i}.example.com" for i in range(51)]
    assert set(_violations(app)) == {"settings.redirect_allowlist"}
