"""The SRN adapter against real local HTTP servers playing SRNs: claims,
deadlines, failures, unknown networks and the circuit breaker."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import grpc
import pytest

from lookback.api.srn.v1 import srn_adapter_service_pb2 as pb
from lookback.api.srn.v1 import srn_adapter_service_pb2_grpc as pb_grpc
from lookback.core.convert import micros_to_dur
from lookback.core.server import GrpcServer
from lookback.srn_adapter.component import SrnComponent
from lookback.srn_adapter.config import SrnConfig
from lookback.testing.http import LOCAL_CIDRS
from lookback.testing.srn import FakeSrn


@pytest.fixture
async def adapter(fake_srn: tuple[FakeSrn, str]) -> AsyncIterator[pb_grpc.SrnAdapterServiceStub]:
    _, url = fake_srn
    config = SrnConfig(
        port=0,
        srn_endpoints={"fast": url, "slow": url, "broken": url, "*": url},
        outbound_allow_cidrs=LOCAL_CIDRS,
        breaker_threshold=2,
        breaker_cooldown=60,
    )
    server = GrpcServer(SrnComponent(config), config)
    await server.start()
    async with grpc.aio.insecure_channel(server.address) as channel:
        yield pb_grpc.SrnAdapterServiceStub(channel)
    await server.stop(0)


def query(app_id: str, gaid: str, *networks: str, budget_ms: int = 100) -> pb.QueryClaimsRequest:
    request = pb.QueryClaimsRequest(
        app_id=app_id, networks=list(networks), budget=micros_to_dur(budget_ms * 1000)
    )
    request.device.gaid = gaid
    request.installed_at.FromDatetime(datetime.now(UTC))
    return request


async def test_answers_with_claims_and_lists_the_networks_that_did_not_answer(
    adapter: pb_grpc.SrnAdapterServiceStub, fake_srn: tuple[FakeSrn, str]
) -> None:
    fake, _ = fake_srn
    app, gaid = f"app-{uuid.uuid4().hex}", str(uuid.uuid4())
    for network in ("fast", "slow"):
        fake.claim(network, app, {"gaid": gaid}, "2026-01-01T00:00:00Z", campaign=f"c-{network}")
    fake.behaviour["slow"] = {"delay_ms": 2000}
    fake.behaviour["broken"] = {"status": 500}
    started = time.monotonic()
    answer = await adapter.QueryClaims(query(app, gaid, "fast", "slow", "broken", "nobody-knows"))
    elapsed = time.monotonic() - started
    assert [c.campaign for c in answer.claims] == ["c-fast"]
    assert sorted(answer.unanswered) == ["broken", "slow"]  # "*" covers nobody-knows
    assert elapsed < 0.5, f"the 100 ms budget held the answer for {elapsed:.3f}s"


async def test_a_network_without_endpoint_is_unanswered(fake_srn: tuple[FakeSrn, str]) -> None:
    config = SrnConfig(
        port=0, srn_endpoints={"fast": fake_srn[1]}, outbound_allow_cidrs=LOCAL_CIDRS
    )
    server = GrpcServer(SrnComponent(config), config)
    await server.start()
    async with grpc.aio.insecure_channel(server.address) as channel:
        answer = await pb_grpc.SrnAdapterServiceStub(channel).QueryClaims(
            query("app", str(uuid.uuid4()), "fast", "unknown")
        )
    await server.stop(0)
    assert list(answer.unanswered) == ["unknown"]


async def test_the_circuit_breaker_stops_asking_a_failing_network(
    adapter: pb_grpc.SrnAdapterServiceStub, fake_srn: tuple[FakeSrn, str]
) -> None:
    fake, _ = fake_srn
    fake.behaviour["broken"] = {"status": 503}
    gaid = str(uuid.uuid4())
    for _ in range(2):
        await adapter.QueryClaims(query("app", gaid, "broken"))
    asked = sum(1 for q in fake.queries if q.get("network") == "broken")
    answer = await adapter.QueryClaims(query("app", gaid, "broken"))
    assert list(answer.unanswered) == ["broken"]
    assert sum(1 for q in fake.queries if q.get("network") == "broken") == asked  # not asked again
