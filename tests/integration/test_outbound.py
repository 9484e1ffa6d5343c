"""Outbound requests end to end, on a suite that reaches public addresses
only (as in production): postback destinations that are not public are
refused when written (HTTP 400 and INVALID_ARGUMENT naming the field, by the
settings API and by the store itself) and again when sent (a job put
straight into the dispatcher is dead-lettered ``destination_not_allowed``,
and the local receiver hears nothing); ``--outbound-allow-cidrs`` is what
lets loopback through. Services refuse to start with a bad range or an SRN
endpoint that is not allowed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from lookback.api.apps.v1 import app_settings_service_pb2 as apps_pb
from lookback.api.apps.v1 import app_settings_service_pb2_grpc as apps_grpc
from lookback.api.postback.v1 import postback_dispatcher_service_pb2 as pb
from lookback.api.postback.v1 import postback_dispatcher_service_pb2_grpc as pb_grpc
from lookback.api.store.v1 import touchpoint_store_service_pb2 as store_pb
from lookback.api.store.v1 import touchpoint_store_service_pb2_grpc as store_grpc
from lookback.api.types.v1 import postback_pb2
from lookback.postback.component import PostbackComponent
from lookback.testing.builders import app, new_app_id
from lookback.testing.keys import admin_channel, admin_headers
from lookback.testing.processes import run_cli, serve
from lookback.testing.receiver import PostbackSink
from lookback.testing.rpc import violations_of
from lookback.testing.suite import EphemeralSuite

# Every kind of destination that is not public, as written in a URL's host.
NOT_PUBLIC = [
    "127.0.0.1",
    "10.0.0.1",
    "172.16.0.1",
    "192.168.0.1",
    "169.254.169.254",
    "100.64.0.1",
    "0.0.0.0",
    "224.0.0.1",
    "[::1]",
    "[fe80::1]",
    "[fc00::1]",
    "[::ffff:127.0.0.1]",
    "localhost",  # a name that resolves to 127.0.0.1
]
PUBLIC = "93.184.216.34"  # written, never sent to: no test reaches the internet
URL_FIELD = "settings.postbacks[networka].install.url"


@pytest.fixture(scope="module")
async def strict(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[EphemeralSuite]:
    """The suite with no allowed ranges: public destinations only."""
    suite = EphemeralSuite(Path(tmp_path_factory.mktemp("strict")))
    await suite.start()
    yield suite
    await suite.stop()


@pytest.fixture(scope="module")
async def receivers() -> AsyncIterator[tuple[PostbackSink, PostbackSink]]:
    """Partners on IPv4 and IPv6 loopback, where the refused URLs point."""
    v4, v6 = PostbackSink(), PostbackSink()
    await v4.start("127.0.0.1")
    await v6.start("::1")
    yield v4, v6
    await v4.stop()
    await v6.stop()


def url_at(host: str, receivers: tuple[PostbackSink, PostbackSink], path: str = "") -> str:
    """A postback URL to ``host`` on the port of the receiver of its family."""
    v4, v6 = receivers
    port = (v6 if host.startswith("[") else v4).url.rsplit(":", 1)[1]
    return f"http://{host}:{port}/networka{path}?c={{click_id}}"


async def http(suite: EphemeralSuite, method: str, path: str, body: Any) -> tuple[int, Any]:
    async with aiohttp.ClientSession(headers=admin_headers()) as session:
        async with session.request(method, suite.addresses.gateway_url + path, json=body) as r:
            return r.status, await r.json()


def app_json(app_id: str, url: str, **settings: Any) -> dict[str, Any]:
    return {
        "app_id": app_id,
        "platform": "android",
        "settings": {"postbacks": {"networka": {"install": {"url": url}}}, **settings},
    }


def fields(body: Any) -> dict[str, str]:
    return {v["field"]: v["description"] for v in body["error"].get("field_violations", [])}


@pytest.mark.parametrize("host", NOT_PUBLIC)
async def test_a_destination_that_is_not_public_is_refused_when_written(
    strict: EphemeralSuite, receivers: tuple[PostbackSink, PostbackSink], host: str
) -> None:
    url = url_at(host, receivers)
    status, body = await http(strict, "POST", "/v1/apps", app_json(new_app_id(), url))
    assert status == 400, body
    assert body["error"]["code"] == "INVALID_ARGUMENT"
    assert "public address" in fields(body)[URL_FIELD], body

    # An update through the settings API (gRPC), of an app that was fine.
    app_id = new_app_id()
    good = url_at(PUBLIC, receivers)
    assert (await http(strict, "POST", "/v1/apps", app_json(app_id, good)))[0] == 201
    async with admin_channel(strict.addresses.decider) as channel:
        update = app(app_id, postbacks={"networka": url})
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await apps_grpc.AppSettingsServiceStub(channel).UpdateApp(
                apps_pb.UpdateAppRequest(app=update)
            )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"app.{URL_FIELD}" in violations_of(refused.value)

    # And the store, written to directly, checks the same.
    async with admin_channel(strict.addresses.store) as channel:
        store = store_grpc.TouchpointStoreServiceStub(channel)
        bad = app(new_app_id(), postbacks={"networka": url})
        with pytest.raises(grpc.aio.AioRpcError) as created:
            await store.CreateApp(store_pb.CreateAppRequest(app=bad))
        assert created.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert f"app.{URL_FIELD}" in violations_of(created.value)
        stored = (await store.GetApp(store_pb.GetAppRequest(app_id=app_id))).app
        stored.settings.postbacks["networka"].install.url = url
        with pytest.raises(grpc.aio.AioRpcError) as replaced:
            await store.ReplaceApp(
                store_pb.ReplaceAppRequest(app=stored, expected_version=stored.version)
            )
        assert replaced.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert f"app.{URL_FIELD}" in violations_of(replaced.value)
    v4, v6 = receivers
    assert v4.received == [] and v6.received == []


async def test_a_public_destination_is_accepted_when_written(
    strict: EphemeralSuite, receivers: tuple[PostbackSink, PostbackSink]
) -> None:
    app_id = new_app_id()
    status, body = await http(
        strict, "POST", "/v1/apps", app_json(app_id, f"https://{PUBLIC}/i?c={{click_id}}")
    )
    assert status == 201, body
    async with admin_channel(strict.addresses.store) as channel:
        store = store_grpc.TouchpointStoreServiceStub(channel)
        direct = app(new_app_id(), postbacks={"networka": "http://[2606:4700:4700::1111]/x"})
        await store.CreateApp(store_pb.CreateAppRequest(app=direct))


@pytest.mark.parametrize(
    ("settings", "field", "says"),
    [
        (
            {"postbacks": {"networka": {"install": {"url": "https://{click_id}.example/i"}}}},
            URL_FIELD,
            "macros",
        ),
        (
            {"postbacks": {"networka": {"signing_secret": "networkb"}}},
            "settings.postbacks[networka].signing_secret",
            "'networka'",
        ),
        ({"srn_networks": [f"srn{i}" for i in range(21)]}, "settings.srn_networks", "at most 20"),
        ({"srn_networks": ["srn_a", "srn_a"]}, "settings.srn_networks[1]", "twice"),
    ],
)
async def test_settings_that_would_misdirect_requests_are_refused(
    strict: EphemeralSuite, settings: dict[str, Any], field: str, says: str
) -> None:
    body = {"app_id": new_app_id(), "platform": "android", "settings": settings}
    status, answer = await http(strict, "POST", "/v1/apps", body)
    assert status == 400, answer
    assert says in fields(answer)[field], answer


def dispatcher_of(suite: EphemeralSuite) -> PostbackComponent:
    component = suite.servers["postback"].component
    assert isinstance(component, PostbackComponent)
    return component


@pytest.mark.parametrize("host", NOT_PUBLIC)
async def test_a_destination_that_is_not_public_is_refused_when_sent(
    strict: EphemeralSuite, receivers: tuple[PostbackSink, PostbackSink], host: str
) -> None:
    """Jobs put straight into the dispatcher (no settings check on the way):
    dead at the first attempt, nothing sent."""
    job_id = f"send-{new_app_id()}"
    job = postback_pb2.PostbackJob(
        job_id=job_id, partner="networka", url=url_at(host, receivers).format(click_id="c1")
    )
    async with admin_channel(strict.addresses.postback) as channel:
        await pb_grpc.PostbackDispatcherServiceStub(channel).EnqueuePostbacks(
            pb.EnqueuePostbacksRequest(jobs=[job])
        )
    state = await dispatcher_of(strict).dispatcher.wait_final(job_id, timeout=10)
    assert state.state == pb.DELIVERY_STATE_DEAD
    assert state.attempts == 1  # no retries
    assert state.last_error.startswith("destination_not_allowed"), state.last_error
    v4, v6 = receivers
    assert v4.received == [] and v6.received == []


async def _final(
    stub: pb_grpc.PostbackDispatcherServiceStub, job_id: str
) -> pb.GetPostbackJobResponse:
    deadline = time.monotonic() + 10
    while True:
        got = await stub.GetPostbackJob(pb.GetPostbackJobRequest(job_id=job_id))
        if got.state != pb.DELIVERY_STATE_PENDING:
            return got
        assert time.monotonic() < deadline, f"{job_id} still pending"
        await asyncio.sleep(0.05)


async def test_the_allowed_range_is_delivered_to_and_nothing_else(tmp_path: Path) -> None:
    dispatcher = await serve(
        "postback",
        "--queue-path",
        str(tmp_path / "q.sqlite3"),
        "--outbound-allow-cidrs",  # as an operator would write it
        "127.0.0.0/8",
    )
    try:
        async with PostbackSink() as sink, admin_channel(dispatcher.address) as ch:
            port = sink.url.rsplit(":", 1)[1]
            stub = pb_grpc.PostbackDispatcherServiceStub(ch)
            jobs = [
                postback_pb2.PostbackJob(job_id=f"ok-{n}", partner="networka", url=url)
                for n, url in enumerate(
                    [f"http://127.0.0.1:{port}/networka?n=0", f"http://localhost:{port}/networka"]
                )
            ]
            jobs.append(
                postback_pb2.PostbackJob(
                    job_id="private", partner="networka", url="http://10.0.0.1:9/networka"
                )
            )
            await stub.EnqueuePostbacks(pb.EnqueuePostbacksRequest(jobs=jobs))
            received = await sink.wait_for("networka", count=2)
            assert sorted(r.headers["Idempotency-Key"] for r in received) == ["ok-0", "ok-1"]
            for job_id in ("ok-0", "ok-1"):
                assert (await _final(stub, job_id)).state == pb.DELIVERY_STATE_DELIVERED
            refused = await _final(stub, "private")
            assert refused.state == pb.DELIVERY_STATE_DEAD
            assert refused.last_error.startswith("destination_not_allowed")
    finally:
        await dispatcher.stop()


async def test_services_refuse_to_start_with_bad_ranges_or_endpoints_not_allowed() -> None:
    code, _, err = await run_cli("serve", "postback", "--outbound-allow-cidrs", "10.0.0.0/33")
    assert code == 2 and "outbound_allow_cidrs" in err, err
    code, _, err = await run_cli(
        "serve", "srn_adapter", "--srn-endpoints", "srn_meta=http://169.254.169.254/latest"
    )
    assert code == 2 and "srn_endpoints[srn_meta]" in err and "metadata" in err, err
    code, _, err = await run_cli("up", "--outbound-allow-cidrs", "127.0.0.0/8,nonsense")
    assert code == 2 and "nonsense" in err, err
