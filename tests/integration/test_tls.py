"""TLS and mutual TLS between services: real servers on free ports with
certificates made for the test (lookback.testing.tls). A mutual-TLS server
refuses clients without a certificate, with one from another CA, and in
plain text; lets the right one through; its plain-text health port (for
probes) serves health and nothing else. The whole suite runs with mutual
TLS: in this loop (HTTPS gateway) and as ``lookback up`` driven by the
scenario runner."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lookback.api.apps.v1 import app_settings_service_pb2_grpc as apps_grpc
from lookback.api.srn.v1 import srn_adapter_service_pb2 as srn_pb
from lookback.api.srn.v1 import srn_adapter_service_pb2_grpc as srn_grpc
from lookback.core import clients
from lookback.core.config import ConfigError
from lookback.core.server import LIVENESS, GrpcServer
from lookback.core.tls import ClientTls
from lookback.srn_adapter.component import SrnComponent
from lookback.srn_adapter.config import SrnConfig
from lookback.testing.builders import create_app, new_app_id
from lookback.testing.keys import ADMIN_KEY, admin_headers
from lookback.testing.processes import free_ports, run_cli, up
from lookback.testing.suite import EphemeralSuite
from lookback.testing.tls import Identity, TestPki
from tests import REPO

SERVING = health_pb2.HealthCheckResponse.SERVING


@dataclass(frozen=True)
class Pkis:
    ours: TestPki
    server: Identity
    client: Identity
    stranger: Identity  # signed by another CA
    strange_ca: TestPki


@pytest.fixture(scope="module")
def pkis(tmp_path_factory: pytest.TempPathFactory) -> Pkis:
    ours = TestPki.create(tmp_path_factory.mktemp("ca"))
    other = TestPki.create(tmp_path_factory.mktemp("other-ca"), "Someone else's CA")
    return Pkis(
        ours, ours.issue("srn-adapter"), ours.issue("decider"), other.issue("decider"), other
    )


@dataclass
class Running:
    server: GrpcServer

    @property
    def address(self) -> str:
        return self.server.address

    @property
    def health_address(self) -> str:
        return f"127.0.0.1:{self.server.health_port}"


@pytest.fixture(scope="module")
async def mtls_server(pkis: Pkis) -> AsyncIterator[Running]:
    """An SRN adapter (it calls nothing) serving mutual TLS, with a health port."""
    (health_port,) = free_ports(1)
    config = SrnConfig(
        port=0,
        grace_period=1,
        admin_keys=ADMIN_KEY,
        health_port=health_port,
        **pkis.server.server_settings(pkis.ours),
    )
    server = GrpcServer(SrnComponent(config), config)
    await server.start()
    yield Running(server)
    await server.stop()


async def _check(address: str, tls: ClientTls | None, service: str = "") -> int:
    async with clients.channel(address, tls) as channel:
        answer = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=3
        )
        return int(answer.status)


async def _refused(address: str, tls: ClientTls | None) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _check(address, tls)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE, raised.value


async def test_the_right_client_certificate_gets_through(mtls_server: Running, pkis: Pkis) -> None:
    tls = pkis.client.client(pkis.ours)
    assert await _check(mtls_server.address, tls) == SERVING
    async with clients.channel(
        mtls_server.address, tls, key=ADMIN_KEY
    ) as channel:  # a real call too
        stub = clients.stub(srn_grpc.SrnAdapterServiceStub, channel)
        answer = await stub.QueryClaims(srn_pb.QueryClaimsRequest(app_id="com.tls"))
        assert not answer.claims


async def test_a_client_without_a_certificate_is_refused(mtls_server: Running, pkis: Pkis) -> None:
    await _refused(mtls_server.address, ClientTls(pkis.ours.ca_cert))


async def test_a_certificate_from_another_ca_is_refused(mtls_server: Running, pkis: Pkis) -> None:
    stranger = ClientTls(pkis.ours.ca_cert, pkis.stranger.cert, pkis.stranger.key)
    await _refused(mtls_server.address, stranger)


async def test_a_plain_text_client_is_refused(mtls_server: Running) -> None:
    await _refused(mtls_server.address, None)


async def test_a_client_does_not_trust_a_server_from_another_ca(
    mtls_server: Running, pkis: Pkis
) -> None:
    await _refused(mtls_server.address, pkis.stranger.client(pkis.strange_ca))


async def test_the_health_port_serves_health_alone_in_plain_text(mtls_server: Running) -> None:
    """What Kubernetes' gRPC probes (which cannot present a certificate) call."""
    assert await _check(mtls_server.health_address, None) == SERVING
    assert await _check(mtls_server.health_address, None, LIVENESS) == SERVING
    async with grpc.aio.insecure_channel(mtls_server.health_address) as channel:
        stub = srn_grpc.SrnAdapterServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.QueryClaims(srn_pb.QueryClaimsRequest(app_id="com.tls"), timeout=3)
        assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_lookback_health_checks_over_mutual_tls(mtls_server: Running, pkis: Pkis) -> None:
    """The probe command an operator (or an exec probe) runs where the
    certificates are mounted: LOOKBACK_TLS_* as the services read them."""
    env = pkis.client.env(pkis.ours)
    code, out, err = await run_cli("health", mtls_server.address, env=env)
    assert (code, out.strip()) == (0, "SERVING"), err
    code, out, _ = await run_cli("health", mtls_server.address, "--service", LIVENESS, env=env)
    assert (code, out.strip()) == (0, "SERVING")
    code, _, err = await run_cli("health", mtls_server.address)  # plain text: refused
    assert code == 1 and "UNAVAILABLE" in err
    code, out, _ = await run_cli("health", mtls_server.health_address)
    assert (code, out.strip()) == (0, "SERVING")


