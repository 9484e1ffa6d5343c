"""Links end to end through the gateway (LINKS.md): a link created over
HTTP, followed by Android, iOS, desktop and crawler browsers (redirects not
followed: each ``Location`` asserted), the Play referrer loop closed by an
install that carries the referrer the ``Location`` held, deferred deep links
in the decision, disabled links, and the ``.well-known`` files."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest

from lookback.api.store.v1 import touchpoint_store_service_pb2 as store_pb
from lookback.api.store.v1 import touchpoint_store_service_pb2_grpc as store_grpc
from lookback.testing.keys import admin_channel, admin_headers, bearer
from lookback.testing.suite import EphemeralSuite, SuiteAddresses

ANDROID = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko)"
    " Chrome/124.0.0.0 Mobile Safari/537.36"
)
IOS = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15"
    " (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
)
DESKTOP = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124"
CRAWLER = "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)"
FINGERPRINT = ":".join(["AB"] * 32)
LINK_SETTINGS = {
    "ios_app_store_id": "1234567890",
    "web_fallback_url": "https://shop.example/spring",
    "ios_team_id": "ABCDE12345",
    "ios_bundle_id": "com.example.shop",
    "android_sha256_cert_fingerprints": [FINGERPRINT],
}


@pytest.fixture(scope="module")
async def running(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SuiteAddresses]:
    suite = EphemeralSuite(Path(tmp_path_factory.mktemp("links")))
    addresses = await suite.start()
    yield addresses
    await suite.stop()


async def _app(base: str, settings: dict[str, Any] | None = None) -> tuple[str, dict[str, str]]:
    app_id = f"com.links.t{uuid.uuid4().hex[:8]}"
    body = {"app_id": app_id, "platform": "android", "settings": settings or {}}
    async with aiohttp.ClientSession(headers=admin_headers()) as http:
        async with http.post(f"{base}/v1/apps", json=body) as r:
            assert r.status == 201, await r.text()
            return app_id, (await r.json())["keys"]


async def _link(base: str, app_id: str, key: str, **fields: Any) -> dict[str, Any]:
    body = {"media_source": "networka", "campaign": "spring", **fields}
    async with aiohttp.ClientSession() as http:
        async with http.post(f"{base}/v1/apps/{app_id}/links", json=body, headers=bearer(key)) as r:
            answer = await r.json()
            assert r.status == 201, answer
            link: dict[str, Any] = answer["link"]
            return link


async def _follow(url: str, user_agent: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http:
        async with http.get(url, headers={"User-Agent": user_agent}, allow_redirects=False) as r:
            return r.status, r.headers.get("Location", "")


def _ago(seconds: float) -> str:
    return (datetime.now(UTC) - timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


async def _stored_clicks(store: str, app_id: str) -> list[str]:
    """Click ids the store recorded for the app (its outcomes log's touch entries)."""
    async with admin_channel(store) as channel:
        stub = store_grpc.TouchpointStoreServiceStub(channel)
        log = await stub.ReadOutcomes(store_pb.ReadOutcomesRequest(app_id=app_id, limit=1000))
    return [t.click_id for o in log.outcomes if o.HasField("touches") for t in o.touches.touches]


async def test_a_link_routes_by_platform_and_closes_the_play_referrer_loop(
    running: SuiteAddresses,
) -> None:
    base = running.gateway_url
    app_id, keys = await _app(base, {"links": LINK_SETTINGS})
    link = await _link(
        base,
        app_id,
        keys["s2s"],
        deep_link_value="product/42",
        deep_link_params={"color": "red"},
    )
    assert link["url"].endswith(f"/l/{link['code']}")

    # Clicked five minutes ago (a partner may say when): an install at once
    # would be rejected as too soon after its click (min_ctit, 10 s).
    status, location = await _follow(f"{link['url']}?engaged_at={_ago(300)}", ANDROID)
    assert status == 302
    play = urlsplit(location)
    assert (play.scheme, play.netloc, play.path) == (
        "https",
        "play.google.com",
        "/store/apps/details",
    )
    query = parse_qs(play.query)
    assert query["id"] == [app_id]
    referrer = query["referrer"][0]
    carried = parse_qs(referrer)
    assert carried["utm_source"] == ["networka"] and carried["utm_campaign"] == ["spring"]
    click_id = carried["click_id"][0]

    assert await _follow(link["url"], IOS) == (302, "https://apps.apple.com/app/id1234567890")
    assert await _follow(link["url"], DESKTOP) == (302, "https://shop.example/spring")
    # A chat app's link preview: sent on, not counted.
    assert await _follow(link["url"], CRAWLER) == (302, "https://shop.example/spring")
    clicks = await _stored_clicks(running.store, app_id)
    assert len(clicks) == 3 and click_id in clicks

    # The install carries the referrer the Play page was given.
    install = {
        "app_id": app_id,
        "install_id": f"i-{uuid.uuid4().hex[:8]}",
        "device": {"gaid": str(uuid.uuid4())},
        "install_referrer": {"referrer": referrer},
    }
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{base}/v1/installs",
            json=install,
            headers={**bearer(keys["sdk"]), "User-Agent": ANDROID},
        ) as r:
            answer = await r.json()
            assert r.status == 200, answer
    decision = answer["decision"]
    assert decision["method"] == "install_referrer" and decision["click_id"] == click_id
    assert decision["media_source"] == "networka" and decision["campaign"] == "spring"
    assert decision["deep_link_value"] == "product/42"
    assert decision["deep_link_params"] == {"color": "red"}
    assert decision["match_guaranteed"] is True


