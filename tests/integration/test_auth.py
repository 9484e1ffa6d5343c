"""Every endpoint checks who is calling (docs/security.md).

The routes and methods are enumerated from the gateway's router and the
services' descriptors themselves, so a new endpoint without a rule fails
here. Each is called without a key, with unknown keys, with another app's
key and with a key of the wrong scope; the refusals are 401/UNAUTHENTICATED
and 403/PERMISSION_DENIED, and the right key gets past the check.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import FieldDescriptor, ServiceDescriptor
from google.protobuf.message import Message
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from lookback.api.apps.v1 import app_settings_service_pb2 as apps_pb
from lookback.api.apps.v1 import app_settings_service_pb2_grpc as apps_grpc
from lookback.api.decider.v1 import decider_service_pb2 as decider_pb
from lookback.api.explain.v1 import explain_service_pb2 as explain_pb
from lookback.api.ingestion.v1 import ingestion_service_pb2 as ingestion_pb
from lookback.api.ingestion.v1 import ingestion_service_pb2_grpc as ingestion_grpc
from lookback.api.links.v1 import link_service_pb2 as links_pb
from lookback.api.outcomes.v1 import outcomes_service_pb2 as outcomes_pb
from lookback.api.postback.v1 import postback_dispatcher_service_pb2 as postback_pb
from lookback.api.privacy.v1 import privacy_service_pb2 as privacy_pb
from lookback.api.reports.v1 import reports_service_pb2 as reports_pb
from lookback.api.srn.v1 import srn_adapter_service_pb2 as srn_pb
from lookback.api.store.v1 import touchpoint_store_service_pb2 as store_pb
from lookback.api.store.v1 import touchpoint_store_service_pb2_grpc as store_grpc
from lookback.api.types.v1 import app_pb2
from lookback.cli.main import _specs
from lookback.core import auth
from lookback.core.server import HEALTH_RULES
from lookback.gateway.http import Gateway
from lookback.testing import builders
from lookback.testing.keys import admin_channel, admin_headers, bearer, key_channel
from lookback.testing.suite import SuiteAddresses

# Which address serves which services (every service of every component).
SERVICES: dict[str, list[ServiceDescriptor]] = {
    "store": [store_pb.DESCRIPTOR.services_by_name["TouchpointStoreService"]],
    "decider": [
        decider_pb.DESCRIPTOR.services_by_name["DeciderService"],
        apps_pb.DESCRIPTOR.services_by_name["AppSettingsService"],
        outcomes_pb.DESCRIPTOR.services_by_name["OutcomesService"],
        explain_pb.DESCRIPTOR.services_by_name["ExplainService"],
        privacy_pb.DESCRIPTOR.services_by_name["PrivacyService"],
        links_pb.DESCRIPTOR.services_by_name["LinkService"],
    ],
    "ingestion": [ingestion_pb.DESCRIPTOR.services_by_name["IngestionService"]],
    "srn": [srn_pb.DESCRIPTOR.services_by_name["SrnAdapterService"]],
    "postback": [
        postback_pb.DESCRIPTOR.services_by_name["PostbackDispatcherService"],
        reports_pb.DESCRIPTOR.services_by_name["ReportsService"],
    ],
}
COMPONENTS = {
    "store": "touchpoint_store",
    "decider": "decider",
    "ingestion": "ingestion",
    "srn": "srn_adapter",
    "postback": "postback",
}
DENIED = {grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED}
KNOWS_APP_KEYS = {"decider", "ingestion", "postback"}
"""The services with methods for app keys (the postback dispatcher serves the
reports); the internal ones (store, SRN adapter) know admin keys only, so an
app key is as unknown to them as any other (401, not 403)."""


@dataclass(frozen=True)
class Keys:
    app_id: str
    sdk: str
    s2s: str


async def _new_app(apps: apps_grpc.AppSettingsServiceStub) -> Keys:
    app_id = builders.new_app_id("com.auth")
    created = await apps.CreateApp(apps_pb.CreateAppRequest(app=builders.app(app_id)))
    return Keys(app_id, created.keys.sdk, created.keys.s2s)


@pytest.fixture(scope="module")
async def two_apps(suite: SuiteAddresses) -> AsyncIterator[tuple[Keys, Keys]]:
    async with admin_channel(suite.decider) as channel:
        stub = apps_grpc.AppSettingsServiceStub(channel)
        yield await _new_app(stub), await _new_app(stub)


def _unknown_keys(app_id: str) -> list[str]:
    """Keys no one was given: shaped like an app key of a real app, an admin
    key, and junk."""
    return [f"lb-s2s-{uuid.uuid4().hex * 2}-{app_id}", auth.new_admin_key(), "nonsense"]


def _name_app(message: Message, app_id: str, depth: int = 0) -> None:
    """Set every ``app_id`` in ``message`` (and one element of each repeated
    message field) to ``app_id``, so an app rule sees the request as that app's."""
    if depth > 3:
        return
    for field in message.DESCRIPTOR.fields:
        if field.name == "app_id" and field.type == FieldDescriptor.TYPE_STRING:
            message.app_id = app_id
        elif (
            field.type == FieldDescriptor.TYPE_MESSAGE
            and not field.message_type.GetOptions().map_entry
        ):
            if field.is_repeated:
                _name_app(getattr(message, field.name).add(), app_id, depth + 1)
            elif field.message_type.full_name.startswith("lookback."):
                _name_app(getattr(message, field.name), app_id, depth + 1)


