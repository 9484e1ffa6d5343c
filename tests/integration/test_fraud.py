"""Fraud hardening and data minimisation through the running suite (issue
14): a partner with a ``rejected`` template is told, server to server, of
each of its touches a decision rejected, with the reason; the new settings
are validated; touches are stored without raw identifiers."""

from __future__ import annotations

import hashlib
import uuid

import aiohttp

from lookback.api.apps.v1 import app_settings_service_pb2 as apps_pb
from lookback.api.apps.v1 import app_settings_service_pb2_grpc as apps_grpc
from lookback.api.store.v1 import touchpoint_store_service_pb2 as store_pb
from lookback.api.store.v1 import touchpoint_store_service_pb2_grpc as store_grpc
from lookback.api.types.v1 import device_pb2
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


ZERO_ID = "00000000-0000-0000-0000-000000000000"


async def test_touches_are_stored_without_raw_identifiers_and_still_match(
    suite: SuiteAddresses, store: store_grpc.TouchpointStoreServiceStub
) -> None:
    app_id = builders.new_app_id("com.privacy")
    async with admin_channel(suite.decider) as channel:
        created = await apps_grpc.AppSettingsServiceStub(channel).CreateApp(
            apps_pb.CreateAppRequest(app=builders.app(app_id))
        )
    gaid, imei = builders.new_gaid(), "490154203237518"
    touch = {
        "app_id": app_id,
        "type": "click",
        "media_source": "networka",
        "click_id": "c-raw",
        "engaged_at": builders.iso_ago(600),
        "device": {
            "gaid": gaid.upper(),
            "imei": imei,
            "idfa": "00000000-0000-0000-0000-000000000000",
        },
    }
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{suite.gateway_url}/v1/touches",
            json={"touches": [touch]},
            headers=bearer(created.keys.s2s),
        ) as r:
            assert r.status == 200, await r.text()
        found = await store.FindTouches(
            store_pb.FindTouchesRequest(app_id=app_id, click_ids=["c-raw"])
        )
        (stored,) = found.touches
        assert (stored.device.gaid, stored.device.imei, stored.device.idfa) == ("", "", "")
        assert (
            gaid not in str(stored) and gaid.upper() not in str(stored) and imei not in str(stored)
        )
        assert sorted((h.type, h.value) for h in stored.device.hashed) == sorted(
            [
                (device_pb2.DEVICE_ID_TYPE_GAID, hashlib.sha1(gaid.encode()).hexdigest()),
                (device_pb2.DEVICE_ID_TYPE_IMEI, hashlib.sha1(imei.encode()).hexdigest()),
            ]
        )
        # The install, with the raw identifier, still finds it.
        body = {"app_id": app_id, "install_id": "i-raw", "device": {"gaid": gaid}}
        async with http.post(
            f"{suite.gateway_url}/v1/installs", json=body, headers=bearer(created.keys.sdk)
        ) as r:
            decision = (await r.json())["decision"]
    assert (decision["media_source"], decision["click_id"]) == ("networka", "c-raw")
