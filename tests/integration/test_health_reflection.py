"""Every service reports SERVING once ready, and lists its services by reflection."""

from __future__ import annotations

import aiohttp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from lookback.testing.keys import admin_channel, admin_headers
from lookback.testing.suite import SuiteAddresses

EXPECTED = {
    "store": ["lookback.store.v1.TouchpointStoreService"],
    "decider": ["lookback.decider.v1.DeciderService", "lookback.apps.v1.AppSettingsService"],
    "ingestion": ["lookback.ingestion.v1.IngestionService"],
    "srn": ["lookback.srn.v1.SrnAdapterService"],
    "postback": ["lookback.postback.v1.PostbackDispatcherService"],
}


async def test_every_grpc_service_reports_serving(suite: SuiteAddresses) -> None:
    for attr, services in EXPECTED.items():
        async with admin_channel(getattr(suite, attr)) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            for name in ["", *services]:
                answer = await stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=2)
                assert answer.status == health_pb2.HealthCheckResponse.SERVING, (attr, name)


async def test_gateway_reports_ready(suite: SuiteAddresses) -> None:
    async with aiohttp.ClientSession(headers=admin_headers()) as http:
        for path in ("/healthz", "/readyz"):
            async with http.get(suite.gateway_url + path) as r:
                assert r.status == 200, path


async def test_reflection_lists_every_service(suite: SuiteAddresses) -> None:
    for attr, services in EXPECTED.items():
        async with admin_channel(getattr(suite, attr)) as channel:
            stub = reflection_pb2_grpc.ServerReflectionStub(channel)
            request = reflection_pb2.ServerReflectionRequest(list_services="")
            names: set[str] = set()
            async for answer in stub.ServerReflectionInfo(iter([request]), timeout=2):
                names |= {s.name for s in answer.list_services_response.service}
            assert set(services) <= names, (attr, names)
            assert "grpc.health.v1.Health" in names


async def test_reflection_serves_file_descriptors(suite: SuiteAddresses) -> None:
    async with admin_channel(suite.decider) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(
            file_containing_symbol="lookback.decider.v1.DeciderService"
        )
        async for answer in stub.ServerReflectionInfo(iter([request]), timeout=2):
            assert answer.file_descriptor_response.file_descriptor_proto