def _methods() -> Iterator[tuple[str, str, Any, auth.Rule]]:
    """(address attribute, full method path, request, rule) for every method."""
    for attr, services in SERVICES.items():
        rules = _specs()[COMPONENTS[attr]].component.auth_rules  # type: ignore[attr-defined]
        for service in services:
            for method in service.methods:
                path = f"/{service.full_name}/{method.name}"
                assert path in rules, f"{path} has no rule"
                request = message_factory.GetMessageClass(method.input_type)()
                yield attr, path, request, rules[path]


def test_every_method_of_every_component_has_a_rule() -> None:
    for attr, services in SERVICES.items():
        rules = _specs()[COMPONENTS[attr]].component.auth_rules  # type: ignore[attr-defined]
        paths = {f"/{s.full_name}/{m.name}" for s in services for m in s.methods}
        assert set(rules) == paths, attr
    assert set(HEALTH_RULES.values()) == {auth.PUBLIC}


async def _call(address: str, key: str | None, path: str, request: Any) -> grpc.StatusCode:
    channel = key_channel(address, key) if key else grpc.aio.insecure_channel(address)
    async with channel:
        call = channel.unary_unary(
            path,
            request_serializer=type(request).SerializeToString,
            response_deserializer=lambda b: b,
        )
        try:
            await call(request, timeout=10)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK


async def test_every_grpc_method_refuses_callers_without_the_right_key(
    suite: SuiteAddresses, two_apps: tuple[Keys, Keys]
) -> None:
    mine, other = two_apps
    checked = 0
    for attr, path, request, rule in _methods():
        address = getattr(suite, attr)
        if rule.kind == "app":
            _name_app(request, mine.app_id)
        assert await _call(address, None, path, request) == grpc.StatusCode.UNAUTHENTICATED, path
        for key in _unknown_keys(mine.app_id):
            code = await _call(address, key, path, request)
            assert code == grpc.StatusCode.UNAUTHENTICATED, (path, key[:8])
        beyond = (
            grpc.StatusCode.PERMISSION_DENIED
            if attr in KNOWS_APP_KEYS
            else grpc.StatusCode.UNAUTHENTICATED
        )
        # Another app's key, of either scope: refused, whatever the rule.
        for key in (other.sdk, other.s2s):
            assert await _call(address, key, path, request) == beyond, path
        if rule.kind == "admin":
            for key in (mine.sdk, mine.s2s):
                assert await _call(address, key, path, request) == beyond, path
            right = [suite.admin_key]
        else:
            assert rule.kind == "app", path
            right = [suite.admin_key, mine.s2s]
            if rule.scope == auth.S2S:
                code = await _call(address, mine.sdk, path, request)
                assert code == grpc.StatusCode.PERMISSION_DENIED, path
            else:
                right.append(mine.sdk)
        for key in right:
            assert await _call(address, key, path, request) not in DENIED, (path, key[:8])
        checked += 1
    assert checked >= 25