async def test_tls_without_a_ca_asks_no_client_certificate(pkis: Pkis) -> None:
    config = SrnConfig(port=0, grace_period=1, **pkis.server.server_settings())
    server = GrpcServer(SrnComponent(config), config)
    await server.start()
    try:
        assert await _check(server.address, ClientTls(pkis.ours.ca_cert)) == SERVING
        await _refused(server.address, None)
    finally:
        await server.stop()


async def test_a_half_set_config_fails_at_start(pkis: Pkis) -> None:
    config = SrnConfig(port=0, tls_cert=pkis.server.cert)
    with pytest.raises(ConfigError, match="tls_key"):
        await GrpcServer(SrnComponent(config), config).start()
    config = SrnConfig(port=0, tls_cert=pkis.server.cert, tls_key=str(pkis.ours.directory / "no"))
    with pytest.raises(ConfigError, match="cannot read"):
        await GrpcServer(SrnComponent(config), config).start()
    code, _, err = await run_cli("serve", "srn_adapter", env={"LOOKBACK_TLS_KEY": pkis.server.key})
    assert code == 2, err
    assert "tls_key is set but tls_cert is not" in err
    # Found while the component is made: a Redis CA without a TLS URL.
    args = ("--redis-url", "redis://127.0.0.1:1/0", "--redis-tls-ca", pkis.ours.ca_cert)
    code, _, err = await run_cli("serve", "postback", *args)
    assert code == 2 and "rediss://" in err, err


# --- the whole suite ---------------------------------------------------------


