"""The SRN adapter against real local HTTP servers playing SRNs: claims,
deadlines, failures, unknown networks and the circuit breaker; answers read
up to a bound, redirects not followed, a cap on networks per query, and
endpoints that are not public refused at start and again when sent."""

from __future__ import annotations

import asyncio
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aiohttp
import grpc
import pytest
from aiohttp import web

from lookback.api.srn.v1 import srn_adapter_service_pb2 as pb
from lookback.api.srn.v1 import srn_adapter_service_pb2_grpc as pb_grpc
from lookback.api.types.v1 import device_pb2
from lookback.core.config import ConfigError
from lookback.core.convert import micros_to_dur
from lookback.core.outbound import BODY_LIMIT, OutboundPolicy, client_session
from lookback.core.server import GrpcServer
from lookback.srn_adapter.adapters import HttpSrnAdapter, SrnError, SrnQuery
from lookback.srn_adapter.component import SrnComponent
from lookback.srn_adapter.config import SrnConfig
from lookback.testing.http import LOCAL_CIDRS, start_http
from lookback.testing.keys import ADMIN_KEY, admin_channel
from lookback.testing.rpc import violations_of
from lookback.testing.srn import FakeSrn


@pytest.fixture
async def adapter(fake_srn: tuple[FakeSrn, str]) -> AsyncIterator[pb_grpc.SrnAdapterServiceStub]:
    _, url = fake_srn
    config = SrnConfig(
        admin_keys=ADMIN_KEY,
        port=0,
        srn_endpoints={"fast": url, "slow": url, "broken": url, "*": url},
        outbound_allow_cidrs=LOCAL_CIDRS,
        breaker_threshold=2,
        breaker_cooldown=60,
    )
    server = GrpcServer(SrnComponent(config), config)
    await server.start()
    async with admin_channel(server.address) as channel:
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
        port=0,
        admin_keys=ADMIN_KEY,
        srn_endpoints={"fast": fake_srn[1]},
        outbound_allow_cidrs=LOCAL_CIDRS,
    )
    server = GrpcServer(SrnComponent(config), config)
    await server.start()
    async with admin_channel(server.address) as channel:
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


class Flood:
    """A network that answers without end (256 MiB, in 64 KiB chunks): how
    much it got to send before the adapter hung up."""

    total = 256 * 1024 * 1024

    def __init__(self) -> None:
        self.sent = 0
        self.hung_up = asyncio.Event()

    async def claims(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        chunk = b" " * 65536  # JSON whitespace: only its size is wrong
        try:
            while self.sent < self.total:
                await response.write(chunk)
                self.sent += len(chunk)
        except (ConnectionError, aiohttp.ClientConnectionResetError):
            pass
        finally:
            self.hung_up.set()
        return response


@pytest.fixture
async def flood() -> AsyncIterator[tuple[Flood, str]]:
    network = Flood()
    app = web.Application()
    app.router.add_get("/v1/claims", network.claims)
    runner, url = await start_http(app)
    yield network, url
    await runner.cleanup()


def srn_query(gaid: str) -> SrnQuery:
    device = device_pb2.DeviceIdentifiers(gaid=gaid)
    return SrnQuery(f"app-{uuid.uuid4().hex}", device, datetime.now(UTC))


async def test_an_answer_larger_than_the_limit_is_a_failure_read_no_further(
    flood: tuple[Flood, str],
) -> None:
    network, url = flood
    policy = OutboundPolicy(LOCAL_CIDRS)
    async with client_session(policy) as session:
        adapter = HttpSrnAdapter("flood", url, session, policy)
        tracemalloc.start()
        try:
            with pytest.raises(SrnError, match=f"larger than {BODY_LIMIT} bytes"):
                await adapter.query(srn_query(str(uuid.uuid4())), timeout=10)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    await asyncio.wait_for(network.hung_up.wait(), 10)
    assert peak < 4 * 1024 * 1024, f"memory grew by {peak} bytes"
    assert network.sent < network.total // 16, f"{network.sent} bytes were sent"


async def test_a_flooding_network_is_unanswered_and_stops_nothing_else(
    flood: tuple[Flood, str], fake_srn: tuple[FakeSrn, str]
) -> None:
    network, flood_url = flood
    fake, url = fake_srn
    config = SrnConfig(
        port=0,
        admin_keys=ADMIN_KEY,
        srn_endpoints={"flood": flood_url, "fast": url},
        outbound_allow_cidrs=LOCAL_CIDRS,
    )
    server = GrpcServer(SrnComponent(config), config)
    await server.start()
    try:
        app, gaid = f"app-{uuid.uuid4().hex}", str(uuid.uuid4())
        fake.claim("fast", app, {"gaid": gaid}, "2026-01-01T00:00:00Z", campaign="c-fast")
        async with admin_channel(server.address) as channel:
            answer = await pb_grpc.SrnAdapterServiceStub(channel).QueryClaims(
                query(app, gaid, "flood", "fast", budget_ms=5000)
            )
    finally:
        await server.stop(0)
    assert list(answer.unanswered) == ["flood"]
    assert [c.campaign for c in answer.claims] == ["c-fast"]
    await asyncio.wait_for(network.hung_up.wait(), 10)
    assert network.sent < network.total // 16


async def test_a_redirect_is_not_followed(fake_srn: tuple[FakeSrn, str]) -> None:
    fake, url = fake_srn
    app, gaid = f"app-{uuid.uuid4().hex}", str(uuid.uuid4())
    fake.claim("moved", app, {"gaid": gaid}, "2026-01-01T00:00:00Z", campaign="stolen")

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"{url}/v1/claims?{request.query_string}")

    redirecting = web.Application()
    redirecting.router.add_get("/v1/claims", moved)
    runner, moved_url = await start_http(redirecting)
    config = SrnConfig(
        port=0,
        admin_keys=ADMIN_KEY,
        srn_endpoints={"moved": moved_url},
        outbound_allow_cidrs=LOCAL_CIDRS,
    )
    server = GrpcServer(SrnComponent(config), config)
    await server.start()
    try:
        async with admin_channel(server.address) as channel:
            answer = await pb_grpc.SrnAdapterServiceStub(channel).QueryClaims(
                query(app, gaid, "moved", budget_ms=2000)
            )
    finally:
        await server.stop(0)
        await runner.cleanup()
    assert list(answer.unanswered) == ["moved"] and not answer.claims
    assert not [q for q in fake.queries if q.get("app_id") == app]  # never reached