async def test_reflection_needs_an_admin_key_and_health_needs_none(
    suite: SuiteAddresses, two_apps: tuple[Keys, Keys]
) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    request = reflection_pb2.ServerReflectionRequest(list_services="")

    async def reflect(channel: grpc.aio.Channel) -> grpc.StatusCode:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        try:
            async for _ in stub.ServerReflectionInfo(iter([request]), timeout=5):
                pass
        except grpc.aio.AioRpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK

    for attr in SERVICES:
        address = getattr(suite, attr)
        async with grpc.aio.insecure_channel(address) as channel:
            assert await reflect(channel) == grpc.StatusCode.UNAUTHENTICATED
            health = health_pb2_grpc.HealthStub(channel)
            answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        async with key_channel(address, two_apps[0].s2s) as channel:
            assert await reflect(channel) in DENIED
        async with admin_channel(address) as channel:
            assert await reflect(channel) == grpc.StatusCode.OK


# HTTP ---------------------------------------------------------------------


def _bodies(app_id: str) -> dict[tuple[str, str], Any]:
    """A well-formed body per route that takes one (naming ``app_id``)."""
    return {
        ("POST", "/v1/touches"): {
            "touches": [
                {
                    "app_id": app_id,
                    "type": "click",
                    "media_source": "networka",
                    "engaged_at": builders.iso_ago(60),
                    "device": {"gaid": builders.new_gaid()},
                }
            ]
        },
        ("POST", "/v1/installs"): {
            "app_id": app_id,
            "install_id": uuid.uuid4().hex,
            "device": {"gaid": builders.new_gaid()},
            "installed_at": builders.iso_ago(1),
        },
        ("POST", "/v1/opens"): {
            "app_id": app_id,
            "install_id": uuid.uuid4().hex,
            "opened_at": builders.iso_ago(1),
        },
        ("POST", "/v1/events"): {
            "app_id": app_id,
            "install_id": uuid.uuid4().hex,
            "event_id": uuid.uuid4().hex,
            "name": "purchase",
            "occurred_at": builders.iso_ago(1),
        },
        ("POST", "/v1/apps"): {"app_id": builders.new_app_id("com.auth"), "platform": "android"},
        ("PATCH", "/v1/apps/{app_id}"): {"settings": {"click_lookback": "3d"}},
        ("POST", "/v1/apps/{app_id}/keys:rotate"): {"scope": "sdk", "grace_period": "1h"},
        ("POST", "/v1/apps/{app_id}/installs:simulate"): {"settings": {"click_lookback": "3d"}},
        ("POST", "/v1/apps/{app_id}/erasures"): {"devices": [{"gaid": builders.new_gaid()}]},
        ("POST", "/v1/erasures"): {"devices": [{"gaid": builders.new_gaid()}]},
        ("POST", "/v1/apps/{app_id}/devices:access"): {"devices": [{"gaid": builders.new_gaid()}]},
        ("POST", "/v1/apps/{app_id}/links"): {"media_source": "networka", "campaign": "c"},
        ("PATCH", "/v1/apps/{app_id}/links/{code}"): {"campaign": "b"},
        ("POST", "/v1/apps/{app_id}/links/{code}:disable"): {},
    }


