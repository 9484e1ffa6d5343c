"""Attribution links through the real gateway (docs/security.md, "Attribution
links"): signed links, redirect targets, unknown apps, the client's address
and rate limits. Every refusal is checked to have stored nothing, and every
acceptance to have stored the touch as it should be."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import grpc
import pytest

from lookback.api.apps.v1 import app_settings_service_pb2 as apps_pb
from lookback.api.apps.v1 import app_settings_service_pb2_grpc as apps_grpc
from lookback.api.store.v1 import touchpoint_store_service_pb2 as store_pb
from lookback.api.store.v1 import touchpoint_store_service_pb2_grpc as store_grpc
from lookback.api.types.v1 import postback_pb2, touch_pb2
from lookback.core.linksig import sign
from lookback.testing import builders
from lookback.testing.keys import admin_headers, bearer
from lookback.testing.suite import SuiteAddresses, start_gateway

SECRET = "networka-link-secret"
CHROME = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko)"
    " Chrome/124.0.0.0 Mobile Safari/537.36"
)
DALVIK = "Dalvik/2.1.0 (Linux; U; Android 14; Pixel 8 Build/UD1A.230803.041)"


@dataclass(frozen=True)
class Gateways:
    default: str
    """The suite's own: no link signing secrets, no trusted proxies, no limits."""
    signed: str
    """Knows networka's link signing secret."""
    proxied: str
    """Behind one trusted proxy (``trusted_proxies=1``)."""
    limited: str
    """Low rate limits (2 at once, then one per 100 s), behind one trusted proxy."""


@pytest.fixture(scope="module")
async def gateways(suite: SuiteAddresses) -> AsyncIterator[Gateways]:
    started = [
        await start_gateway(suite, signing_secrets={"networka": SECRET, "networkb": "b-secret"}),
        await start_gateway(suite, trusted_proxies=1),
        await start_gateway(
            suite,
            trusted_proxies=1,
            link_rate_limit=0.01,
            link_rate_burst=2,
            sdk_rate_limit=0.01,
            sdk_rate_burst=2,
        ),
    ]
    yield Gateways(suite.gateway_url, *(url for _, url in started))
    for server, _ in started:
        await server.stop(grace=1.0)


@dataclass(frozen=True)
class App:
    app_id: str
    sdk: str
    s2s: str


async def new_app(apps: apps_grpc.AppSettingsServiceStub, **options: Any) -> App:
    app = builders.app(builders.new_app_id("com.links"), **options)
    created = await apps.CreateApp(apps_pb.CreateAppRequest(app=app))
    return App(app.app_id, created.keys.sdk, created.keys.s2s)


async def get(
    url: str, params: Any, headers: dict[str, str] | None = None
) -> tuple[int, Any, aiohttp.typedefs.LooseHeaders]:
    async with (
        aiohttp.ClientSession() as http,
        http.get(url, params=params, headers=headers or {}, allow_redirects=False) as r,
    ):
        body = await r.json() if r.content_type == "application/json" else await r.text()
        return r.status, body, r.headers


async def post(
    url: str, body: Any, headers: dict[str, str]
) -> tuple[int, Any, aiohttp.typedefs.LooseHeaders]:
    async with aiohttp.ClientSession() as http, http.post(url, json=body, headers=headers) as r:
        return r.status, await r.json(), r.headers


def fields(body: Any) -> set[str]:
    return {v["field"] for v in body["error"].get("field_violations", [])}


async def stored(
    store: store_grpc.TouchpointStoreServiceStub, app_id: str, *click_ids: str
) -> dict[str, touch_pb2.Touch]:
    found = await store.FindTouches(
        store_pb.FindTouchesRequest(app_id=app_id, click_ids=list(click_ids))
    )
    return {t.click_id: t for t in found.touches}


def link(app_id: str, click_id: str, media_source: str = "networka", **more: str) -> dict[str, str]:
    return {"app_id": app_id, "media_source": media_source, "click_id": click_id, **more}