async def test_a_disabled_link_redirects_to_the_fallback_and_records_nothing(
    running: SuiteAddresses,
) -> None:
    base = running.gateway_url
    app_id, keys = await _app(base, {"links": LINK_SETTINGS})
    link = await _link(base, app_id, keys["s2s"], web_fallback_url="https://shop.example/own")
    async with aiohttp.ClientSession() as http:
        url = f"{base}/v1/apps/{app_id}/links/{link['code']}:disable"
        async with http.post(url, headers=bearer(keys["s2s"])) as r:
            assert r.status == 200 and (await r.json())["link"]["disabled"] is True
    for agent in (ANDROID, IOS, DESKTOP):
        assert await _follow(link["url"], agent) == (302, "https://shop.example/own")
    assert await _stored_clicks(running.store, app_id) == []


async def test_link_codes_are_random_and_links_are_the_apps_own(running: SuiteAddresses) -> None:
    base = running.gateway_url
    app_id, keys = await _app(base)
    other, other_keys = await _app(base)
    codes = {(await _link(base, app_id, keys["s2s"]))["code"] for _ in range(20)}
    assert len(codes) == 20
    for code in codes:  # 12 random bytes (96 bits), URL-safe
        assert len(base64.urlsafe_b64decode(code + "=" * (-len(code) % 4))) == 12
    code = next(iter(codes))
    async with aiohttp.ClientSession() as http:
        # Another app's key, the app's sdk key: refused; another app's path: unknown.
        for url, key, status in (
            (f"{base}/v1/apps/{app_id}/links/{code}", other_keys["s2s"], 403),
            (f"{base}/v1/apps/{app_id}/links/{code}", keys["sdk"], 403),
            (f"{base}/v1/apps/{other}/links/{code}", other_keys["s2s"], 404),
            (f"{base}/v1/apps/{app_id}/links/{code}", keys["s2s"], 200),
        ):
            async with http.get(url, headers=bearer(key)) as r:
                assert r.status == status, (url, await r.text())
        async with http.get(f"{base}/v1/apps/{app_id}/links", headers=bearer(keys["s2s"])) as r:
            assert sorted(x["code"] for x in (await r.json())["links"]) == sorted(codes)
        # A partner cannot change what the link sets; a bad field is named.
        async with http.get(
            f"{base}/l/{code}?media_source=other", headers={"User-Agent": ANDROID}
        ) as r:
            assert r.status == 400
            fields = [v["field"] for v in (await r.json())["error"]["field_violations"]]
            assert fields == ["media_source"]
        async with http.get(f"{base}/l/nosuchcode", headers={"User-Agent": ANDROID}) as r:
            assert r.status == 404
        async with http.post(
            f"{base}/v1/apps/{app_id}/links",
            json={"media_source": "networka", "web_fallback_url": "http://x.example/"},
            headers=bearer(keys["s2s"]),
        ) as r:
            assert r.status == 400
            fields = [v["field"] for v in (await r.json())["error"]["field_violations"]]
            assert fields == ["web_fallback_url"]