def _routes() -> list[tuple[str, str, auth.Rule]]:
    """Every route of the gateway's router, with the rule its handler carries."""
    gateway = Gateway(None, None, None, {}, auth.Authenticator([]), None)  # type: ignore[arg-type]
    out = []
    for route in gateway.app().router.routes():
        if route.method == "HEAD":
            continue
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        rule = getattr(route.handler, "rule", None)
        assert isinstance(rule, auth.Rule), f"{route.method} {path} has no rule"
        out.append((route.method, str(path), rule))
    return out


async def _http(
    http: aiohttp.ClientSession, base: str, method: str, path: str, key: str | None, body: Any
) -> int:
    headers = bearer(key) if key else {}
    params = {"app_id": "x", "media_source": "networka"} if method == "GET" else None
    async with http.request(
        method, base + path, json=body, headers=headers, params=params, allow_redirects=False
    ) as r:
        if r.status in (401, 403):
            error = (await r.json())["error"]
            assert error["code"] in ("UNAUTHENTICATED", "PERMISSION_DENIED")
            assert "exist" not in error["message"]
        return r.status


async def test_every_http_route_refuses_callers_without_the_right_key(
    suite: SuiteAddresses, two_apps: tuple[Keys, Keys]
) -> None:
    mine, other = two_apps
    routes = _routes()
    assert len(routes) >= 12
    async with aiohttp.ClientSession() as http:
        base = suite.gateway_url
        for method, template, rule in routes:
            path = re.sub(r"\{[a-z_]+\}", "x", template.replace("{app_id}", mine.app_id))
            body = _bodies(mine.app_id).get((method, template)) if method != "GET" else None
            if method != "GET":
                assert body is not None, f"no test body for {method} {template}"
            if rule.kind == "public":
                assert await _http(http, base, method, path, None, body) < 500, template
                assert await _http(http, base, method, path, "nonsense", body) == 401
                continue
            assert await _http(http, base, method, path, None, body) == 401, template
            for key in _unknown_keys(mine.app_id):
                assert await _http(http, base, method, path, key, body) == 401, template
            for key in (other.sdk, other.s2s):
                assert await _http(http, base, method, path, key, body) == 403, template
            if rule.kind == "admin":
                for key in (mine.sdk, mine.s2s):
                    assert await _http(http, base, method, path, key, body) == 403, template
                right = [suite.admin_key]
            else:
                right = [mine.s2s, suite.admin_key]
                if rule.scope == auth.S2S:
                    assert await _http(http, base, method, path, mine.sdk, body) == 403
                else:
                    right.insert(0, mine.sdk)
            for key in right:
                fresh = _bodies(mine.app_id).get((method, template))
                status = await _http(http, base, method, path, key, fresh)
                assert status not in (401, 403), (template, status)


async def test_refused_requests_store_nothing(
    suite: SuiteAddresses, two_apps: tuple[Keys, Keys]
) -> None:
    """A touch batch and an install refused for their key leave no trace; the
    same requests with the right key are stored."""
    mine, other = two_apps
    gaid = builders.new_gaid()
    touch = builders.click(mine.app_id, gaid, ago=60, click_id=f"c-{uuid.uuid4().hex}")
    install = builders.install(mine.app_id, "refused-1", gaid=gaid)
    for key in (other.s2s, mine.sdk, "nonsense"):
        async with key_channel(suite.ingestion, key) as channel:
            stub = ingestion_grpc.IngestionServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.RecordTouches(ingestion_pb.RecordTouchesRequest(touches=[touch]))
            assert refused.value.code() in DENIED
    for key in (other.sdk, "nonsense"):
        async with key_channel(suite.ingestion, key) as channel:
            stub = ingestion_grpc.IngestionServiceStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.ReportInstall(ingestion_pb.ReportInstallRequest(install=install))
            assert refused.value.code() in DENIED
    async with admin_channel(suite.store) as channel:
        store = store_grpc.TouchpointStoreServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await store.GetInstallRecord(
                store_pb.GetInstallRecordRequest(app_id=mine.app_id, install_id="refused-1")
            )
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        assert not await _touches_of(store, mine.app_id, touch.click_id)
    async with key_channel(suite.ingestion, mine.s2s) as channel:
        stub = ingestion_grpc.IngestionServiceStub(channel)
        await stub.RecordTouches(ingestion_pb.RecordTouchesRequest(touches=[touch]))
    async with key_channel(suite.ingestion, mine.sdk) as channel:
        stub = ingestion_grpc.IngestionServiceStub(channel)
        answer = await stub.ReportInstall(ingestion_pb.ReportInstallRequest(install=install))
        assert answer.decision.media_source == "networka"
    async with admin_channel(suite.store) as channel:
        store = store_grpc.TouchpointStoreServiceStub(channel)
        assert len(await _touches_of(store, mine.app_id, touch.click_id)) == 1


