"""What leaves for self-reporting networks, and what their bad answers may
leave in the logs (issue 14): each network gets only the identifiers it is
configured for (by default the advertising ids, never an IMEI, Android id
or IDFV); the decider never sends an IDFA the user did not authorise; a
malformed answer echoing the device's identifiers logs none of them."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from aiohttp import web

from lookback.api.srn.v1 import srn_adapter_service_pb2 as pb
from lookback.api.srn.v1 import srn_adapter_service_pb2_grpc as pb_grpc
from lookback.api.types.v1 import app_pb2, install_pb2
from lookback.core import convert
from lookback.core.clock import now_micros
from lookback.core.config import ConfigError
from lookback.core.convert import micros_to_dur, micros_to_ts
from lookback.core.server import GrpcServer
from lookback.decider.engine import srn_view
from lookback.domain import matching
from lookback.srn_adapter.component import SrnComponent
from lookback.srn_adapter.config import SrnConfig
from lookback.testing.http import LOCAL_CIDRS, start_http
from lookback.testing.keys import ADMIN_KEY, admin_channel
from lookback.testing.srn import FakeSrn

IDS = {
    "gaid": "38400000-8cf0-11bd-b23e-10b96e4ef00d",
    "idfa": "6d92078a-8246-4ba4-ae5b-76104861e7dc",
    "idfv": "a1b2c3d4-0000-4000-8000-0123456789ab",
    "oaid": "5f6e7d8c-1111-4222-8333-444455556666",
    "android_id": "9774d56d682e549c",
    "imei": "490154203237518",
    "fire_id": "7a8b9c0d-2222-4333-8444-555566667777",
}


async def _adapter(
    url: str, identifiers: dict[str, str] | None = None
) -> AsyncIterator[pb_grpc.SrnAdapterServiceStub]:
    config = SrnConfig(
        admin_keys=ADMIN_KEY,
        port=0,
        srn_endpoints={"*": url},
        srn_identifiers=identifiers or {},
        outbound_allow_cidrs=LOCAL_CIDRS,
    )
    server = GrpcServer(SrnComponent(config), config)
    await server.start()
    try:
        async with admin_channel(server.address) as channel:
            yield pb_grpc.SrnAdapterServiceStub(channel)
    finally:
        await server.stop(0)


def _query(*networks: str) -> pb.QueryClaimsRequest:
    request = pb.QueryClaimsRequest(
        app_id=f"app-{uuid.uuid4().hex[:8]}", networks=list(networks), budget=micros_to_dur(500_000)
    )
    for id_type, value in IDS.items():
        setattr(request.device, id_type, value)
    request.installed_at.FromDatetime(datetime.now(UTC))
    return request


async def test_each_network_gets_only_the_identifiers_it_is_configured_for(
    fake_srn: tuple[FakeSrn, str],
) -> None:
    fake, url = fake_srn
    async for stub in _adapter(url, {"handset": "gaid+imei"}):
        fake.queries.clear()
        await stub.QueryClaims(_query("anynet", "handset"))
        sent = {q["network"]: set(q) - {"network", "app_id", "installed_at"} for q in fake.queries}
    assert sent == {"anynet": {"gaid", "idfa", "oaid", "fire_id"}, "handset": {"gaid", "imei"}}


def test_an_unknown_identifier_type_in_the_settings_is_refused() -> None:
    with pytest.raises(ConfigError, match="imsi"):
        SrnComponent(SrnConfig(srn_identifiers={"x": "gaid+imsi"}))


def test_the_decider_never_sends_an_idfa_the_user_did_not_authorise() -> None:
    app = app_pb2.App(app_id="com.example.ios", platform=app_pb2.PLATFORM_IOS)
    settings = convert.settings(app)
    install = install_pb2.Install(
        app_id=app.app_id,
        install_id="i1",
        installed_at=micros_to_ts(now_micros()),
        os_version="17.4",
        att_status=install_pb2.ATT_STATUS_DENIED,
    )
    install.device.idfa, install.device.idfv = IDS["idfa"], IDS["idfv"]
    denied = srn_view(install, matching.matching_for_install(convert.install(install), settings))
    assert denied.device.idfa == "" and denied.device.idfv == IDS["idfv"]
    install.att_status = install_pb2.ATT_STATUS_AUTHORIZED
    allowed = srn_view(install, matching.matching_for_install(convert.install(install), settings))
    assert allowed.device.idfa == IDS["idfa"]


async def test_a_malformed_answer_echoing_identifiers_logs_none_of_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def echo(request: web.Request) -> web.Response:
        # Every identifier it was sent, back in fields that fail to parse.
        claims = [{"engaged_at": v, "touch_type": v} for v in request.query.values()]
        return web.json_response({"claims": claims})

    app = web.Application()
    app.router.add_get("/v1/claims", echo)
    runner, url = await start_http(app, "127.0.0.1", 0)
    try:
        with caplog.at_level(logging.DEBUG):
            async for stub in _adapter(url, {"*": "gaid+idfa+idfv+oaid+android_id+imei+fire_id"}):
                answer = await stub.QueryClaims(_query("echoer"))
        assert list(answer.unanswered) == ["echoer"]
    finally:
        await runner.cleanup()
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "echoer" in logged and "malformed answer" in logged
    for value in IDS.values():
        assert value not in logged and value.upper() not in logged
