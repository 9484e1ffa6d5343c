"""Fraud hardening through the running suite (issue 14): a partner with a
``rejected`` template is told, server to server, of each of its touches a
decision rejected, with the reason; the new settings are validated."""

from __future__ import annotations

import uuid

import aiohttp

from lookback.api.apps.v1 import app_settings_service_pb2 as apps_pb
from lookback.api.apps.v1 import app_settings_service_pb2_grpc as apps_grpc
from lookback.testing import builders
from lookback.testing.keys import admin_channel, admin_headers, bearer
from lookback.testing.receiver import PostbackSink
from lookback.testing.suite import SuiteAddresses


async def test_a_rejected_touch_is_posted_back_to_its_partner_with_the_reason(
    suite: SuiteAddresses, sink: PostbackSink
) -> None:
    app_id = builders.new_app_id("com.fraud")
    partner = f"fraud{uuid.uuid4().hex[:6]}"  # a sink path of this test's own
    app = builders.app(app_id)
    app.settings.postbacks[
        partner
    ].rejected.url = (
        f"{sink.url}/{partner}/rejected?c={{click_id}}&why={{rejection_reason}}&i={{install_id}}"
    )
    async with admin_channel(suite.decider) as channel:
        created = await apps_grpc.AppSettingsServiceStub(channel).CreateApp(
            apps_pb.CreateAppRequest(app=app)
        )
    gaid = builders.new_gaid()
    base = suite.gateway_url
    async with aiohttp.ClientSession() as http:
        touches = [
            {
                "app_id": app_id,
                "type": "click",
                "media_source": partner,
                "click_id": "c-fast",
                "engaged_at": builders.iso_ago(3),
                "device": {"gaid": gaid},
            }
        ]
        async with http.post(
            f"{base}/v1/touches", json={"touches": touches}, headers=bearer(created.keys.s2s)
        ) as r:
            assert r.status == 200, await r.text()
        body = {"app_id": app_id, "install_id": "i-fraud", "device": {"gaid": gaid}}
        async with http.post(
            f"{base}/v1/installs", json=body, headers=bearer(created.keys.sdk)
        ) as r:
            decision = (await r.json())["decision"]
    assert decision["media_source"] == "organic"
    assert decision["rejected"] == [
        {"click_id": "c-fast", "media_source": partner, "reason": "ctit_too_short"}
    ]
    (received,) = await sink.wait_for(partner)
    assert received.path_qs == f"/{partner}/rejected?c=c-fast&why=ctit_too_short&i=i-fraud"
    assert received.headers["Idempotency-Key"] == f"{decision['decision_id']}/r0:{partner}:rejected"


async def test_the_new_fraud_settings_are_validated(suite: SuiteAddresses) -> None:
    app_id = builders.new_app_id("com.fraud")
    async with admin_channel(suite.decider) as channel:
        await builders.create_app(apps_grpc.AppSettingsServiceStub(channel), app_id)
    url = f"{suite.gateway_url}/v1/apps/{app_id}"
    async with aiohttp.ClientSession(headers=admin_headers()) as http:
        bad = {"settings": {"blocked_ips": ["203.0.113.0/24", "nonsense"], "max_ctit": "30m"}}
        async with http.patch(url, json=bad) as r:
            assert r.status == 400
            fields = {v["field"] for v in (await r.json())["error"]["field_violations"]}
        assert fields == {"settings.blocked_ips[1]", "settings.max_ctit"}
        good = {"settings": {"blocked_ips": ["203.0.113.0/24", "2001:db8::/32"], "max_ctit": "7d"}}
        async with http.patch(url, json=good) as r:
            assert r.status == 200, await r.text()
            settings = (await r.json())["app"]["settings"]
        assert settings["blocked_ips"] == ["203.0.113.0/24", "2001:db8::/32"]
        assert settings["max_ctit"] == "7d"
