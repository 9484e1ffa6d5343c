"""Reading decisions back (docs/outcomes.md): an install's state, one
decision, an app's list; over HTTP, gRPC and the CLI; an app's s2s key reads
its own app only."""

from __future__ import annotations

import json
import uuid
from typing import Any

import aiohttp

from lookback.api.apps.v1 import app_settings_service_pb2 as apps_pb
from lookback.api.apps.v1 import app_settings_service_pb2_grpc as apps_grpc
from lookback.testing import builders
from lookback.testing.keys import admin_channel, bearer
from lookback.testing.processes import run_cli
from lookback.testing.suite import SuiteAddresses


async def _app(suite: SuiteAddresses) -> tuple[str, dict[str, str]]:
    app_id = builders.new_app_id("com.outcomes")
    async with admin_channel(suite.decider) as channel:
        created = await apps_grpc.AppSettingsServiceStub(channel).CreateApp(
            apps_pb.CreateAppRequest(app=builders.app(app_id))
        )
    return app_id, {"sdk": created.keys.sdk, "s2s": created.keys.s2s}


async def _http(
    http: aiohttp.ClientSession, method: str, url: str, key: str, body: Any = None
) -> tuple[int, Any]:
    async with http.request(method, url, json=body, headers=bearer(key)) as r:
        return r.status, await r.json()


async def test_an_installs_decision_reads_back_with_the_apps_s2s_key(
    suite: SuiteAddresses,
) -> None:
    app_id, keys = await _app(suite)
    other_app, other_keys = await _app(suite)
    gaid = builders.new_gaid()
    base = suite.gateway_url
    install_id = f"i-{uuid.uuid4().hex[:8]}"
    async with aiohttp.ClientSession() as http:
        touch = {
            "touches": [
                {
                    "app_id": app_id,
                    "type": "click",
                    "media_source": "networka",
                    "campaign": "read",
                    "engaged_at": builders.iso_ago(600),
                    "device": {"gaid": gaid},
                }
            ]
        }
        assert (await _http(http, "POST", f"{base}/v1/touches", keys["s2s"], touch))[0] == 200
        body = {"app_id": app_id, "install_id": install_id, "device": {"gaid": gaid}}
        status, answer = await _http(http, "POST", f"{base}/v1/installs", keys["sdk"], body)
        assert status == 200, answer
        decided = answer["decision"]

        url = f"{base}/v1/apps/{app_id}/installs/{install_id}"
        status, read = await _http(http, "GET", url, keys["s2s"])
        assert status == 200, read
        assert read["decision"]["decision_id"] == decided["decision_id"]
        assert read["decision"]["media_source"] == "networka"
        assert read["attributed_decision"]["decision_id"] == decided["decision_id"]
        # The sdk key (shipped in the app) does not read outcomes; another
        # app's key does not read this app's; nothing says whether it exists.
        assert (await _http(http, "GET", url, keys["sdk"]))[0] == 403
        assert (await _http(http, "GET", url, other_keys["s2s"]))[0] == 403
        missing = f"{base}/v1/apps/{app_id}/installs/no-such-install"
        assert (await _http(http, "GET", missing, keys["s2s"]))[0] == 404
        assert other_app != app_id

    code, out, err = await run_cli(
        "decisions", "get", app_id, "--install", install_id, "--target", suite.decider
    )
    assert code == 0, err
    assert json.loads(out)["decision"]["decision_id"] == decided["decision_id"]


async def test_decisions_read_back_by_id_and_listed_newest_first_in_pages(
    suite: SuiteAddresses,
) -> None:
    app_id, keys = await _app(suite)
    base = suite.gateway_url
    made: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as http:
        for n in range(7):  # organic installs, each its own device
            body = {
                "app_id": app_id,
                "install_id": f"list-{n}",
                "device": {"gaid": builders.new_gaid()},
            }
            status, answer = await _http(http, "POST", f"{base}/v1/installs", keys["sdk"], body)
            assert status == 200, answer
            made.append(answer["decision"])
        # The same install again: a duplicate, answered but not a new decision.
        again = {"app_id": app_id, "install_id": "list-0", "device": {"gaid": builders.new_gaid()}}
        await _http(http, "POST", f"{base}/v1/installs", keys["sdk"], again)

        one = made[3]["decision_id"]
        status, got = await _http(
            http, "GET", f"{base}/v1/apps/{app_id}/decisions/{one}", keys["s2s"]
        )
        assert status == 200 and got["decision"]["install_id"] == "list-3"
        missing = f"{base}/v1/apps/{app_id}/decisions/no-such-decision"
        assert (await _http(http, "GET", missing, keys["s2s"]))[0] == 404

        listed: list[str] = []
        token = ""
        while True:
            url = f"{base}/v1/apps/{app_id}/decisions?page_size=3&kind=install"
            if token:
                url += f"&page_token={token}"
            status, page = await _http(http, "GET", url, keys["s2s"])
            assert status == 200, page
            assert len(page["decisions"]) <= 3
            listed += [d["decision_id"] for d in page["decisions"]]
            token = page["next_page_token"]
            if not token:
                break
        # Every decision once, newest first; the duplicate made none.
        assert listed == [d["decision_id"] for d in reversed(made)]
        url = f"{base}/v1/apps/{app_id}/decisions?media_source=networka"
        status, page = await _http(http, "GET", url, keys["s2s"])
        assert status == 200 and page["decisions"] == []
        status, bad = await _http(
            http, "GET", f"{base}/v1/apps/{app_id}/decisions?page_size=5000", keys["s2s"]
        )
        assert status == 400 and bad["error"]["field_violations"][0]["field"] == "page_size"

    code, out, err = await run_cli("decisions", "list", app_id, "--target", suite.decider)
    assert code == 0, err
    assert [json.loads(line)["decision_id"] for line in out.splitlines()] == listed
