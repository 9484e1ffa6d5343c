"""Reports through the gateway and the CLI (docs/outcomes.md, "Reports"):
counts of touches, decisions and events as they are made; an app's s2s key
reads its own app's only, the admin every app's; bad queries name the field."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import aiohttp

from lookback.api.apps.v1 import app_settings_service_pb2 as apps_pb
from lookback.testing import builders
from lookback.testing.keys import admin_headers, bearer
from lookback.testing.processes import run_cli
from lookback.testing.suite import SuiteAddresses


async def _app(suite: SuiteAddresses) -> tuple[str, apps_pb.AppKeys]:
    return await builders.keyed_app(suite.decider, "com.reports")


async def _post(http: aiohttp.ClientSession, url: str, key: str, body: Any) -> dict[str, Any]:
    async with http.post(url, json=body, headers=bearer(key)) as r:
        answer: dict[str, Any] = await r.json()
        assert r.status == 200, answer
        return answer


async def _report(
    http: aiohttp.ClientSession, url: str, headers: dict[str, str], **query: str
) -> tuple[int, dict[str, Any]]:
    async with http.get(url, params=query, headers=headers) as r:
        return r.status, await r.json()


async def test_reports_count_what_was_made_for_the_apps_own_key(suite: SuiteAddresses) -> None:
    app_id, keys = await _app(suite)
    _, other = await _app(suite)
    base = suite.gateway_url
    url = f"{base}/v1/apps/{app_id}/reports"
    async with aiohttp.ClientSession() as http:
        gaids = [builders.new_gaid() for _ in range(3)]
        touches = [
            {
                "app_id": app_id,
                "type": "click",
                "media_source": "networka",
                "campaign": "spring",
                "click_id": f"c{n}",
                "engaged_at": builders.iso_ago(600),
                "device": {"gaid": gaid},
            }
            for n, gaid in enumerate(gaids[:2])
        ]
        await _post(http, f"{base}/v1/touches", keys.s2s, {"touches": touches})
        for n, gaid in enumerate(gaids):
            body = {"app_id": app_id, "install_id": f"i{n}", "device": {"gaid": gaid}}
            await _post(http, f"{base}/v1/installs", keys.sdk, body)
        event = {
            "app_id": app_id,
            "install_id": "i0",
            "event_id": uuid.uuid4().hex,
            "name": "purchase",
            "revenue": "2.50",
            "currency": "USD",
        }
        await _post(http, f"{base}/v1/events", keys.sdk, event)
        await _post(http, f"{base}/v1/events", keys.sdk, event)  # the same event again

        want = {
            "networka": {"clicks": "2", "installs": "2", "events": "1", "revenue": {"USD": "2.50"}},
            "organic": {"clicks": "0", "installs": "1", "events": "0", "revenue": {}},
        }
        deadline = time.monotonic() + 5
        while True:
            status, answer = await _report(http, url, bearer(keys.s2s), group_by="media_source")
            assert status == 200, answer
            got = {
                r["media_source"]: {k: r[k] for k in ("clicks", "installs", "events", "revenue")}
                for r in answer["rows"]
            }
            if got == want or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        assert got == want
        # By hour and campaign: the same counts, in the current hour's row.
        status, hourly = await _report(
            http, url, bearer(keys.s2s), bucket="hour", group_by="media_source,campaign"
        )
        assert status == 200
        # (The clicks are 10 minutes old: they may fall in the hour before.)
        spring = [r for r in hourly["rows"] if r["campaign"] == "spring"]
        assert sum(int(r["installs"]) for r in spring) == 2
        assert sum(int(r["clicks"]) for r in spring) == 2
        assert all(r["bucket_start"].endswith(":00:00Z") for r in spring)
        # The admin reads it too; an sdk key and another app's key do not.
        assert (await _report(http, url, admin_headers()))[0] == 200
        assert (await _report(http, url, bearer(keys.sdk)))[0] == 403
        assert (await _report(http, url, bearer(other.s2s)))[0] == 403
        # A bad query names its field.
        status, bad = await _report(http, url, bearer(keys.s2s), group_by="media_source,country")
        assert status == 400
        assert bad["error"]["field_violations"][0]["field"].startswith("group_by")
        status, bad = await _report(
            http,
            url,
            bearer(keys.s2s),
            start_time="2026-01-02T00:00:00Z",
            end_time="2026-01-01T00:00:00Z",
        )
        assert status == 400 and bad["error"]["field_violations"][0]["field"] == "start_time"

    code, out, err = await run_cli(
        "report", app_id, "--group-by", "media_source", "--target", suite.postback
    )
    assert code == 0, err
    lines = out.splitlines()
    assert lines[1].split()[:4] == ["media_source", "clicks", "impressions", "installs"]
    (networka,) = [line.split() for line in lines if line.startswith("networka")]
    assert networka[1:4] == ["2", "0", "2"] and networka[-2:] == ["2.50", "USD"]
