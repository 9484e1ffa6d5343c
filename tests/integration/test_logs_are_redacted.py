"""No key, signing secret, raw device identifier or full IP address in the
logs or spans of a whole run (docs/security.md, "Logs and spans").

The suite runs as processes, one per service as ``lookback up`` starts them,
at log level DEBUG and exporting traces and logs to a local collector. It is
sent clicks, touches, installs, opens and events carrying distinctive device
ids and addresses (also in X-Forwarded-For), postbacks go to a local
receiver (signed with a configured secret) and to a closed port (dead
letters), SRN queries go to a fake network and to one whose answers cannot
be read (the client's error names the query's URL), and bad requests are
refused. Then every service's standard output and error, every exported
span and every exported log record is searched for the raw values."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest
from google.protobuf import json_format

from lookback.api.decider.v1 import decider_service_pb2 as decider_pb
from lookback.api.decider.v1 import decider_service_pb2_grpc as decider_grpc
from lookback.api.ingestion.v1 import ingestion_service_pb2 as ingestion_pb
from lookback.api.ingestion.v1 import ingestion_service_pb2_grpc as ingestion_grpc
from lookback.api.postback.v1 import postback_dispatcher_service_pb2 as postback_pb
from lookback.api.postback.v1 import postback_dispatcher_service_pb2_grpc as postback_grpc
from lookback.api.srn.v1 import srn_adapter_service_pb2 as srn_pb
from lookback.api.srn.v1 import srn_adapter_service_pb2_grpc as srn_grpc
from lookback.api.store.v1 import touchpoint_store_service_pb2 as store_pb
from lookback.api.store.v1 import touchpoint_store_service_pb2_grpc as store_grpc
from lookback.api.types.v1 import install_pb2
from lookback.core import redact
from lookback.testing.builders import click, iso_ago, new_app_id
from lookback.testing.otlp import Collector
from lookback.testing.processes import SuiteProcesses, free_ports, serve_suite
from lookback.testing.receiver import PostbackSink
from lookback.testing.srn import start_fake_srn

pytestmark = pytest.mark.slow

UA = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 Chrome/124.0 Mobile Safari/537.36"
IP = "203.0.113.77"
IP6 = "2001:db8:1234:5678::77"
SECRET = f"whsec-{uuid.uuid4().hex}"
ADMIN_KEY = f"lbk-admin-{uuid.uuid4().hex}"
GAIDS = [str(uuid.uuid4()) for _ in range(4)]
IDFA = str(uuid.uuid4()).upper()
ANDROID_ID = uuid.uuid4().hex[:16]
BAD_ID = "../../etc/passwd\n<x>"
AUTH = (("authorization", f"Bearer {ADMIN_KEY}"),)


def forbidden() -> list[str]:
    """What must never be written: the raw ids (as sent and lower-cased),
    the full addresses, the secrets."""
    values = [*GAIDS, IDFA, IDFA.lower(), ANDROID_ID, IP, IP6, SECRET, ADMIN_KEY]
    return [*values, *(g.upper() for g in GAIDS)]


class Run:
    """The suite's processes and the calls made to them."""

    def __init__(self, suite: SuiteProcesses, sink: PostbackSink, http: aiohttp.ClientSession):
        self.suite = suite
        self.sink = sink
        self.http = http
        self.channels: list[grpc.aio.Channel] = []

    def stub(self, service: str, stub_class: Any) -> Any:
        channel = grpc.aio.insecure_channel(self.suite.grpc[service])
        self.channels.append(channel)
        return stub_class(channel)

    async def get(self, path: str, params: dict[str, str], **headers: str) -> tuple[int, Any]:
        async with self.http.get(
            self.suite.gateway_url + path, params=params, headers=headers
        ) as r:
            return r.status, await r.json()

    async def post(self, path: str, body: Any, **headers: str) -> tuple[int, Any]:
        async with self.http.post(self.suite.gateway_url + path, json=body, headers=headers) as r:
            return r.status, await r.json()


@pytest.fixture
async def collector() -> AsyncIterator[tuple[Collector, str]]:
    """A local OTLP collector and its address."""
    collector = Collector()
    address = await collector.start()
    yield collector, address
    await collector.stop()


