"""OpenTelemetry: one install is one trace across gateway, decider, store,
SRN adapter and postback dispatcher (context carried in gRPC metadata
and HTTP headers); the decider's span names the decision; metrics and logs."""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import grpc
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from lookback.api.apps.v1 import app_settings_service_pb2_grpc as apps_grpc
from lookback.api.srn.v1 import srn_adapter_service_pb2 as srn_pb
from lookback.api.srn.v1 import srn_adapter_service_pb2_grpc as srn_grpc
from lookback.core import telemetry
from lookback.testing.builders import create_app, iso_ago, new_app_id, new_gaid
from lookback.testing.http import LOCAL_CIDRS
from lookback.testing.keys import admin_channel, admin_headers
from lookback.testing.otlp import Collector
from lookback.testing.processes import serve
from lookback.testing.receiver import PostbackSink
from lookback.testing.srn import FakeSrn
from lookback.testing.suite import SuiteAddresses

UA = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 Chrome/124.0 Mobile Safari/537.36"

_exporter = InMemorySpanExporter()
_reader = InMemoryMetricReader()


_providers: list[tuple[TracerProvider, MeterProvider]] = []


@pytest.fixture
def telemetry_on() -> Iterator[InMemorySpanExporter]:
    """In-memory exporters for this process (OpenTelemetry's providers are
    global and set once; tracing is switched off again afterwards)."""
    if not _providers:  # OpenTelemetry's providers are made once per process
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_exporter))
        _providers.append((provider, MeterProvider(metric_readers=[_reader])))
    telemetry.install(*_providers[0])
    _exporter.clear()
    yield _exporter
    telemetry.turn_off()


@pytest.fixture
def trace_log() -> Iterator[io.StringIO]:
    """Log lines as a service writes them (with the trace id), at INFO."""
    out = io.StringIO()
    handler = telemetry.log_handler(out)
    logger = logging.getLogger("lookback")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    yield out
    logger.setLevel(level)
    logger.removeHandler(handler)


@pytest.fixture
async def srn_app(apps: apps_grpc.AppSettingsServiceStub, sink: PostbackSink) -> AsyncIterator[str]:
    app_id = new_app_id("com.test.otel")
    yield await create_app(
        apps,
        app_id,
        srn_networks=["srn_social", "srn_video"],
        postbacks={"networka": f"{sink.url}/otel-{app_id}?c={{campaign}}"},
    )


def metric_points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    points: dict[str, list[Any]] = {}
    data = reader.get_metrics_data()
    for rm in data.resource_metrics if data else []:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                points.setdefault(metric.name, []).extend(metric.data.data_points)
    return points