async def test_one_query_names_at_most_20_networks(
    adapter: pb_grpc.SrnAdapterServiceStub,
) -> None:
    gaid = str(uuid.uuid4())
    twenty = [f"srn{i}" for i in range(20)]
    answer = await adapter.QueryClaims(query("app", gaid, *twenty, *twenty, budget_ms=2000))
    assert sorted(answer.unanswered) == []  # each asked (once), none claimed
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await adapter.QueryClaims(query("app", gaid, *twenty, "srn20"))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "networks" in violations_of(refused.value)


@pytest.mark.parametrize(
    "endpoints",
    [
        {"srn_a": "http://10.0.0.1:9000"},
        {"srn_a": "http://169.254.169.254/latest"},
        {"*": "http://localhost:9000"},
        {"srn_a": "ftp://93.184.216.34/"},
    ],
)
async def test_the_adapter_refuses_to_start_with_an_endpoint_not_allowed(
    endpoints: dict[str, str],
) -> None:
    component = SrnComponent(SrnConfig(port=0, admin_keys=ADMIN_KEY, srn_endpoints=endpoints))
    with pytest.raises(ConfigError, match=r"srn_endpoints\["):
        await component.start()


async def test_allowed_and_unresolvable_endpoints_let_the_adapter_start() -> None:
    allowed = SrnConfig(
        port=0,
        admin_keys=ADMIN_KEY,
        srn_endpoints={"srn_a": "http://10.0.0.1:9000", "srn_b": "http://srn.invalid"},
        outbound_allow_cidrs="10.0.0.0/8",
    )
    component = SrnComponent(allowed)
    await component.start()  # srn.invalid does not resolve now: checked at each query
    await component.stop()


async def test_each_query_is_checked_again_when_sent(fake_srn: tuple[FakeSrn, str]) -> None:
    """Past the start-up check (a name may resolve elsewhere later), the
    session's resolver and the literal check refuse before connecting."""
    fake, url = fake_srn
    port = url.rsplit(":", 1)[1]
    strict = OutboundPolicy()
    asked = len(fake.queries)
    async with client_session(strict) as session:
        for base in (f"http://localhost:{port}", f"http://127.0.0.1:{port}"):
            adapter = HttpSrnAdapter("srn_a", base, session, strict)
            with pytest.raises(SrnError, match="destination_not_allowed"):
                await adapter.query(srn_query(str(uuid.uuid4())), timeout=5)
    assert len(fake.queries) == asked