async def test_the_well_known_files_list_the_apps_with_the_settings(
    running: SuiteAddresses,
) -> None:
    base = running.gateway_url
    app_id, _ = await _app(base, {"links": LINK_SETTINGS})
    bare, _ = await _app(base)
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/.well-known/apple-app-site-association") as r:
            assert r.status == 200 and r.content_type == "application/json"
            aasa = json.loads(await r.read())
        async with http.get(f"{base}/.well-known/assetlinks.json") as r:
            assert r.status == 200 and r.content_type == "application/json"
            assets = json.loads(await r.read())
    details = aasa["applinks"]["details"]
    assert {
        "appIDs": ["ABCDE12345.com.example.shop"],
        "components": [{"/": "/l/*", "comment": "Lookback links"}],
    } in details
    for d in details:
        assert set(d) == {"appIDs", "components"} and all("." in i for i in d["appIDs"])
    mine = [s for s in assets if s["target"]["package_name"] == app_id]
    assert mine == [
        {
            "relation": ["delegate_permission/common.handle_all_urls"],
            "target": {
                "namespace": "android_app",
                "package_name": app_id,
                "sha256_cert_fingerprints": [FINGERPRINT],
            },
        }
    ]
    assert all(s["target"]["package_name"] != bare for s in assets)  # no settings: not listed


async def test_links_from_the_command_line(running: SuiteAddresses) -> None:
    from lookback.testing.processes import run_cli

    app_id, keys = await _app(running.gateway_url, {"links": LINK_SETTINGS})
    common = ("--target", running.decider, "--gateway", running.gateway_url)
    code, out, err = await run_cli(
        "links",
        "create",
        app_id,
        "--media-source",
        "networka",
        "--campaign",
        "spring",
        "--deep-link-value",
        "product/42",
        "--param",
        "color=red",
        *common,
        "--admin-key",
        keys["s2s"],  # the app's own backend key manages its links
    )
    assert code == 0, err
    link = json.loads(out)["link"]
    assert link["deep_link_params"] == {"color": "red"}
    assert link["url"] == f"{running.gateway_url}/l/{link['code']}"
    code, out, err = await run_cli(
        "links", "update", app_id, link["code"], "--campaign", "autumn", *common
    )
    assert code == 0 and json.loads(out)["link"]["campaign"] == "autumn", err
    code, out, err = await run_cli("links", "disable", app_id, link["code"], *common)
    assert code == 0 and json.loads(out)["link"]["disabled"] is True, err
    code, out, err = await run_cli("links", "list", app_id, *common)
    assert code == 0, err
    (listed,) = json.loads(out)["links"]
    assert (listed["code"], listed["campaign"], listed["disabled"]) == (
        link["code"],
        "autumn",
        True,
    )
    code, out, err = await run_cli("links", "update", app_id, link["code"], "--enable", *common)
    assert code == 0 and not json.loads(out)["link"].get("disabled"), err
    code, _, err = await run_cli("links", "create", app_id, "--media-source", "", *common)
    assert code == 1 and "media_source" in err
