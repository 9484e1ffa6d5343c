"""The pure rules, directly: no services, no clock."""

from __future__ import annotations

from lookback.domain import rules
from lookback.domain.devices import install_device_keys, touch_device_keys
from lookback.domain.durations import DAY, HOUR, SECOND, format_duration, parse_duration
from lookback.domain.model import (
    Device,
    HashedId,
    Install,
    Kind,
    Method,
    Settings,
    Touch,
    TouchType,
)
from lookback.domain.useragent import normalise

T0 = 1_780_000_000 * SECOND
GAID = "38400000-8cf0-11bd-b23e-10b96e40000d"


def click(click_id: str, source: str, ago: int, **kw: object) -> Touch:
    kw.setdefault("device", Device(raw={"gaid": GAID}))
    return Touch(
        click_id=click_id, type=TouchType.CLICK, media_source=source, engaged_at=T0 - ago, **kw
    )  # type: ignore[arg-type]


def install(**kw: object) -> Install:
    kw.setdefault("device", Device(raw={"gaid": GAID}))
    return Install(install_id="i1", installed_at=T0, **kw)  # type: ignore[arg-type]


def test_durations_round_trip() -> None:
    for text in ("30s", "90m", "24h", "7d", "3mo", "0"):
        assert parse_duration(format_duration(parse_duration(text))) == parse_duration(text)
    assert parse_duration("90m") == 90 * 60 * SECOND
    assert format_duration(24 * HOUR) == "1d"


def test_device_click_wins_and_window_boundary_qualifies() -> None:
    s = Settings()
    out = rules.decide_install(install(), s, [click("c1", "networka", 7 * DAY)])
    assert (out.kind, out.media_source, out.method) == (Kind.INSTALL, "networka", Method.DEVICE_ID)
    out = rules.decide_install(install(), s, [click("c1", "networka", 7 * DAY + 1)])
    assert out.media_source == "organic"


def test_most_recent_click_wins_and_others_contribute() -> None:
    out = rules.decide_install(
        install(),
        Settings(),
        [
            click("c1", "networka", 3 * HOUR),
            click("c2", "networkb", 2 * HOUR),
            click("c3", "networkc", 1 * HOUR),
        ],
    )
    assert out.media_source == "networkc"
    assert out.contributors == ("networkb", "networka")


def test_hashed_identifiers_match_and_zero_ids_never_do() -> None:
    import hashlib

    digest = hashlib.sha1(GAID.encode()).hexdigest()
    keys = install_device_keys(Device(raw={"gaid": GAID.upper()}))
    assert touch_device_keys(Device(hashed=(HashedId("gaid", "sha1", digest),))) <= keys
    zero = "00000000-0000-0000-0000-000000000000"
    assert install_device_keys(Device(raw={"gaid": zero})) == set()
    out = rules.decide_install(
        install(device=Device(raw={"gaid": zero})),
        Settings(),
        [click("c1", "networka", HOUR, device=Device(raw={"gaid": zero}))],
    )
    assert out.media_source == "organic"


def test_ctit_too_short_is_rejected_and_never_wins() -> None:
    out = rules.decide_install(
        install(),
        Settings(),
        [
            click("c1", "networka", 5 * SECOND),
            click("c2", "networkb", HOUR),
        ],
    )
    assert out.media_source == "networkb"
    assert [(r.click_id, r.reason.value) for r in out.rejected] == [("c1", "ctit_too_short")]
    assert "networka" not in out.contributors


def test_user_agents_normalise_across_browsers_and_app_stacks() -> None:
    chrome = normalise("Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36")
    dalvik = normalise("Dalvik/2.1.0 (Linux; U; Android 14; Pixel 8 Build/UD1A.230803.041)")
    assert chrome == dalvik
    safari = normalise("Mozilla/5.0 (iPhone; CPU iPhone OS 17_4_1 like Mac OS X) AppleWebKit")
    cfnet = normalise("MyGame/3 CFNetwork/1494.0.7 Darwin/23.4.0")
    assert (safari.os, safari.os_version, safari.model) == ("ios", "17.4", "iphone")
    assert safari == cfnet
