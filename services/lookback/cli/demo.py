"""``lookback demo``: a few clicks and installs through the HTTP gateway,
and the decisions as a table."""

from __future__ import annotations

import asyncio
import itertools
import ssl
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp

DEMO_APP = "com.lookback.demo"
ANDROID_UA = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/124.0 Mobile Safari/537.36"
)
OTHER_PHONE_UA = ANDROID_UA.replace("Pixel 8", "Pixel 7")


def _gaid() -> str:
    return str(uuid.uuid4())


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def _call(session: aiohttp.ClientSession, method: str, url: str, **kw: Any) -> dict[str, Any]:
    async with session.request(method, url, **kw) as response:
        body: dict[str, Any] = await response.json()
        if response.status >= 400 and response.status != 409:
            raise RuntimeError(f"{method} {url} -> {response.status}: {body}")
        return body


def _ms(duration: str) -> str:
    """``0.00287s`` -> ``2.9 ms``."""
    return f"{float(duration.rstrip('s') or 0) * 1000:.1f} ms"


def table(rows: list[dict[str, str]], columns: list[str]) -> str:
    widths = {c: max(len(c), *(len(r.get(c, "")) for r in rows)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns)]
    lines.append("  ".join("-" * widths[c] for c in columns))
    lines += ["  ".join(r.get(c, "").ljust(widths[c]) for c in columns) for r in rows]
    return "\n".join(lines)


async def _sdk_key(s: aiohttp.ClientSession, gateway: str, admin: dict[str, str]) -> str:
    """The demo app's ``sdk`` key: from creating the app, or (when it exists
    from an earlier run) a new one by rotation, the old one kept for a day."""
    created = await _call(
        s,
        "POST",
        f"{gateway}/v1/apps",
        headers=admin,
        json={
            "app_id": DEMO_APP,
            "platform": "android",
            "settings": {"click_lookback": "7d", "view_lookback": "24h"},
        },
    )
    if "keys" in created:
        return str(created["keys"]["sdk"])
    rotated = await _call(
        s,
        "POST",
        f"{gateway}/v1/apps/{DEMO_APP}/keys:rotate",
        headers=admin,
        json={"scope": "sdk", "grace_period": "24h"},
    )
    return str(rotated["key"])


async def run_demo(gateway: str, admin_key: str, ssl_context: ssl.SSLContext | None = None) -> int:
    """Drive the gateway at ``gateway`` (an ``https`` one verified with
    ``ssl_context``, else the system's CAs) with ``admin_key`` and the demo
    app's own key, and print the decisions."""
    now = datetime.now(UTC)
    run = uuid.uuid4().hex[:6]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_context or True)) as s:
        admin = {"Authorization": f"Bearer {admin_key}"}
        sdk = {"Authorization": f"Bearer {await _sdk_key(s, gateway, admin)}"}
        alice, bob, carol = _gaid(), _gaid(), _gaid()

        async def touch(kind: str, source: str, campaign: str, device: str, ago: timedelta) -> str:
            params = {
                "app_id": DEMO_APP,
                "media_source": source,
                "campaign": campaign,
                "gaid": device,
                "engaged_at": _iso(now - ago),
                "click_id": f"{source}-{run}-{device[:4]}",
            }
            body = await _call(
                s, "GET", f"{gateway}/v1/{kind}", params=params, headers={"User-Agent": ANDROID_UA}
            )
            return str(body["click_id"])

        # Installs come from the clicks' own address (an SDK key cannot name
        # another IP: docs/security.md), so bob's phone is another model:
        # nothing matches it by IP and user agent either.
        async def install(
            label: str, install_id: str, device: str, ua: str = ANDROID_UA, **extra: Any
        ) -> dict[str, str]:
            body = await _call(
                s,
                "POST",
                f"{gateway}/v1/installs",
                headers=sdk,
                json={
                    "app_id": DEMO_APP,
                    "install_id": install_id,
                    "device": {"gaid": device},
                    "user_agent": ua,
                    "os_version": "14",
                    "installed_at": _iso(now),
                    **extra,
                },
            )
            d = body["decision"]
            return {
                "scenario": label,
                "install_id": install_id,
                "kind": d["kind"],
                "media_source": d["media_source"],
                "campaign": d.get("campaign", ""),
                "method": d["method"],
                "touch": d["touch_type"],
                "click_id": d.get("click_id", ""),
                "contributors": ",".join(d.get("contributors", [])),
                "deep_link": _deep_link(d),
                "latency": _ms(d.get("latency", "0s")),
            }

        async def follow_link() -> tuple[str, str]:
            """A link with a deep link, followed from an Android browser (the
            redirect not followed): its URL and the Play referrer it carried."""
            created = await _call(
                s,
                "POST",
                f"{gateway}/v1/apps/{DEMO_APP}/links",
                headers=admin,
                json={
                    "media_source": "networkd",
                    "campaign": "summer_links",
                    "deep_link_value": "product/42",
                    "deep_link_params": {"color": "red"},
                },
            )
            url = created["link"]["url"]
            # The partner says the tap was 10 minutes ago (an install right
            # after its click would be rejected as too soon: min_ctit).
            params = {"engaged_at": _iso(now - timedelta(minutes=10))}
            async with s.get(
                url, params=params, headers={"User-Agent": ANDROID_UA}, allow_redirects=False
            ) as r:
                if r.status != 302:
                    raise RuntimeError(f"GET {url} -> {r.status}: {await r.text()}")
                location = r.headers["Location"]
            referrer = parse_qs(urlsplit(location).query)["referrer"][0]
            return f"GET {url} (Android) -> 302 {location}", referrer

        await touch("click", "networka", "spring_sale", alice, timedelta(hours=3))
        await touch("impression", "networkb", "video", carol, timedelta(hours=5))
        await touch("click", "networkc", "retarget_q2", carol, timedelta(hours=2))
        followed, referrer = await follow_link()
        rows = [
            await install("clicked networka", f"alice-{run}", alice),
            await install("no ad seen", f"bob-{run}", bob, OTHER_PHONE_UA),
            await install("saw b, clicked c", f"carol-{run}", carol),
            await install("same install again", f"alice-{run}", alice),
            await install(
                "followed a link",
                f"dave-{run}",
                _gaid(),
                OTHER_PHONE_UA,
                install_referrer={"referrer": referrer},
            ),
        ]
    print(followed)
    print()
    print(
        table(
            rows,
            [
                "scenario",
                "install_id",
                "kind",
                "media_source",
                "campaign",
                "method",
                "touch",
                "contributors",
                "deep_link",
                "latency",
            ],
        )
    )
    return 0


