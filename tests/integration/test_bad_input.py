"""Bad input gets INVALID_ARGUMENT naming the field (gRPC) or a 400 whose JSON
body names it (HTTP); nothing is half-written and nothing crashes."""

from __future__ import annotations

import json
import time
from typing import Any

import aiohttp
import grpc
import pytest
from google.protobuf import field_mask_pb2
from yarl import URL

from lookback.api.apps.v1 import app_settings_service_pb2 as apps_pb
from lookback.api.apps.v1 import app_settings_service_pb2_grpc as apps_grpc
from lookback.api.ingestion.v1 import ingestion_service_pb2 as ingestion_pb
from lookback.api.ingestion.v1 import ingestion_service_pb2_grpc as ingestion_grpc
from lookback.api.store.v1 import touchpoint_store_service_pb2 as store_pb
from lookback.api.store.v1 import touchpoint_store_service_pb2_grpc as store_grpc
from lookback.api.types.v1 import app_pb2, install_pb2, touch_pb2
from lookback.testing import builders
from lookback.testing.builders import new_gaid
from lookback.testing.keys import admin_channel, admin_headers
from lookback.testing.rpc import expect_invalid, violations_of
from lookback.testing.suite import SuiteAddresses


async def expect_invalid_install(
    ingestion: ingestion_grpc.IngestionServiceStub, install: install_pb2.Install, field: str
) -> None:
    await expect_invalid(
        ingestion.ReportInstall(ingestion_pb.ReportInstallRequest(install=install)), field
    )


async def test_install_without_install_id(
    app_id: str, ingestion: ingestion_grpc.IngestionServiceStub
) -> None:
    install = install_pb2.Install(app_id=app_id)
    await expect_invalid_install(ingestion, install, "install.install_id")


async def test_click_without_media_source(
    app_id: str, ingestion: ingestion_grpc.IngestionServiceStub
) -> None:
    touch = touch_pb2.Touch(app_id=app_id, type=touch_pb2.TOUCH_TYPE_CLICK, campaign="x")
    await expect_invalid(
        ingestion.RecordTouch(ingestion_pb.RecordTouchRequest(touch=touch)), "touch.media_source"
    )


async def test_malformed_time(app_id: str, ingestion: ingestion_grpc.IngestionServiceStub) -> None:
    install = install_pb2.Install(app_id=app_id, install_id="i-bad-time")
    install.installed_at.seconds = int(time.time())
    install.installed_at.nanos = -5
    await expect_invalid_install(ingestion, install, "install.installed_at")
    install.installed_at.nanos = 0
    install.installed_at.seconds = int(time.time()) + 30 * 86400
    await expect_invalid_install(ingestion, install, "install.installed_at")


async def test_malformed_identifier(
    app_id: str, ingestion: ingestion_grpc.IngestionServiceStub
) -> None:
    install = install_pb2.Install(app_id=app_id, install_id="i-bad-id")
    install.device.gaid = "not-a-uuid"
    await expect_invalid_install(ingestion, install, "install.device.gaid")


async def test_bad_batch_stores_nothing(
    app_id: str,
    ingestion: ingestion_grpc.IngestionServiceStub,
    store: store_grpc.TouchpointStoreServiceStub,
) -> None:
    good = touch_pb2.Touch(
        app_id=app_id,
        type=touch_pb2.TOUCH_TYPE_CLICK,
        media_source="networka",
        click_id="c-batch-good",
    )
    bad = touch_pb2.Touch(app_id=app_id, type=touch_pb2.TOUCH_TYPE_CLICK, click_id="c-batch-bad")
    await expect_invalid(
        ingestion.RecordTouches(ingestion_pb.RecordTouchesRequest(touches=[good, bad])),
        "touches[1].media_source",
    )
    found = await store.FindTouches(
        store_pb.FindTouchesRequest(app_id=app_id, click_ids=["c-batch-good", "c-batch-bad"])
    )
    assert list(found.touches) == []


async def test_install_for_an_unknown_app_is_not_found(
    ingestion: ingestion_grpc.IngestionServiceStub,
) -> None:
    install = install_pb2.Install(app_id="com.nobody.registered", install_id="i1")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await ingestion.ReportInstall(ingestion_pb.ReportInstallRequest(install=install))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def _http(suite: SuiteAddresses, method: str, path: str, **kw: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession(headers=admin_headers()) as http:
        async with http.request(method, suite.gateway_url + path, **kw) as r:
            return r.status, await r.json()


def _fields(body: Any) -> set[str]:
    return {v["field"] for v in body["error"].get("field_violations", [])}


async def test_http_install_without_install_id(suite: SuiteAddresses, app_id: str) -> None:
    status, body = await _http(suite, "POST", "/v1/installs", json={"app_id": app_id})
    assert status == 400
    assert body["error"]["code"] == "INVALID_ARGUMENT"
    assert "install_id" in _fields(body)


async def test_http_click_without_media_source(suite: SuiteAddresses, app_id: str) -> None:
    status, body = await _http(
        suite, "GET", "/v1/click", params={"app_id": app_id, "campaign": "c"}
    )
    assert status == 400
    assert "media_source" in _fields(body)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"installed_at": "yesterday"}, "installed_at"),
        ({"device": {"gaid": "zzz"}}, "device.gaid"),
        ({"device": {"gaid": 42}}, "device.gaid"),
        ({"att_status": "maybe"}, "att_status"),
        ({"colour": "blue"}, "colour"),
        ({"ip": "300.1.1.1"}, "ip"),
    ],
)
async def test_http_malformed_install_fields(
    suite: SuiteAddresses, app_id: str, payload: dict[str, Any], field: str
) -> None:
    body = {"app_id": app_id, "install_id": "i-malformed", **payload}
    status, answer = await _http(suite, "POST", "/v1/installs", json=body)
    assert status == 400, answer
    assert field in _fields(answer), answer


