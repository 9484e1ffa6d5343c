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
