"""The live dashboard in a real headless browser (Debian's Chromium through
Playwright): decisions and events made through the API appear on the open
page (from the feed), and its counts, revenue and rejected touches (from the
reports) move, without a reload; choosing a decision shows its explanation."""

from __future__ import annotations

import os
from pathlib import Path

import aiohttp
from playwright.async_api import expect

from lookback.api.apps.v1 import app_settings_service_pb2 as apps_pb
from lookback.api.apps.v1 import app_settings_service_pb2_grpc as apps_grpc
from lookback.testing import builders
from lookback.testing.browser import browser_page
from lookback.testing.keys import admin_channel, bearer
from lookback.testing.suite import SuiteAddresses


async def _decide(
    http: aiohttp.ClientSession, base: str, app_id: str, keys: apps_pb.AppKeys, n: int
) -> str:
    """A click of networka, then its install (attributed); the decision id."""
    gaid = builders.new_gaid()
    touch = {
        "app_id": app_id,
        "type": "click",
        "media_source": "networka",
        "campaign": "dash",
        "engaged_at": builders.iso_ago(300),
        "device": {"gaid": gaid},
    }
    async with http.post(
        f"{base}/v1/touches", json={"touches": [touch]}, headers=bearer(keys.s2s)
    ) as r:
        assert r.status == 200, await r.text()
    body = {"app_id": app_id, "install_id": f"dash-{n}", "device": {"gaid": gaid}}
    async with http.post(f"{base}/v1/installs", json=body, headers=bearer(keys.sdk)) as r:
        assert r.status == 200, await r.text()
        return str((await r.json())["decision"]["decision_id"])


async def test_new_decisions_appear_on_the_open_dashboard(
    suite: SuiteAddresses, tmp_path: Path
) -> None:
    app_id = builders.new_app_id("com.dash")
    async with admin_channel(suite.decider) as channel:
        created = await apps_grpc.AppSettingsServiceStub(channel).CreateApp(
            apps_pb.CreateAppRequest(app=builders.app(app_id))
        )
    keys = created.keys
    base = suite.gateway_url
    async with browser_page() as page, aiohttp.ClientSession() as http:
        first = await _decide(http, base, app_id, keys, 1)
        await page.goto(f"{base}/dashboard#app={app_id}&key={keys.s2s}")
        await page.wait_for_selector(f'tr[data-decision-id="{first}"]', timeout=10_000)
        assert page.url.endswith("/dashboard")  # the key left the address bar
        await expect(page.locator("#installs")).to_have_text("1", timeout=10_000)
        # Two more while the page stays open: they appear, the counts move.
        later = [await _decide(http, base, app_id, keys, n) for n in (2, 3)]
        for decision_id in later:
            row = await page.wait_for_selector(
                f'tr[data-decision-id="{decision_id}"]', timeout=10_000
            )
            assert row is not None
            assert "networka" in await row.inner_text()
        await expect(page.locator("#installs")).to_have_text("3", timeout=10_000)
        bar = await page.wait_for_selector('rect.bar[data-source="networka"]', timeout=10_000)
        assert bar is not None
        # Both charts fit their panels: the newest hour's bar is in view, not cut off.
        for chart in ("#day-chart", "#hour-chart"):
            newest = page.locator(f"{chart} rect.bar").last
            await expect(newest).to_be_visible(timeout=10_000)
            box = await newest.bounding_box()
            panel = await page.locator(chart).locator("xpath=..").bounding_box()
            assert box is not None and panel is not None
            assert box["x"] + box["width"] <= panel["x"] + panel["width"], (chart, box, panel)
        # An event with revenue: on the live table, and in the counts.
        event = {
            "app_id": app_id,
            "install_id": "dash-2",
            "event_id": "purchase-1",
            "name": "purchase",
            "revenue": "4.99",
            "currency": "EUR",
        }
        async with http.post(f"{base}/v1/events", json=event, headers=bearer(keys.sdk)) as r:
            assert r.status == 200, await r.text()
        row = await page.wait_for_selector('tr[data-event-id="purchase-1"]', timeout=10_000)
        assert row is not None and "4.99 EUR" in await row.inner_text()
        await expect(page.locator("#events")).to_have_text("1", timeout=10_000)
        await expect(page.locator("#revenue")).to_have_text("4.99 EUR", timeout=10_000)
        source = await page.wait_for_selector('#sources tr[data-source="networka"]')
        assert source is not None and "4.99 EUR" in await source.inner_text()
        # Choosing a decision shows why it came out so: its candidates and verdicts.
        assert await page.locator("#explain").is_hidden()
        await page.click(f'tr[data-decision-id="{later[-1]}"]')
        await expect(page.locator("#explain-title")).to_have_text(
            "install of install dash-3", timeout=10_000
        )
        verdicts = page.locator("#explain-candidates tbody tr td:first-child")
        await expect(verdicts).to_have_text(["winner"])
        await expect(page.locator("#explain-summary")).to_contain_text(later[-1])
        await expect(page.locator("#explain-candidates tbody tr")).to_contain_text(["networka"])
        shot = Path(os.environ.get("LOOKBACK_DASHBOARD_SCREENSHOT", tmp_path / "dashboard.png"))
        await page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000


async def test_the_dashboard_shows_nothing_without_the_right_key(suite: SuiteAddresses) -> None:
    app_id = builders.new_app_id("com.dash")
    async with admin_channel(suite.decider) as channel:
        created = await apps_grpc.AppSettingsServiceStub(channel).CreateApp(
            apps_pb.CreateAppRequest(app=builders.app(app_id))
        )
    async with browser_page() as page:
        # An sdk key (shipped in the app) does not read outcomes.
        await page.goto(f"{suite.gateway_url}/dashboard#app={app_id}&key={created.keys.sdk}")
        await expect(page.locator("#status")).to_contain_text("PERMISSION_DENIED", timeout=10_000)
        assert await page.locator("#decisions tbody tr").count() == 0