async def test_one_install_is_one_trace_across_every_service(
    suite: SuiteAddresses,
    srn_app: str,
    fake_srn: tuple[FakeSrn, str],
    sink: PostbackSink,
    telemetry_on: InMemorySpanExporter,
    trace_log: io.StringIO,
) -> None:
    fake, _ = fake_srn
    fake.behaviour["srn_video"] = {"delay_ms": 1000}  # past the decider's SRN budget
    gaid = new_gaid()
    async with aiohttp.ClientSession(headers=admin_headers()) as http:
        click = {
            "app_id": srn_app,
            "media_source": "networka",
            "campaign": "otel",
            "gaid": gaid,
            "engaged_at": iso_ago(3600),
        }
        async with http.get(f"{suite.gateway_url}/v1/click", params=click) as r:
            assert r.status == 200, await r.text()
        telemetry_on.clear()
        install = {
            "app_id": srn_app,
            "install_id": "i-otel",
            "device": {"gaid": gaid},
            "os_version": "14",
            "user_agent": UA,
        }
        # The caller's own trace context is continued (W3C traceparent).
        caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736"
        headers = {"traceparent": f"00-{caller_trace}-00f067aa0ba902b7-01", "User-Agent": UA}
        async with http.post(
            f"{suite.gateway_url}/v1/installs", json=install, headers=headers
        ) as r:
            assert r.status == 200, await r.text()
            assert (await r.json())["decision"]["media_source"] == "networka"
    await sink.wait_for(f"otel-{srn_app}")
    fake.behaviour.pop("srn_video")

    spans: list[ReadableSpan] = []
    deadline = time.monotonic() + 10
    # Wait for the last hop: the delivery attempt, after the answer was sent.
    while not any(s.name == "postback networka" for s in spans):
        assert time.monotonic() < deadline, [s.name for s in spans]
        await asyncio.sleep(0.05)
        spans = [
            s
            for s in telemetry_on.get_finished_spans()
            if s.context is not None and format(s.context.trace_id, "032x") == caller_trace
        ]

    by_id = {s.context.span_id: s for s in spans if s.context is not None}
    (http_span,) = [s for s in spans if s.name == "POST /v1/installs"]
    assert http_span.kind == SpanKind.SERVER
    assert http_span.parent is not None and http_span.parent.span_id == 0x00F067AA0BA902B7

    servers = {
        str((s.attributes or {}).get("rpc.service")): s
        for s in spans
        if s.kind == SpanKind.SERVER and s is not http_span
    }
    assert set(servers) >= {
        "lookback.decider.v1.DeciderService",
        "lookback.store.v1.TouchpointStoreService",
        "lookback.srn.v1.SrnAdapterService",
        "lookback.postback.v1.PostbackDispatcherService",
    }
    for server in servers.values():  # each hop's parent is the caller's client span
        assert server.parent is not None
        caller = by_id[server.parent.span_id]
        assert caller.kind == SpanKind.CLIENT and caller.name == server.name

    (decide,) = [
        s
        for s in spans
        if s.name == "lookback.decider.v1.DeciderService/DecideInstall"
        and s.kind == SpanKind.SERVER
    ]
    attributes = dict(decide.attributes or {})
    assert attributes["lookback.decision.kind"] == "install"
    assert attributes["lookback.decision.method"] == "device_id"
    assert attributes["lookback.decision.media_source"] == "networka"
    srn_calls = [s for s in spans if s.name.startswith("SRN ")]
    assert {s.name for s in srn_calls} == {"SRN srn_social", "SRN srn_video"}
    # The postback is delivered later, by a worker, yet in the same trace:
    # under the dispatcher's EnqueuePostbacks span, via the job's traceparent.
    (delivery,) = [s for s in spans if s.name == "postback networka"]
    enqueue = servers["lookback.postback.v1.PostbackDispatcherService"]
    assert delivery.parent is not None and enqueue.context is not None
    assert delivery.parent.span_id == enqueue.context.span_id
    assert (delivery.attributes or {})["lookback.postback.outcome"] == "delivered"

    # Logs carry the trace id: the SRN adapter's note about the slow network.
    lines = [line for line in trace_log.getvalue().splitlines() if "srn_video unanswered" in line]
    assert lines and all(f"trace={caller_trace}" in line for line in lines)

    # Metrics: decision latency, cache hit ratio, SRN timeouts, postback outcomes, queue depth.
    deadline = time.monotonic() + 10
    while True:
        points = metric_points(_reader)
        outcomes = [
            p
            for p in points.get("lookback.postback.outcomes", [])
            if p.attributes.get("partner") == "networka"
            and p.attributes.get("outcome") == "delivered"
        ]
        if outcomes:
            break
        assert time.monotonic() < deadline, sorted(points)
        await asyncio.sleep(0.05)
    durations = [
        p
        for p in points["lookback.decider.decision.duration"]
        if p.attributes == {"call": "install", "kind": "install", "method": "device_id"}
    ]
    assert durations and durations[0].count >= 1 and durations[0].sum > 0
    ratios = {p.attributes["cache"]: p.value for p in points["lookback.decider.cache.hit_ratio"]}
    assert set(ratios) == {"settings", "install"} and all(0 <= v <= 1 for v in ratios.values())
    timeouts = [
        p for p in points["lookback.srn.timeouts"] if p.attributes == {"network": "srn_video"}
    ]
    assert timeouts and timeouts[0].value >= 1
    assert "lookback.postback.queue.depth" in points
    # Per partner: its delivery delay, and its lane's deliveries in flight and circuit.
    delays = [
        p for p in points["lookback.postback.delay"] if p.attributes == {"partner": "networka"}
    ]
    assert delays and delays[0].count >= 1 and delays[0].sum > 0
    for name in ("lookback.postback.lane.in_flight", "lookback.postback.lane.circuit_open"):
        lanes = [p for p in points[name] if p.attributes.get("partner") == "networka"]
        assert lanes and lanes[0].attributes["server.address"] == "127.0.0.1", name
        if name.endswith("circuit_open"):
            assert {p.value for p in lanes} == {0}  # delivered: closed


def test_log_lines_outside_a_span_say_so() -> None:
    out = io.StringIO()
    logger = logging.getLogger("lookback.test.otel")
    logger.addHandler(handler := telemetry.log_handler(out))
    logger.warning("hello")
    logger.removeHandler(handler)
    assert "trace=- span=- hello" in out.getvalue()