def cid(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


# Signed links ---------------------------------------------------------------


async def test_signed_links_where_the_partner_requires_them(
    gateways: Gateways,
    apps: apps_grpc.AppSettingsServiceStub,
    store: store_grpc.TouchpointStoreServiceStub,
) -> None:
    app = builders.app(builders.new_app_id("com.links"))
    a = app.settings.postbacks["networka"]
    a.signing_secret, a.click_signing = "networka", postback_pb2.CLICK_SIGNING_REQUIRED
    b = app.settings.postbacks["networkb"]
    b.signing_secret, b.click_signing = "networkb", postback_pb2.CLICK_SIGNING_OFF
    await apps.CreateApp(apps_pb.CreateAppRequest(app=app))
    app_id, now = app.app_id, int(time.time())
    url = f"{gateways.signed}/v1/click"
    campaign = {"campaign": "spring sale/été+1"}  # spaces, slashes, UTF-8: encoded both ways

    refused: dict[str, tuple[Any, str]] = {
        "unsigned": (link(app_id, cid("unsigned"), **campaign), "sig"),
        "other-secret": (sign(link(app_id, cid("other"), **campaign), "nope", now), "sig"),
        "stale": (sign(link(app_id, cid("stale")), SECRET, now - 301), "ts"),
        "future": (sign(link(app_id, cid("future")), SECRET, now + 400), "ts"),
        "no-ts": (
            [kv for kv in sign(link(app_id, cid("nots")), SECRET, now) if kv[0] != "ts"],
            "ts",
        ),
        "tampered": (
            [
                (k, "autumn" if k == "campaign" else v)
                for k, v in sign(link(app_id, cid("tampered"), **campaign), SECRET, now)
            ],
            "sig",
        ),
        "added": (
            [*sign(link(app_id, cid("added")), SECRET, now), ("gaid", builders.new_gaid())],
            "sig",
        ),
        "networkb-bad-sig": (
            sign(link(app_id, cid("bbad"), "networkb"), "not-b-secret", now),
            "sig",
        ),
    }
    for name, (params, field) in refused.items():
        status, body, _ = await get(url, params)
        assert status == 401, (name, body)
        assert body["error"]["code"] == "UNAUTHENTICATED", name
        assert fields(body) == {field}, (name, body)
    ids = [dict(p)["click_id"] for p, _ in refused.values()]
    assert await stored(store, app_id, *ids) == {}

    # Signed right: stored, and its ip parameter is honoured.
    good = sign(link(app_id, cid("good"), ip="203.0.113.50", **campaign), SECRET, now - 200)
    status, body, _ = await get(url, good)
    assert status == 200, body
    # networkb does not require signing: unsigned is fine (its ip ignored),
    # and signed right counts as signed.
    plain = link(app_id, cid("bplain"), "networkb", ip="203.0.113.51")
    assert (await get(url, plain))[0] == 200
    b_signed = sign(link(app_id, cid("bsigned"), "networkb", ip="203.0.113.52"), "b-secret", now)
    assert (await get(url, b_signed))[0] == 200
    got = await stored(
        store, app_id, dict(good)["click_id"], plain["click_id"], dict(b_signed)["click_id"]
    )
    assert got[dict(good)["click_id"]].ip == "203.0.113.50"
    assert got[dict(good)["click_id"]].campaign == campaign["campaign"]
    assert got[plain["click_id"]].ip == "127.0.0.1"
    assert got[dict(b_signed)["click_id"]].ip == "203.0.113.52"

    # A gateway without the partner's secret cannot check a signature: refused.
    other = sign(link(app_id, cid("nosecret")), SECRET, now)
    status, body, _ = await get(f"{gateways.default}/v1/click", other)
    assert status == 401 and fields(body) == {"sig"}
    assert await stored(store, app_id, dict(other)["click_id"]) == {}


async def test_app_settings_requiring_signed_links_need_a_secret(gateways: Gateways) -> None:
    app_id = builders.new_app_id("com.links")
    body = {
        "app_id": app_id,
        "platform": "android",
        "settings": {"postbacks": {"networka": {"click_signing": "required"}}},
    }
    status, answer, _ = await post(f"{gateways.default}/v1/apps", body, admin_headers())
    assert status == 400, answer
    assert fields(answer) == {"settings.postbacks[networka].signing_secret"}
    body["settings"]["postbacks"]["networka"]["signing_secret"] = "networka.2026"
    status, answer, _ = await post(f"{gateways.default}/v1/apps", body, admin_headers())
    assert status == 201, answer


# Redirects and unknown apps --------------------------------------------------


async def test_redirects_only_to_allowed_hosts_and_the_store_page(
    gateways: Gateways,
    apps: apps_grpc.AppSettingsServiceStub,
    store: store_grpc.TouchpointStoreServiceStub,
) -> None:
    app = await new_app(apps, redirect_allowlist=["landing.example.com", "*.promo.example.net"])
    url = f"{gateways.default}/v1/click"
    store_page = f"https://play.google.com/store/apps/details?id={app.app_id}&referrer=x%3Dy"
    followed = {
        cid("exact"): "https://landing.example.com/spring?x=1",
        cid("sub"): "https://deep.a.promo.example.net/",
        cid("store"): store_page,
    }
    for click_id, target in followed.items():
        status, body, headers = await get(url, link(app.app_id, click_id, redirect=target))
        assert status == 302, body
        assert headers["Location"] == target
    refused = {
        cid("evil"): "https://evil.test/",
        cid("apex"): "https://promo.example.net/",
        cid("sub-of-exact"): "https://www.landing.example.com/",
        cid("userinfo"): "https://landing.example.com@evil.test/",
        cid("other-app"): "https://play.google.com/store/apps/details?id=com.other",
        cid("ios-page"): "https://apps.apple.com/us/app/x/id123456789",
    }
    for click_id, target in refused.items():
        status, body, _ = await get(url, link(app.app_id, click_id, redirect=target))
        assert status == 400, (target, body)
        assert fields(body) == {"redirect"}, body
    assert set(await stored(store, app.app_id, *followed, *refused)) == set(followed)

    # The allowlist is the app's current one: changed through the gateway, it holds at once.
    patch = {"settings": {"redirect_allowlist": ["evil.test"]}}
    async with (
        aiohttp.ClientSession(headers=admin_headers()) as http,
        http.patch(f"{gateways.default}/v1/apps/{app.app_id}", json=patch) as r,
    ):
        assert r.status == 200, await r.text()
    now_ok = cid("now-ok")
    status, _, _ = await get(url, link(app.app_id, now_ok, redirect="https://evil.test/"))
    assert status == 302
    gone = cid("gone")
    status, _, _ = await get(url, link(app.app_id, gone, redirect="https://landing.example.com/"))
    assert status == 400
    assert set(await stored(store, app.app_id, now_ok, gone)) == {now_ok}


async def test_redirect_allowlist_entries_are_validated(gateways: Gateways) -> None:
    body = {
        "app_id": builders.new_app_id("com.links"),
        "platform": "ios",
        "settings": {"redirect_allowlist": ["ok.example.com", "https://x.example.com", "*.com"]},
    }
    status, answer, _ = await post(f"{gateways.default}/v1/apps", body, admin_headers())
    assert status == 400, answer
    assert fields(answer) == {"settings.redirect_allowlist[1]", "settings.redirect_allowlist[2]"}
    body["settings"]["redirect_allowlist"] = [f"h{i}.example.com" for i in range(51)]
    status, answer, _ = await post(f"{gateways.default}/v1/apps", body, admin_headers())
    assert status == 400 and fields(answer) == {"settings.redirect_allowlist"}


async def test_links_of_an_unknown_app_are_refused_and_not_stored(
    gateways: Gateways, store: store_grpc.TouchpointStoreServiceStub
) -> None:
    app_id = builders.new_app_id("com.links.unknown")
    click_id = cid("unknown")
    for path in ("/v1/click", "/v1/impression"):
        status, body, _ = await get(f"{gateways.default}{path}", link(app_id, click_id))
        assert status == 404, body
        assert body["error"]["code"] == "NOT_FOUND"
    assert await stored(store, app_id, click_id) == {}
    # Created through the gateway, its links are taken at once (no cached "unknown").
    created = {"app_id": app_id, "platform": "android"}
    assert (await post(f"{gateways.default}/v1/apps", created, admin_headers()))[0] == 201
    status, body, _ = await get(f"{gateways.default}/v1/click", link(app_id, click_id))
    assert status == 200, body
    assert set(await stored(store, app_id, click_id)) == {click_id}


# The client's address --------------------------------------------------------


async def fingerprint_install(
    url: str, app_id: str, key: str, ip: str = "", forwarded: str = ""
) -> dict[str, Any]:
    """An install with no device id: only IP and user agent can match it."""
    body: dict[str, Any] = {
        "app_id": app_id,
        "install_id": cid("i"),
        "user_agent": DALVIK,
        "os_version": "14",
    }
    if ip:
        body["ip"] = ip
    headers = bearer(key)
    if forwarded:
        headers["X-Forwarded-For"] = forwarded
    status, answer, _ = await post(f"{url}/v1/installs", body, headers)
    assert status == 200, answer
    return dict(answer["decision"])


async def test_a_forged_forwarded_for_is_used_only_through_trusted_proxies(
    gateways: Gateways,
    apps: apps_grpc.AppSettingsServiceStub,
    store: store_grpc.TouchpointStoreServiceStub,
) -> None:
    ua = {"User-Agent": CHROME}
    hour_ago = {"engaged_at": builders.iso_ago(3600)}

    # No trusted proxy (the default): the header and an anonymous ip are ignored.
    x = await new_app(apps)
    forged, param, keyed = cid("forged"), cid("param"), cid("s2s")
    await get(
        f"{gateways.default}/v1/click",
        link(x.app_id, forged, **hour_ago),
        {**ua, "X-Forwarded-For": "203.0.113.7"},
    )
    await get(
        f"{gateways.default}/v1/click", link(x.app_id, param, ip="203.0.113.9", **hour_ago), ua
    )
    for key, click_id in ((x.sdk, cid("sdk")), (x.s2s, keyed)):
        params = link(x.app_id, click_id, ip="203.0.113.10", **hour_ago)
        assert (await get(f"{gateways.default}/v1/click", params, {**ua, **bearer(key)}))[0] == 200
    got = await stored(store, x.app_id, forged, param, keyed)
    assert (got[forged].ip, got[param].ip, got[keyed].ip) == (
        "127.0.0.1",
        "127.0.0.1",
        "203.0.113.10",
    )
    # So an install from 203.0.113.7 finds no click there...
    decision = await fingerprint_install(gateways.default, x.app_id, x.s2s, ip="203.0.113.7")
    assert decision["media_source"] == "organic", decision
    # ...and one from the s2s-named address finds that click.
    decision = await fingerprint_install(gateways.default, x.app_id, x.s2s, ip="203.0.113.10")
    assert (decision["method"], decision["click_id"]) == ("probabilistic", keyed), decision

    # One trusted proxy: the right-most address is the client's.
    y = await new_app(apps)
    proxied = cid("proxied")
    status, _, _ = await get(
        f"{gateways.proxied}/v1/click",
        link(y.app_id, proxied, **hour_ago),
        {**ua, "X-Forwarded-For": "198.51.100.9, 203.0.113.8"},
    )
    assert status == 200
    assert (await stored(store, y.app_id, proxied))[proxied].ip == "203.0.113.8"
    # An SDK install through the proxy: its own ip field ignored, the proxy's address used.
    decision = await fingerprint_install(
        gateways.proxied, y.app_id, y.sdk, ip="198.51.100.9", forwarded="198.51.100.9, 203.0.113.8"
    )
    assert (decision["method"], decision["click_id"]) == ("probabilistic", proxied), decision
    # Nothing was stored at the forged (left) address.
    decision = await fingerprint_install(gateways.proxied, y.app_id, y.s2s, ip="198.51.100.9")
    assert decision["media_source"] == "organic", decision


# Rate limits -----------------------------------------------------------------


async def test_rate_limits_answer_429_and_store_nothing(
    gateways: Gateways,
    apps: apps_grpc.AppSettingsServiceStub,
    store: store_grpc.TouchpointStoreServiceStub,
) -> None:
    app = await new_app(apps)
    url = f"{gateways.limited}/v1/click"
    client = {"X-Forwarded-For": "192.0.2.77"}
    ok = [cid("ok"), cid("ok")]
    for click_id in ok:
        assert (await get(url, link(app.app_id, click_id), client))[0] == 200
    over = cid("over")
    status, body, headers = await get(url, link(app.app_id, over), client)
    assert status == 429, body
    assert body["error"]["code"] == "RESOURCE_EXHAUSTED"
    assert int(headers["Retry-After"]) >= 1
    status, _, _ = await get(
        f"{gateways.limited}/v1/impression", link(app.app_id, cid("imp")), client
    )
    assert status == 429  # one bucket for both link routes
    # Another client address has its own bucket.
    other = cid("other-ip")
    assert (await get(url, link(app.app_id, other), {"X-Forwarded-For": "192.0.2.78"}))[0] == 200
    assert set(await stored(store, app.app_id, *ok, over, other)) == {*ok, other}

    # SDK routes: per key, installs, opens, events and touch batches together.
    install_url = f"{gateways.limited}/v1/installs"
    installs = [builders.install(app.app_id) for _ in range(3)]
    for install in installs[:2]:
        body = {"app_id": app.app_id, "install_id": install.install_id}
        assert (await post(install_url, body, bearer(app.sdk)))[0] == 200
    body = {"app_id": app.app_id, "install_id": installs[2].install_id}
    status, answer, headers = await post(install_url, body, bearer(app.sdk))
    assert status == 429 and answer["error"]["code"] == "RESOURCE_EXHAUSTED", answer
    assert int(headers["Retry-After"]) >= 1
    opened = {"app_id": app.app_id, "install_id": installs[0].install_id}
    assert (await post(f"{gateways.limited}/v1/opens", opened, bearer(app.sdk)))[0] == 429
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await store.GetInstallRecord(
            store_pb.GetInstallRecordRequest(app_id=app.app_id, install_id=installs[2].install_id)
        )
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    # The app's s2s key and an admin key have buckets of their own.
    assert (await post(install_url, body, bearer(app.s2s)))[0] == 200
    touches = {"touches": [{"app_id": app.app_id, "type": "click", "media_source": "networka"}]}
    status, answer, _ = await post(f"{gateways.limited}/v1/touches", touches, admin_headers())
    assert status == 200, answer
