"""Fraud hardening (ATTRIBUTION_RULES.md section 6): the address classes
probabilistic matching never uses, the IP blocklist, the bot list, click
flooding (``max_ctit``), and the ``rejected`` postbacks."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lookback.domain import addresses, rules, useragent
from lookback.domain.durations import DAY, HOUR, MINUTE
from lookback.domain.model import (
    Decision,
    Device,
    Install,
    Method,
    PartnerPostbacks,
    PostbackTemplate,
    Reason,
    Settings,
    Touch,
    TouchType,
    Verdict,
)
from lookback.domain.postbacks import for_decision

T0 = 1_780_000_000_000_000
GAID = "38400000-8cf0-11bd-b23e-10b96e40000d"
UA = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36"

SHARED = [
    "0.0.0.0",
    "0.1.2.3",
    "127.0.0.1",
    "127.255.255.254",
    "10.0.0.1",
    "10.255.255.255",
    "172.16.0.1",
    "172.31.255.255",
    "192.168.0.1",
    "192.168.255.255",
    "100.64.0.1",
    "100.127.255.255",
    "169.254.0.1",
    "169.254.255.255",
    "224.0.0.1",
    "239.255.255.255",
    "240.0.0.1",
    "255.255.255.255",
    "::",
    "::1",
    "fc00::1",
    "fdff:ffff::1",
    "fe80::1",
    "febf::1",
    "ff02::1",
    "::ffff:10.0.0.1",
    "::ffff:100.64.0.9",
    "not an address",
]
PUBLIC = [
    "8.8.8.8",
    "1.1.1.1",
    "100.63.255.255",
    "100.128.0.0",
    "172.15.255.255",
    "172.32.0.0",
    "192.0.2.1",
    "198.51.100.7",
    "203.0.113.5",
    "2001:db8::1",
    "2606:4700::1111",
    "::ffff:8.8.8.8",
]


@pytest.mark.parametrize("ip", SHARED)
def test_shared_and_special_addresses_are_recognised(ip: str) -> None:
    assert addresses.shared_or_special(ip)


@pytest.mark.parametrize("ip", PUBLIC)
def test_public_addresses_including_the_documentation_ranges_are_not(ip: str) -> None:
    assert not addresses.shared_or_special(ip)


def test_the_blocklist_takes_cidrs_and_bare_addresses_of_both_families() -> None:
    nets = addresses.parse_blocklist(["203.0.113.0/24", "198.51.100.9", "2001:db8:1::/48"])
    assert addresses.blocked("203.0.113.200", nets)
    assert addresses.blocked("198.51.100.9", nets)
    assert not addresses.blocked("198.51.100.10", nets)
    assert addresses.blocked("2001:db8:1:ffff::1", nets)
    assert not addresses.blocked("2001:db8:2::1", nets)
    assert addresses.blocked("::ffff:203.0.113.1", nets)  # IPv4 written as IPv6
    assert not addresses.blocked("", nets) and not addresses.blocked("junk", nets)
    with pytest.raises(ValueError, match=r"300\.1\.1\.1"):
        addresses.parse_blocklist(["300.1.1.1/8"])


BOTS = [
    "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
    "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
    "Mozilla/5.0 (Macintosh) AppleWebKit/605.1.15 (KHTML, like Gecko) Applebot/0.1",
    "Twitterbot/1.0",
    "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
    "Mozilla/5.0 (compatible; Discordbot/2.0; +https://discordapp.com)",
    "TelegramBot (like TwitterBot)",
    "LinkedInBot/1.0 (compatible; Mozilla/5.0; Apache-HttpClient +http://www.linkedin.com)",
    "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
    "WhatsApp/2.23.20.0 A",
    "Baiduspider+(+http://www.baidu.com/search/spider.htm)",
    "MyCrawler/1.0",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 HeadlessChrome/120.0.0.0 Safari",
    "curl/8.5.0",
    "Wget/1.21.4",
    "python-requests/2.31.0",
]


@pytest.mark.parametrize("ua", BOTS)
def test_known_automated_clients_are_bots(ua: str) -> None:
    assert useragent.is_bot(ua)


@pytest.mark.parametrize(
    "ua",
    [
        "",
        UA,
        "Mozilla/5.0 (Linux; Android 10; CUBOT KINGKONG 5 Pro) AppleWebKit/537.36",
        "Dalvik/2.1.0 (Linux; U; Android 12; CUBOT_X50 Build/SP1A)",
        "okhttp/4.12.0",
    ],
)
def test_phones_and_app_stacks_are_not_bots(ua: str) -> None:
    assert not useragent.is_bot(ua)


def _click(click_id: str, ago: int, **extra: object) -> Touch:
    fields: dict[str, object] = {
        "click_id": click_id,
        "type": TouchType.CLICK,
        "media_source": "networka",
        "engaged_at": T0 - ago,
        "device": Device(raw={"gaid": GAID}),
        "user_agent": UA,
    }
    fields.update(extra)
    return Touch(**fields)  # type: ignore[arg-type]


INSTALL = Install(install_id="i1", installed_at=T0, device=Device(raw={"gaid": GAID}))


def test_max_ctit_rejects_a_click_older_than_it_and_an_older_one_stays_rejected() -> None:
    s = Settings(max_ctit=6 * HOUR)
    out = rules.decide_install(
        INSTALL, s, [_click("flood", 7 * HOUR), _click("ok", 5 * HOUR, media_source="networkb")]
    )
    assert (out.media_source, out.click_id) == ("networkb", "ok")
    assert [(r.click_id, r.reason) for r in out.rejected] == [("flood", Reason.CTIT_TOO_LONG)]
    # Off by default: the same clicks, no rejection (the newer wins).
    assert rules.decide_install(INSTALL, Settings(), [_click("flood", 7 * HOUR)]).rejected == ()


def test_a_blocked_address_and_a_bot_are_rejected_clicks_and_impressions_alike() -> None:
    s = Settings(blocked_ips=addresses.parse_blocklist(["203.0.113.0/24"]))
    touches = [
        _click("blocked", HOUR, ip="203.0.113.9"),
        _click("bot", 2 * HOUR, user_agent="curl/8.5.0", media_source="networkb"),
        _click(
            "view",
            3 * HOUR,
            type=TouchType.IMPRESSION,
            user_agent="Googlebot/2.1",
            media_source="networkc",
        ),
        _click("fine", 4 * HOUR, media_source="networkd", user_agent=""),  # no agent: no bot
    ]
    out = rules.decide_install(INSTALL, s, touches)
    assert (out.media_source, out.click_id, out.contributors) == ("networkd", "fine", ())
    assert sorted((r.click_id, r.reason) for r in out.rejected) == [
        ("blocked", Reason.BLOCKED_IP),
        ("bot", Reason.BOT),
        ("view", Reason.BOT),
    ]
    verdicts = {c.click_id: (c.verdict, c.reason) for c in out.considered}
    assert verdicts["blocked"] == (Verdict.REJECTED, Reason.BLOCKED_IP)


@pytest.mark.parametrize("ip", ["100.64.7.7", "10.0.0.7", "192.168.1.7", "127.0.0.1", "fe80::7"])
def test_probabilistic_matching_never_uses_a_shared_address(ip: str) -> None:
    install = Install(install_id="i1", installed_at=T0, ip=ip, user_agent=UA, os_version="14")
    same_ip = _click("prob", HOUR, ip=ip, device=Device())
    out = rules.decide_install(install, Settings(), [same_ip])
    assert out.media_source == "organic"
    # Deterministic matching is not affected by the address.
    with_id = Install(
        install_id="i2", installed_at=T0, ip=ip, user_agent=UA, device=Device(raw={"gaid": GAID})
    )
    won = rules.decide_install(with_id, Settings(), [_click("det", HOUR, ip=ip)])
    assert (won.click_id, won.method) == ("det", Method.DEVICE_ID)


def test_probabilistic_matching_uses_a_public_documentation_address() -> None:
    ip = "198.51.100.7"
    install = Install(install_id="i1", installed_at=T0, ip=ip, user_agent=UA, os_version="14")
    out = rules.decide_install(install, Settings(), [_click("prob", HOUR, ip=ip, device=Device())])
    assert (out.click_id, out.method) == ("prob", Method.PROBABILISTIC)


def test_each_rejected_touch_of_a_partner_with_a_template_gets_its_postback() -> None:
    template = PostbackTemplate(url="https://p.example/r?c={click_id}&why={rejection_reason}")
    s = Settings(
        max_ctit=DAY,
        postbacks={"networka": PartnerPostbacks(templates={"rejected": template})},
    )
    touches = [
        _click("old", 2 * DAY),
        _click("fast", 5),
        _click("winner", 30 * MINUTE, media_source="networkb"),
    ]
    out = rules.decide_install(INSTALL, s, touches)
    d = Decision(decision_id="d1", app_id="a", install_id="i1", outcome=out, event_time=T0)
    jobs = for_decision(s, d)
    assert sorted((j.job_id, j.url) for j in jobs) == [
        ("d1/r0:networka:rejected", "https://p.example/r?c=old&why=ctit_too_long"),
        ("d1/r1:networka:rejected", "https://p.example/r?c=fast&why=ctit_too_short"),
    ]
    # The winner has no install template: nothing else is sent.
    assert {j.trigger for j in jobs} == {"rejected"}


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.integers(0, 2**32 - 1), st.integers(8, 32)).map(
                lambda t: f"{ipaddress.IPv4Address(t[0])}/{t[1]}"
            ),
            st.tuples(st.integers(0, 2**128 - 1), st.integers(16, 128)).map(
                lambda t: f"{ipaddress.IPv6Address(t[0])}/{t[1]}"
            ),
        ),
        max_size=30,
    ),
    st.lists(
        st.one_of(
            st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n))),
            st.integers(0, 2**128 - 1).map(lambda n: str(ipaddress.IPv6Address(n))),
        ),
        max_size=20,
    ),
)
def test_the_blocklist_lookup_agrees_with_plain_membership(
    cidrs: list[str], ips: list[str]
) -> None:
    blocklist = addresses.parse_blocklist(cidrs)
    nets = [ipaddress.ip_network(c, strict=False) for c in cidrs]
    # Every address inside an entry, and the given ones, are judged alike.
    probes = ips + [str(n.network_address) for n in nets] + [str(n.broadcast_address) for n in nets]
    for ip in probes:
        address = addresses.parse(ip)
        assert address is not None
        plain = any(address.version == n.version and address in n for n in nets)
        assert addresses.blocked(ip, blocklist) is plain, (ip, cidrs)


def test_a_long_blocklist_is_looked_up_without_walking_it() -> None:
    cidrs = [f"198.{n // 256}.{n % 256}.0/24" for n in range(10_000)]
    blocklist = addresses.parse_blocklist(cidrs)
    assert len(blocklist.starts[0]) == 1  # 10,000 adjacent /24s merge into one range
    assert addresses.blocked("198.39.15.7", blocklist)
    assert not addresses.blocked("198.39.16.0", blocklist)
