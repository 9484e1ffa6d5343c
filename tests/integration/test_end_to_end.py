"""One path end to end: a click with a GAID, then an install with the same
GAID, through the HTTP gateway and through gRPC; the decision comes back
synchronously and is stored; without a matching click the install is organic."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import aiohttp
import pytest

from lookback.api.ingestion.v1 import ingestion_service_pb2 as ingestion_pb
from lookback.api.ingestion.v1 import ingestion_service_pb2_grpc as ingestion_grpc
from lookback.api.store.v1 import touchpoint_store_service_pb2 as store_pb
from lookback.api.store.v1 import touchpoint_store_service_pb2_grpc as store_grpc
from lookback.api.types.v1 import decision_pb2, touch_pb2
from lookback.testing.builders import click, install, iso_ago, new_gaid
from lookback.testing.keys import admin_headers
from lookback.testing.receiver import PostbackSink
from lookback.testing.suite import SuiteAddresses

UA = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 Chrome/124.0 Mobile Safari/537.36"


async def post_install(suite: SuiteAddresses, body: dict[str, Any]) -> Any:
    """``POST /v1/installs``, which must succeed; the decision."""
    async with (
        aiohttp.ClientSession(headers=admin_headers()) as http,
        http.post(f"{suite.gateway_url}/v1/installs", json=body) as r,
    ):
        assert r.status == 200, await r.text()
        return (await r.json())["decision"]


async def test_click_then_install_over_http_is_attributed_and_stored(
    suite: SuiteAddresses,
    app_id: str,
    store: store_grpc.TouchpointStoreServiceStub,
    sink: PostbackSink,
) -> None:
    gaid = new_gaid()
    async with aiohttp.ClientSession(headers=admin_headers()) as http:
        async with http.get(
            f"{suite.gateway_url}/v1/click",
            params={
                "app_id": app_id,
                "media_source": "networka",
                "campaign": "spring",
                "click_id": f"c-{gaid[:8]}",
                "gaid": gaid,
                "engaged_at": iso_ago(3600),
            },
            headers={"User-Agent": UA},
        ) as r:
            assert r.status == 200, await r.text()
            assert (await r.json())["click_id"] == f"c-{gaid[:8]}"
    install_body = {
        "app_id": app_id,
        "install_id": "i-http",
        "device": {"gaid": gaid},
        "os_version": "14",
        "user_agent": UA,
    }
    decision = await post_install(suite, install_body)
    assert decision["kind"] == "install"
    assert decision["media_source"] == "networka"
    assert decision["campaign"] == "spring"
    assert decision["method"] == "device_id"
    assert decision["touch_type"] == "click"
    assert decision["click_id"] == f"c-{gaid[:8]}"
    assert decision["counted"] is True

    stored = await store.GetInstallRecord(
        store_pb.GetInstallRecordRequest(app_id=app_id, install_id="i-http")
    )
    assert stored.record.decision.decision_id == decision["decision_id"]
    assert stored.record.decision.media_source == "networka"

    received = await sink.wait_for("networka")
    assert any(f"app={app_id}&click=c-{gaid[:8]}&c=spring" in r.path_qs for r in received)


async def test_install_without_a_click_over_http_is_organic(
    suite: SuiteAddresses, app_id: str
) -> None:
    decision = await post_install(
        suite, {"app_id": app_id, "install_id": "i-organic", "device": {"gaid": new_gaid()}}
    )
    assert decision["kind"] == "install"
    assert decision["media_source"] == "organic"
    assert decision["method"] == "none"
    assert decision["touch_type"] == "none"
    assert decision["counted"] is False


async def test_click_then_install_over_grpc(
    app_id: str,
    ingestion: ingestion_grpc.IngestionServiceStub,
    store: store_grpc.TouchpointStoreServiceStub,
) -> None:
    gaid = new_gaid()
    touch = click(
        app_id, gaid, ago=7200, media_source="networkb", campaign="summer", click_id="c-grpc"
    )
    recorded = await ingestion.RecordTouch(ingestion_pb.RecordTouchRequest(touch=touch))
    assert recorded.click_id == "c-grpc"

    # Identifiers match case-insensitively.
    upper = install(app_id, "i-grpc", gaid=gaid.upper())
    answer = await ingestion.ReportInstall(ingestion_pb.ReportInstallRequest(install=upper))
    d = answer.decision
    assert d.kind == decision_pb2.DECISION_KIND_INSTALL
    assert (d.media_source, d.campaign, d.click_id) == ("networkb", "summer", "c-grpc")
    assert d.method == decision_pb2.ATTRIBUTION_METHOD_DEVICE_ID
    assert d.touch_type == touch_pb2.TOUCH_TYPE_CLICK

    stored = await store.GetInstallRecord(
        store_pb.GetInstallRecordRequest(app_id=app_id, install_id="i-grpc")
    )
    assert stored.record.decision.decision_id == d.decision_id


async def test_install_reported_again_repeats_the_decision_as_duplicate(
    app_id: str,
    ingestion: ingestion_grpc.IngestionServiceStub,
    sink: PostbackSink,
) -> None:
    gaid = new_gaid()
    touch = click(
        app_id,
        gaid,
        ago=600,
        media_source="networkc",
        campaign="dup",
        click_id=f"c-{uuid.uuid4().hex}",
    )
    await ingestion.RecordTouch(ingestion_pb.RecordTouchRequest(touch=touch))
    request = ingestion_pb.ReportInstallRequest(install=install(app_id, "i-dup", gaid=gaid))
    first = (await ingestion.ReportInstall(request)).decision
    again = (await ingestion.ReportInstall(request)).decision
    assert first.kind == decision_pb2.DECISION_KIND_INSTALL
    assert again.kind == decision_pb2.DECISION_KIND_DUPLICATE
    assert again.decision_id == first.decision_id
    assert (again.media_source, again.campaign, again.click_id, again.method) == (
        first.media_source,
        first.campaign,
        first.click_id,
        first.method,
    )
    received = await sink.wait_for("networkc")
    assert len([r for r in received if touch.click_id in r.path_qs]) == 1


@pytest.mark.parametrize("concurrency", [20])
async def test_concurrent_reports_of_one_install_give_one_decision(
    app_id: str, ingestion: ingestion_grpc.IngestionServiceStub, concurrency: int
) -> None:
    request = ingestion_pb.ReportInstallRequest(install=install(app_id, "i-race", gaid=new_gaid()))
    answers = await asyncio.gather(*(ingestion.ReportInstall(request) for _ in range(concurrency)))
    kinds = sorted(a.decision.kind for a in answers)
    assert kinds.count(decision_pb2.DECISION_KIND_INSTALL) == 1
    assert kinds.count(decision_pb2.DECISION_KIND_DUPLICATE) == concurrency - 1
    assert len({a.decision.decision_id for a in answers}) == 1