async def _touches_of(
    store: store_grpc.TouchpointStoreServiceStub, app_id: str, click_id: str
) -> list[Any]:
    found = await store.FindTouches(
        store_pb.FindTouchesRequest(app_id=app_id, click_ids=[click_id])
    )
    return list(found.touches)


async def test_rotated_key_works_during_the_grace_period_then_never_again(
    suite: SuiteAddresses,
) -> None:
    async with admin_channel(suite.decider) as channel:
        apps = apps_grpc.AppSettingsServiceStub(channel)
        keys = await _new_app(apps)
        rotated = await apps.RotateAppKey(
            apps_pb.RotateAppKeyRequest(
                app_id=keys.app_id, scope=app_pb2.KEY_SCOPE_SDK, grace_period={"seconds": 3600}
            )
        )
    new_key = rotated.key
    assert new_key != keys.sdk
    assert auth.app_of(new_key) == keys.app_id

    async def install_with(key: str) -> int:
        body = _bodies(keys.app_id)[("POST", "/v1/installs")]
        async with aiohttp.ClientSession() as http:
            return await _http(http, suite.gateway_url, "POST", "/v1/installs", key, body)

    # Both work: the new one at once, the old one within its grace period.
    assert await install_with(new_key) == 200
    assert await install_with(keys.sdk) == 200
    # A rotation with no grace (through the gateway, which forgets its
    # cached copy at once; other gateways within their cache's 5 s): the
    # keys before it stop at once, on HTTP as on gRPC.
    async with (
        aiohttp.ClientSession(headers=admin_headers()) as http,
        http.post(
            f"{suite.gateway_url}/v1/apps/{keys.app_id}/keys:rotate",
            json={"scope": "sdk", "grace_period": "0"},
        ) as r,
    ):
        assert r.status == 200, await r.text()
        again = await r.json()
    assert again["scope"] == "sdk"
    assert await install_with(again["key"]) == 200
    for old in (keys.sdk, new_key):
        assert await install_with(old) == 401
        code = await _call(
            suite.ingestion,
            old,
            "/lookback.ingestion.v1.IngestionService/ReportInstall",
            ingestion_pb.ReportInstallRequest(
                install=builders.install(keys.app_id, gaid=builders.new_gaid())
            ),
        )
        assert code == grpc.StatusCode.UNAUTHENTICATED
    # The s2s key was not touched.
    assert await install_with(keys.s2s) == 200


async def test_app_answers_never_show_keys_or_their_hashes(suite: SuiteAddresses) -> None:
    async with aiohttp.ClientSession(headers=admin_headers()) as http:
        app_id = builders.new_app_id("com.auth")
        async with http.post(
            f"{suite.gateway_url}/v1/apps", json={"app_id": app_id, "platform": "ios"}
        ) as r:
            assert r.status == 201
            created = await r.json()
        assert set(created["keys"]) == {"sdk", "s2s"}
        assert "keys" not in created["app"]
        async with http.get(f"{suite.gateway_url}/v1/apps/{app_id}") as r:
            shown = await r.json()
        assert "keys" not in shown["app"]
        assert created["keys"]["sdk"] not in str(shown)