def _deep_link(d: dict[str, Any]) -> str:
    """``product/42 (guaranteed)``: the decision's deferred deep link."""
    value = d.get("deep_link_value", "")
    if not value:
        return ""
    return f"{value} ({'guaranteed' if d.get('match_guaranteed') else 'probable'})"


TRAFFIC_SOURCES = ("networka", "networkb", "networkc")


async def demo_traffic(
    gateway: str,
    admin_key: str,
    ssl_context: ssl.SSLContext | None = None,
    interval: float = 2.0,
) -> None:
    """Keep a trickle of clicks and installs flowing (until cancelled), so the
    dashboard has something to show: every ``interval`` seconds a click of one
    of three partners and, two times in three, its install (and every other
    install a purchase); now and then an organic install."""
    connector = aiohttp.TCPConnector(ssl=ssl_context or True)
    async with aiohttp.ClientSession(connector=connector) as s:
        admin = {"Authorization": f"Bearer {admin_key}"}
        for n in itertools.count():
            device = _gaid()
            source = TRAFFIC_SOURCES[n % len(TRAFFIC_SOURCES)]
            try:
                if n % 5 != 4:
                    await _call(
                        s,
                        "GET",
                        f"{gateway}/v1/click",
                        params={
                            "app_id": DEMO_APP,
                            "media_source": source,
                            "campaign": f"live_{n % 2}",
                            "gaid": device,
                        },
                        headers={"User-Agent": ANDROID_UA},
                    )
                if n % 3 != 2:
                    await _call(
                        s,
                        "POST",
                        f"{gateway}/v1/installs",
                        headers=admin,
                        json={
                            "app_id": DEMO_APP,
                            "install_id": f"live-{device[:8]}",
                            "device": {"gaid": device},
                            "os_version": "14",
                        },
                    )
                    if n % 2 == 0:  # a purchase now and then: events and revenue
                        await _call(
                            s,
                            "POST",
                            f"{gateway}/v1/events",
                            headers=admin,
                            json={
                                "app_id": DEMO_APP,
                                "install_id": f"live-{device[:8]}",
                                "name": "purchase",
                                "revenue": f"{1 + n % 7}.99",
                                "currency": "USD" if n % 4 else "EUR",
                            },
                        )
            except (aiohttp.ClientError, RuntimeError):
                pass  # the suite restarting a service: the next round tries again
            await asyncio.sleep(interval)