def service_name(resource: Any) -> str:
    for kv in resource.attributes:
        if kv.key == "service.name":
            return str(kv.value.string_value)
    return ""


async def test_a_service_exports_traces_metrics_and_logs_over_otlp(
    fake_srn: tuple[FakeSrn, str],
) -> None:
    collector = Collector()
    address = await collector.start()
    _, srn_url = fake_srn
    adapter = await serve(
        "srn_adapter",
        "--otlp-endpoint",
        f"http://{address}",
        "--srn-endpoints",
        f"srn_social={srn_url}",
        outbound_allow_cidrs=LOCAL_CIDRS,
    )
    try:
        async with admin_channel(adapter.address) as channel:
            request = srn_pb.QueryClaimsRequest(app_id="com.otlp", networks=["srn_social"])
            request.device.gaid = new_gaid()
            request.installed_at.GetCurrentTime()
            await srn_grpc.SrnAdapterServiceStub(channel).QueryClaims(request)
    finally:
        await adapter.stop()  # SIGTERM: the exporters flush on the way out
        await collector.stop()
    assert adapter.process.returncode == 0

    assert {service_name(r.resource) for r in collector.spans} == {"lookback-srn-adapter"}
    names = {s.name for r in collector.spans for ss in r.scope_spans for s in ss.spans}
    assert "lookback.srn.v1.SrnAdapterService/QueryClaims" in names
    assert "SRN srn_social" in names
    metric_names = {m.name for r in collector.metrics for sm in r.scope_metrics for m in sm.metrics}
    assert "lookback.srn.queries" in metric_names
    bodies = [
        lr.body.string_value for r in collector.logs for sl in r.scope_logs for lr in sl.log_records
    ]
    assert any("serving on" in body for body in bodies), bodies


async def test_an_anonymous_caller_cannot_choose_our_trace(
    suite: SuiteAddresses, app_id: str, telemetry_on: InMemorySpanExporter
) -> None:
    """A link is public: its ``traceparent`` is not followed (an anonymous
    caller could otherwise force sampling); a keyed caller's is."""
    forged = "0af7651916cd43dd8448eb211c80319c"
    headers = {"traceparent": f"00-{forged}-b7ad6b7169203331-01", "User-Agent": UA}
    params = {"app_id": app_id, "media_source": "networka", "gaid": new_gaid()}
    telemetry_on.clear()
    async with aiohttp.ClientSession() as anonymous:
        async with anonymous.get(
            f"{suite.gateway_url}/v1/click", params=params, headers=headers
        ) as r:
            assert r.status == 200, await r.text()
    async with aiohttp.ClientSession(headers=admin_headers()) as keyed:
        async with keyed.get(
            f"{suite.gateway_url}/v1/impression", params=params, headers=headers
        ) as r:
            assert r.status == 200, await r.text()
    spans = {s.name: s for s in telemetry_on.get_finished_spans() if s.kind == SpanKind.SERVER}
    click, impression = spans["GET /v1/click"], spans["GET /v1/impression"]
    assert click.context is not None and impression.context is not None
    assert format(click.context.trace_id, "032x") != forged
    assert click.parent is None
    assert format(impression.context.trace_id, "032x") == forged


async def test_a_keyless_grpc_call_cannot_choose_our_trace_either(
    suite: SuiteAddresses, telemetry_on: InMemorySpanExporter
) -> None:
    """A call without a valid key is refused, and its span starts a trace of
    ours; the admin's call continues the caller's."""
    forged = "1af7651916cd43dd8448eb211c80319d"
    traceparent = (("traceparent", f"00-{forged}-b7ad6b7169203332-01"),)
    request = srn_pb.QueryClaimsRequest(app_id="com.trace")
    telemetry_on.clear()
    async with grpc.aio.insecure_channel(suite.srn) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await srn_grpc.SrnAdapterServiceStub(channel).QueryClaims(
                request, metadata=traceparent, timeout=5
            )
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    async with admin_channel(suite.srn) as channel:
        await srn_grpc.SrnAdapterServiceStub(channel).QueryClaims(
            request, metadata=traceparent, timeout=5
        )
    servers = [
        s
        for s in telemetry_on.get_finished_spans()
        if s.kind == SpanKind.SERVER and s.name.endswith("SrnAdapterService/QueryClaims")
    ]
    traces = sorted(format(s.context.trace_id, "032x") == forged for s in servers if s.context)
    assert traces == [False, True]  # the keyless call's own trace; the admin's, the caller's