async def test_http_malformed_link_fields(suite: SuiteAddresses, app_id: str) -> None:
    for params, field in (
        ({"engaged_at": "noon", "gaid": new_gaid()}, "engaged_at"),
        ({"sha1_gaid": "abc"}, "device.hashed[0].value"),
    ):
        link = {"app_id": app_id, "media_source": "networka", **params}
        status, body = await _http(suite, "GET", "/v1/click", params=link)
        assert status == 400
        assert field in _fields(body)


async def test_http_body_that_is_not_json(suite: SuiteAddresses) -> None:
    status, body = await _http(
        suite,
        "POST",
        "/v1/installs",
        data=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert status == 400
    assert "body" in _fields(body)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        (b'{"app_id": "\\ud800", "install_id": "i-surrogate"}', "app_id"),
        (b'{"app_id": "a", "install_id": "i", "device": {"gaid": "\\udc00"}}', "device.gaid"),
        (b"[" * 100_000 + b"]" * 100_000, "body"),
    ],
)
async def test_http_body_that_is_not_valid_unicode_or_too_deep(
    suite: SuiteAddresses, data: bytes, field: str
) -> None:
    status, body = await _http(
        suite, "POST", "/v1/installs", data=data, headers={"Content-Type": "application/json"}
    )
    assert status == 400, body
    assert field in _fields(body)


async def test_http_link_with_a_redirect_it_cannot_follow_stores_nothing(
    suite: SuiteAddresses, app_id: str
) -> None:
    click_id = f"c-redirect-{time.time_ns()}"
    link = {
        "app_id": app_id,
        "media_source": "networka",
        "click_id": click_id,
        "gaid": new_gaid(),
        "redirect": "http://x:99999/",
    }
    status, body = await _http(suite, "GET", "/v1/click", params=link, allow_redirects=False)
    assert status == 400
    assert "redirect" in _fields(body)
    async with admin_channel(suite.store) as channel:
        found = await store_grpc.TouchpointStoreServiceStub(channel).FindTouches(
            store_pb.FindTouchesRequest(app_id=app_id, click_ids=[click_id])
        )
    assert list(found.touches) == []


async def test_a_huge_touch_batch_is_refused_by_its_size_alone(
    app_id: str, ingestion: ingestion_grpc.IngestionServiceStub
) -> None:
    touches = [
        touch_pb2.Touch(app_id=app_id, media_source="BAD SOURCE", type=touch_pb2.TOUCH_TYPE_CLICK)
        for _ in range(20_000)
    ]
    await expect_invalid(
        ingestion.RecordTouches(ingestion_pb.RecordTouchesRequest(touches=touches)), "touches"
    )


async def test_install_user_agent_and_os_version_have_limits(
    app_id: str, ingestion: ingestion_grpc.IngestionServiceStub
) -> None:
    install = install_pb2.Install(app_id=app_id, install_id="i-long", user_agent="x" * 2001)
    await expect_invalid_install(ingestion, install, "install.user_agent")
    install = install_pb2.Install(app_id=app_id, install_id="i-long", os_version="1" * 51)
    await expect_invalid_install(ingestion, install, "install.os_version")


async def test_http_refusals_of_the_server_itself_are_json(suite: SuiteAddresses) -> None:
    status, body = await _http(suite, "GET", "/v1/no-such-route")
    assert status == 404 and body["error"]["code"] == "NOT_FOUND"
    status, body = await _http(
        suite,
        "POST",
        "/v1/installs",
        data=b"{" + b" " * (2 * 1024 * 1024) + b"}",
        headers={"Content-Type": "application/json"},
    )
    assert status == 413 and "body" in _fields(body)


# Found by the fuzz test (test_fuzz.py) ---------------------------------------