async def test_the_suite_in_this_loop_with_mutual_tls_and_an_https_gateway(
    tmp_path: Path, pkis: Pkis
) -> None:
    suite = EphemeralSuite(tmp_path, tls=pkis.server.server_settings(pkis.ours))
    a = await suite.start()
    try:
        assert a.gateway_url.startswith("https://")
        ssl_context = ClientTls(pkis.ours.ca_cert).ssl_context()  # HTTPS: no client cert
        app_id = new_app_id("com.tls.https")
        async with aiohttp.ClientSession(headers=admin_headers()) as http:
            # /readyz: the gateway reached the decider and the store over mTLS.
            async with http.get(a.gateway_url + "/readyz", ssl=ssl_context) as r:
                assert r.status == 200
            body = {"app_id": app_id, "platform": "android"}
            async with http.post(a.gateway_url + "/v1/apps", json=body, ssl=ssl_context) as r:
                assert r.status == 201, await r.text()
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                async with http.get(a.gateway_url + "/healthz"):  # the system's CAs
                    pass
        # Every service is mutual TLS only; with the suite's certificate a
        # test's client gets through.
        tls = suite.client_tls
        assert tls is not None
        for address in (a.store, a.decider, a.ingestion, a.srn, a.postback):
            assert await _check(address, tls) == SERVING, address
            await _refused(address, ClientTls(pkis.ours.ca_cert))
        async with clients.channel(a.decider, tls, key=ADMIN_KEY) as channel:
            await create_app(apps_grpc.AppSettingsServiceStub(channel), new_app_id("com.tls.grpc"))
    finally:
        await suite.stop()


SCENARIO = REPO / "tests" / "scenarios" / "wf_postbacks_winner_only.json"


async def test_lookback_up_with_mutual_tls_runs_a_scenario(tmp_path: Path, pkis: Pkis) -> None:
    """``lookback up`` hands LOOKBACK_TLS_* to every service, waits for them
    over mTLS, runs its demo over HTTPS; the scenario runner then drives one
    scenario through the HTTPS gateway (installs reach the decider, the
    store, the SRN adapter and the dispatcher over mTLS; the postback
    arrives)."""
    (srn_port,) = free_ports(1)
    env = {
        **pkis.server.env(pkis.ours),
        # Loopback receivers and keys for when outbound checks and API keys are on.
        "LOOKBACK_OUTBOUND_ALLOW_CIDRS": "127.0.0.0/8",
    }
    suite = await up(
        tmp_path / "data", "--demo", "--srn-endpoints", f"*=http://127.0.0.1:{srn_port}", env=env
    )
    try:
        text = suite.output()
        assert "between services  mutual TLS" in text
        assert "https://127.0.0.1:" in text and "organic" in text  # the demo ran over HTTPS
        found = re.search(r"gateway +https? (https://\S+)", text)
        assert found is not None, text
        gateway = found.group(1)
        assert gateway.startswith("https://")
        code, out, err = await run_cli(
            "scenario",
            "run",
            str(SCENARIO),
            "--json",
            "--target",
            gateway,
            "--tls-ca",
            pkis.ours.ca_cert,
            "--srn-listen",
            f"127.0.0.1:{srn_port}",
        )
        assert code == 0, out + err
        (line,) = out.strip().splitlines()
        assert json.loads(line)["passed"] is True, line
        # The operators' CLI over mTLS too.
        base = int(gateway.rsplit(":", 1)[1]) - 100
        code, _, err = await run_cli(
            "postbacks", "dead", "--target", f"127.0.0.1:{base + 5}", env=pkis.client.env(pkis.ours)
        )
        assert code == 0, err
    finally:
        await suite.stop()


async def test_the_server_name_can_differ_from_the_host_called(pkis: Pkis) -> None:
    """In a pod the certificate names the Service (``decider``), not
    127.0.0.1: an exec probe, or an operator through ``kubectl
    port-forward``, says which name to expect."""
    named = pkis.ours.issue("decider-only", loopback=False)
    config = SrnConfig(port=0, grace_period=1, **named.server_settings(pkis.ours))
    server = GrpcServer(SrnComponent(config), config)
    await server.start()
    try:
        env = pkis.client.env(pkis.ours)
        code, _, err = await run_cli("health", server.address, env=env)
        assert code == 1 and "UNAVAILABLE" in err  # 127.0.0.1 is not in the certificate
        code, out, err = await run_cli(
            "health", server.address, "--tls-server-name", "decider-only", env=env
        )
        assert (code, out.strip()) == (0, "SERVING"), err
    finally:
        await server.stop()