async def refused(call: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value.code()


async def drive(run: Run, app_id: str) -> dict[str, str]:
    """Everything the suite is sent; what the checks need to know of it."""
    xff = {"X-Forwarded-For": f"{IP}, 10.9.8.7", "User-Agent": UA}
    # Clicks through the gateway (device ids in the link, the client's IP in
    # X-Forwarded-For), a batch of touches through ingestion.
    click_id = f"c-{uuid.uuid4().hex}"
    status, body = await run.get(
        "/v1/click",
        {
            "app_id": app_id,
            "media_source": "networka",
            "campaign": "spring",
            "click_id": click_id,
            "gaid": GAIDS[0],
            "android_id": ANDROID_ID,
            "engaged_at": iso_ago(3600),
        },
        **xff,
    )
    assert status == 200, body
    ingestion = run.stub("ingestion", ingestion_grpc.IngestionServiceStub)
    touches = [
        click(
            app_id, GAIDS[1], media_source="networkb", ip=IP6, click_id=f"c-b-{uuid.uuid4().hex}"
        ),
        click(app_id, GAIDS[2], media_source="networka", ip=IP, user_agent=UA),
    ]
    touches[1].device.idfa = IDFA
    await ingestion.RecordTouches(ingestion_pb.RecordTouchesRequest(touches=touches), metadata=AUTH)

    # Installs: over HTTP (the IP from X-Forwarded-For), over gRPC (IPv6).
    status, body = await run.post(
        "/v1/installs",
        {
            "app_id": app_id,
            "install_id": "i-http",
            "device": {"gaid": GAIDS[0], "android_id": ANDROID_ID},
            "os_version": "14",
        },
        **xff,
    )
    assert status == 200, body
    assert body["decision"]["media_source"] == "networka", body
    report = install_pb2.Install(app_id=app_id, install_id="i-grpc", ip=IP6, user_agent=UA)
    report.device.gaid = GAIDS[1]
    answer = await ingestion.ReportInstall(
        ingestion_pb.ReportInstallRequest(install=report), metadata=AUTH
    )
    assert answer.decision.media_source == "networkb"
    status, body = await run.post(
        "/v1/installs",
        {"app_id": app_id, "install_id": "i-srn", "device": {"gaid": GAIDS[3]}, "ip": IP},
        **xff,
    )
    assert status == 200, body

    # An open and events.
    status, body = await run.post(
        "/v1/opens",
        {"app_id": app_id, "install_id": "i-http", "device": {"gaid": GAIDS[0]}, "ip": IP},
        **xff,
    )
    assert status == 200, body
    for name in ("purchase", "level_up"):
        event = {"app_id": app_id, "install_id": "i-http", "name": name}
        status, body = await run.post(
            "/v1/events", {**event, "revenue": "4.99", "currency": "USD"}, **xff
        )
        assert status == 200, body

    # Bad requests, refused, carrying the same values.
    for bad in (
        {"install_id": BAD_ID, "device": {"gaid": GAIDS[0]}, "ip": IP},
        {"install_id": "i-bad", "device": {"gaid": f"{GAIDS[0]}-{IP}"}},
        {"install_id": "i-bad", "device": {"android_id": ANDROID_ID + "zz"}, "ip": "999.1.1.1"},
        {"install_id": "i-bad", "device": {"gaid": GAIDS[0]}, "ip": f"{IP}/99"},
    ):
        status, body = await run.post("/v1/installs", {"app_id": app_id, **bad}, **xff)
        assert status == 400, body
    status, body = await run.post(
        "/v1/events", {"app_id": app_id, "install_id": "i-nobody", "name": "x"}, **xff
    )
    assert status == 404, body
    status, body = await run.get(
        "/v1/click", {"app_id": app_id, "media_source": "networka", "gaid": f"x{GAIDS[0]}"}, **xff
    )
    assert status == 400, body
    store = run.stub("touchpoint_store", store_grpc.TouchpointStoreServiceStub)
    bad_touch = click(app_id, GAIDS[0], ip=f"{IP}.1", click_id=BAD_ID)
    code = await refused(
        store.PutTouches(
            store_pb.PutTouchesRequest(
                touches=[store_pb.IndexedTouch(touch=bad_touch, match_keys=[f"ip:{IP}"])]
            ),
            metadata=AUTH,
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    decider = run.stub("decider", decider_grpc.DeciderServiceStub)
    bad_install = install_pb2.Install(app_id=app_id, install_id=BAD_ID, ip=IP)
    bad_install.device.gaid = GAIDS[0]
    code = await refused(
        decider.DecideInstall(decider_pb.DecideInstallRequest(install=bad_install), metadata=AUTH)
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    srn = run.stub("srn_adapter", srn_grpc.SrnAdapterServiceStub)
    query = srn_pb.QueryClaimsRequest(app_id=BAD_ID, networks=["srn_social"])
    query.device.gaid = GAIDS[0]
    code = await refused(srn.QueryClaims(query, metadata=AUTH))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    # A request the gateway's HTTP parser itself refuses, the values in it.
    _, port = run.suite.gateway_url.rsplit(":", 1)
    reader, writer = await asyncio.open_connection("127.0.0.1", int(port))
    writer.write(
        f"GET /v1/click?gaid={GAIDS[0]}&ip={IP} HTTP/1.1\r\nHost: x\r\n"
        f"Bad Header {GAIDS[0]} {IP}\r\n\r\n".encode()
    )
    await writer.drain()
    await reader.read(1000)
    writer.close()

    # The postbacks: networka's delivered (signed), networkb's dead.
    (delivered,) = await run.sink.wait_for("networka", 1, timeout=30)
    assert delivered.headers.get("X-Lookback-Signature", "").startswith("sha256=")
    postbacks = run.stub("postback", postback_grpc.PostbackDispatcherServiceStub)
    dead_job = f"{answer.decision.decision_id}:networkb:install"
    deadline = time.monotonic() + 60
    while True:
        job = await postbacks.GetPostbackJob(
            postback_pb.GetPostbackJobRequest(job_id=dead_job), metadata=AUTH
        )
        if job.state == postback_pb.DELIVERY_STATE_DEAD:
            break
        assert time.monotonic() < deadline, job
        await asyncio.sleep(0.2)
    return {"click_query": f"click={click_id}", "delivered": delivered.path_qs}


async def test_no_raw_ids_addresses_or_secrets_in_the_logs_and_spans_of_a_run(
    tmp_path: Path, collector: tuple[Collector, str], receiver: PostbackSink
) -> None:
    otlp, otlp_address = collector
    app_id = new_app_id("com.test.redact")
    fake, fake_runner, fake_url = await start_fake_srn()
    fake.claim("srn_social", app_id, {"gaid": GAIDS[3]}, iso_ago(600), campaign="srn")
    (dead_port,) = free_ports(1)  # nothing listens there: networkb's postbacks fail
    env = {
        # Every service takes the variables of its own settings only.
        "LOOKBACK_LOG_LEVEL": "DEBUG",
        "LOOKBACK_OTLP_ENDPOINT": f"http://{otlp_address}",
        "LOOKBACK_SIGNING_SECRETS": f"networka={SECRET}",
        "LOOKBACK_ADMIN_KEYS": ADMIN_KEY,
        # The client's address is the second from the right of X-Forwarded-For.
        "LOOKBACK_TRUSTED_PROXIES": "2",
        "LOOKBACK_OUTBOUND_ALLOW_CIDRS": "127.0.0.0/8",
        "LOOKBACK_MAX_ATTEMPTS": "2",
        "LOOKBACK_BASE_DELAY": "0.05",
        "LOOKBACK_REQUEST_TIMEOUT": "1",
        "LOOKBACK_SRN_BUDGET_MS": "1000",
    }
    suite = await serve_suite(
        tmp_path / "data",
        srn_endpoints=f"srn_social={fake_url},srn_video={receiver.url}",
        env=env,
    )
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    try:
        async with aiohttp.ClientSession(headers=headers) as http:
            run = Run(suite, receiver, http)
            status, body = await run.post(
                "/v1/apps",
                {
                    "app_id": app_id,
                    "platform": "android",
                    "settings": {
                        "srn_networks": ["srn_social", "srn_video"],
                        "postbacks": {
                            "networka": {
                                "install": {
                                    "url": f"{receiver.url}/networka?click={{click_id}}"
                                    "&i={install_id}"
                                },
                                "event": {"url": f"{receiver.url}/networka-ev?e={{event_id}}"},
                                "signing_secret": "networka",
                            },
                            "networkb": {
                                "install": {
                                    "url": f"http://127.0.0.1:{dead_port}/networkb"
                                    "?click={click_id}"
                                }
                            },
                        },
                    },
                },
            )
            assert status == 201, body
            facts = await drive(run, app_id)
            for channel in run.channels:
                await channel.close()
    finally:
        codes = await suite.stop()  # SIGTERM: the exporters flush on the way out
        await fake_runner.cleanup()
    assert all(code == 0 for code in codes.values()), codes

    outputs = suite.outputs()
    spans = [json_format.MessageToJson(r) for r in otlp.spans]
    logs = [json_format.MessageToJson(r) for r in otlp.logs]
    written = {f"{name} output": text for name, text in outputs.items()}
    written["exported spans"] = "\n".join(spans)
    written["exported logs"] = "\n".join(logs)
    leaks = [
        (where, value, next(line for line in text.splitlines() if value in line)[:400])
        for where, text in written.items()
        for value in [*forbidden(), facts["click_query"], "gaid="]
        if value in text
    ]
    assert not leaks, leaks

    # The checks can fail: every service logged at DEBUG, the values went
    # through in redacted form, and telemetry was exported.
    for name, text in outputs.items():
        assert " DEBUG " in text, f"{name} wrote no DEBUG line:\n{text}"
    assert f"from {redact.ip(IP)}" in outputs["gateway"]  # the access log, truncated
    assert "/v1/installs 400" in outputs["gateway"]
    assert "srn_video unanswered: srn_video: " in outputs["srn_adapter"]
    # (The answer is read whole, then parsed: its error names no URL.)
    assert "INVALID_ARGUMENT" in outputs["touchpoint_store"]
    assert "INVALID_ARGUMENT" in outputs["decider"]
    assert f"to http://127.0.0.1:{dead_port}/networkb dead after 2 attempts" in outputs["postback"]
    assert facts["click_query"] in facts["delivered"]  # the query was sent, never written
    assert f'"{receiver.url}/networka"' in written["exported spans"]  # url.full, redacted
    assert "lookback-gateway" in written["exported spans"]
    assert "serving on" in written["exported logs"]