async def test_grpc_request_that_cannot_be_decoded_is_invalid_argument(
    suite: SuiteAddresses,
) -> None:
    """grpc itself answered UNKNOWN for bytes that are not the method's
    request (corrupt, or a string that is not UTF-8); the key is checked first."""
    path = "/lookback.ingestion.v1.IngestionService/RecordTouch"
    for junk in (b"\xff\xff\xff", b"\x0a\x03\x0a\x01\xff"):
        async with admin_channel(suite.ingestion) as channel:
            call = channel.unary_unary(path, request_serializer=lambda b: b)
            await expect_invalid(call(junk, timeout=10), "request")
        async with grpc.aio.insecure_channel(suite.ingestion) as channel:
            call = channel.unary_unary(path, request_serializer=lambda b: b)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call(junk, timeout=10)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_grpc_errors_quoting_huge_values_still_reach_the_caller(
    apps: apps_grpc.AppSettingsServiceStub,
) -> None:
    """An error quoting a huge value made a status larger than the caller's
    metadata limit: it got RESOURCE_EXHAUSTED instead of the error."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await apps.GetApp(apps_pb.GetAppRequest(app_id="x" * 20_000))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # too long an id
    assert list(violations_of(info.value)) == ["app_id"]
    app = builders.app(builders.new_app_id())
    for i in range(50):
        app.settings.click_lookback_by_source[f"{'Y' * 2000}{i}"].seconds = -1
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await apps.CreateApp(apps_pb.CreateAppRequest(app=app))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert any(
        f.startswith("app.settings.click_lookback_by_source[") for f in violations_of(info.value)
    )


@pytest.mark.parametrize("path", ["platform.x", "settings.no_such_setting", "settings..x"])
async def test_update_mask_paths_must_be_fields_of_an_app(
    apps: apps_grpc.AppSettingsServiceStub, app_id: str, path: str
) -> None:
    """``platform.x`` made the mask merge raise (INTERNAL); an unknown path
    was accepted and did nothing."""
    request = apps_pb.UpdateAppRequest(
        app=app_pb2.App(app_id=app_id, platform=app_pb2.PLATFORM_IOS),
        update_mask=field_mask_pb2.FieldMask(paths=[path]),
    )
    await expect_invalid(apps.UpdateApp(request), "update_mask")


@pytest.mark.parametrize(
    ("content_type", "data"),
    [
        ("application/json; charset=bogus", b"{}"),  # LookupError: 500
        ("application/json", b'{"app_id": "a", "version": ' + b"9" * 5000 + b"}"),  # int(): 500
        ("application/json", b'{"app_id": "a", "version": "\xc2\xb2"}'),  # "²".isdigit(): 500
        ("application/json", b'{"app_id": "a", "platform": "\\ud800"}'),  # enum lookup: 500
        ("application/json", b'{"app_id": "a", "settings": {"min_ctit": "' + b"9" * 400 + b'd"}}'),
    ],
)
async def test_http_bodies_that_were_500s(
    suite: SuiteAddresses, content_type: str, data: bytes
) -> None:
    status, body = await _http(
        suite, "POST", "/v1/apps", data=data, headers={"Content-Type": content_type}
    )
    assert status == 400, body
    assert _fields(body) & {"body", "version", "platform", "settings.min_ctit"}, body


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("&=x", "query"),  # a parameter without a name was named ""
        ("&click_lookback=" + "9" * 400 + "d", "click_lookback"),  # OverflowError: 500
    ],
)
async def test_http_links_that_were_500s_or_unnamed(
    suite: SuiteAddresses, app_id: str, query: str, field: str
) -> None:
    url = f"{suite.gateway_url}/v1/click?app_id={app_id}&media_source=networka{query}"
    async with aiohttp.ClientSession() as http, http.get(URL(url, encoded=True)) as r:
        assert r.status == 400
        assert field in _fields(await r.json())


HUGE_BODIES = {
    "1 MB string": b'{"app_id": "' + b"x" * 1_000_000 + b'", "install_id": "i"}',
    "10,000 hashed ids": json.dumps(
        {
            "app_id": "a",
            "install_id": "i",
            "device": {"hashed": [{"type": "gaid", "algorithm": "md5", "value": "x"}] * 10_000},
        }
    ).encode(),
    "10,000 touches": json.dumps({"touches": [{"app_id": "a"}] * 10_000}).encode(),
    "10,000 numbers": json.dumps({"app_id": "a", "x": list(range(10_000))}).encode(),
    "100,000 nested arrays": b"[" * 100_000 + b"]" * 100_000,
    "100,000 nested objects": b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    "over 1 MiB": b'{"a": "' + b"x" * 1_100_000 + b'"}',
}


@pytest.mark.parametrize("name", list(HUGE_BODIES))
@pytest.mark.parametrize("path", ["/v1/installs", "/v1/touches", "/v1/apps"])
async def test_http_huge_bodies_are_refused_quickly_and_briefly(
    suite: SuiteAddresses, name: str, path: str
) -> None:
    started = time.monotonic()
    async with (
        aiohttp.ClientSession(headers=admin_headers()) as http,
        http.post(
            suite.gateway_url + path,
            data=HUGE_BODIES[name],
            headers={"Content-Type": "application/json"},
        ) as r,
    ):
        answer = await r.read()
    assert r.status in (400, 413), answer[:300]
    assert time.monotonic() - started < 2.0
    # At most 100 violations listed (10,000 bad elements made a 1 MB answer).
    assert len(answer) < 32_000
    assert json.loads(answer)["error"]["field_violations"]
