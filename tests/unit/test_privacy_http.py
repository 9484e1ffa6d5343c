"""The gateway's erasure and access routes without a suite: who may call
them, how bad bodies are refused (400 naming the field, nothing forwarded)
and the JSON of their answers, over a fake PrivacyService."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from lookback.api.privacy.v1 import privacy_service_pb2 as privacy_pb
from lookback.api.store.v1 import touchpoint_store_service_pb2 as store_pb
from lookback.api.types.v1 import (
    app_pb2,
    decision_pb2,
    device_pb2,
    erasure_pb2,
    install_pb2,
    touch_pb2,
)
from lookback.core import auth
from lookback.core.convert import micros_to_ts
from lookback.core.errors import NotFound
from lookback.gateway.http import Gateway, erasure_json, parse_devices, records_json

ADMIN = auth.new_admin_key()
MINE, OTHER = "com.privacy.mine", "com.privacy.other"
GAID = "38400000-8cf0-11bd-b23e-10b96e40000d"
SHA1 = "a" * 40
KEYS = {
    (app, scope): auth.new_app_key(app, scope)
    for app in (MINE, OTHER)
    for scope in (auth.SDK, auth.S2S)
}


class Keys:
    """The apps' key hashes, as the decider's directory would give them."""

    async def app_keys(self, app_id: str, fresh: bool = False) -> Sequence[app_pb2.AppKey] | None:
        found = [
            app_pb2.AppKey(key_sha256=auth.hash_key(key), scope=scope)  # type: ignore[arg-type]
            for (app, scope), key in KEYS.items()
            if app == app_id
        ]
        return found or None


@dataclass
class FakePrivacy:
    """A PrivacyService stub: remembers each request, answers a fixed erasure."""

    calls: list[tuple[str, Any]] = field(default_factory=list)
    known: set[str] = field(default_factory=lambda: {"e1"})

    def erasure(self, app_id: str, all_apps: bool) -> erasure_pb2.Erasure:
        e = erasure_pb2.Erasure(
            erasure_id="e1",
            app_id=app_id,
            all_apps=all_apps,
            state=erasure_pb2.ERASURE_STATE_PENDING,
            devices=2,
            devices_done=1,
            runs=1,
        )
        e.erased.touches = 3
        e.create_time.FromJsonString("2026-06-01T12:00:00Z")
        e.start_time.FromJsonString("2026-06-01T12:00:01Z")
        return e

    async def CreateErasure(
        self, request: privacy_pb.CreateErasureRequest, **_: Any
    ) -> privacy_pb.CreateErasureResponse:
        self.calls.append(("CreateErasure", request))
        return privacy_pb.CreateErasureResponse(
            erasure=self.erasure(request.app_id, request.all_apps)
        )

    async def GetErasure(
        self, request: privacy_pb.GetErasureRequest, **_: Any
    ) -> privacy_pb.GetErasureResponse:
        self.calls.append(("GetErasure", request))
        if request.erasure_id not in self.known:
            raise NotFound("no such erasure request")
        return privacy_pb.GetErasureResponse(erasure=self.erasure(request.app_id, False))

    async def AccessDevices(
        self, request: privacy_pb.AccessDevicesRequest, **_: Any
    ) -> privacy_pb.AccessDevicesResponse:
        self.calls.append(("AccessDevices", request))
        records = store_pb.DeviceRecords()
        records.touches.add(app_id=request.app_id, click_id="c1", type=touch_pb2.TOUCH_TYPE_CLICK)
        records.installs.add(
            install=install_pb2.Install(app_id=request.app_id, install_id="i1"),
            decision=decision_pb2.Decision(install_id="i1", media_source="networka"),
        )
        return privacy_pb.AccessDevicesResponse(records=records)


@pytest.fixture
async def gateway() -> AsyncIterator[tuple[TestClient[Any, Any], FakePrivacy]]:
    fake = FakePrivacy()
    gw = Gateway(
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        {},
        auth.Authenticator([ADMIN], Keys()),
        None,  # type: ignore[arg-type]
        privacy=fake,  # type: ignore[arg-type]
    )
    async with TestClient(TestServer(gw.app())) as client:
        yield client, fake


async def call(
    client: TestClient[Any, Any], method: str, path: str, key: str, body: Any = None
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with client.request(method, path, json=body, headers=headers) as r:
        return r.status, await r.json()


DEVICES = {
    "devices": [{"gaid": GAID}, {"hashed": [{"type": "idfa", "algorithm": "sha1", "value": SHA1}]}]
}


async def test_an_erasure_is_created_for_the_path_app_and_answered_202(
    gateway: tuple[TestClient[Any, Any], FakePrivacy],
) -> None:
    client, fake = gateway
    status, body = await call(
        client, "POST", f"/v1/apps/{MINE}/erasures", KEYS[MINE, auth.S2S], DEVICES
    )
    assert status == 202, body
    assert body == {
        "erasure_id": "e1",
        "app_id": MINE,
        "all_apps": False,
        "state": "pending",
        "devices": 2,
        "devices_done": 1,
        "erased": {"touches": 3, "installs": 0, "decisions": 0, "events": 0, "postbacks": 0},
        "create_time": "2026-06-01T12:00:00Z",
        "start_time": "2026-06-01T12:00:01Z",
        "complete_time": None,
        "runs": 1,
    }
    ((name, request),) = fake.calls
    assert name == "CreateErasure"
    assert isinstance(request, privacy_pb.CreateErasureRequest)
    assert (request.app_id, request.all_apps) == (MINE, False)
    assert request.devices[0].gaid == GAID
    hashed = request.devices[1].hashed[0]
    assert (hashed.type, hashed.algorithm, hashed.value) == (
        device_pb2.DEVICE_ID_TYPE_IDFA,
        device_pb2.HASH_ALGORITHM_SHA1,
        SHA1,
    )


async def test_erasures_of_every_app_and_reading_them_back(
    gateway: tuple[TestClient[Any, Any], FakePrivacy],
) -> None:
    client, fake = gateway
    status, body = await call(client, "POST", "/v1/erasures", ADMIN, DEVICES)
    assert status == 202 and body["all_apps"] is True and body["app_id"] == ""
    status, body = await call(client, "GET", "/v1/erasures/e1", ADMIN)
    assert status == 200 and body["erasure_id"] == "e1"
    status, body = await call(client, "GET", f"/v1/apps/{MINE}/erasures/e1", KEYS[MINE, auth.S2S])
    assert status == 200 and body["app_id"] == MINE
    status, body = await call(client, "GET", f"/v1/apps/{MINE}/erasures/nope", ADMIN)
    assert status == 404 and body["error"]["code"] == "NOT_FOUND"
    requests = [(r.app_id, getattr(r, "all_apps", None)) for _, r in fake.calls]
    assert requests == [("", True), ("", None), (MINE, None), (MINE, None)]


async def test_access_answers_every_kind_of_record(
    gateway: tuple[TestClient[Any, Any], FakePrivacy],
) -> None:
    client, fake = gateway
    path = f"/v1/apps/{MINE}/devices:access"
    status, body = await call(
        client, "POST", path, KEYS[MINE, auth.S2S], {"devices": [{"gaid": GAID}]}
    )
    assert status == 200, body
    assert set(body) == {"touches", "installs", "decisions", "events"}
    assert body["touches"] == [{"app_id": MINE, "click_id": "c1", "type": "click"}]
    assert body["installs"][0]["decision"]["media_source"] == "networka"
    assert body["decisions"] == body["events"] == []
    ((_, request),) = fake.calls
    assert isinstance(request, privacy_pb.AccessDevicesRequest)
    assert request.app_id == MINE and request.devices[0].gaid == GAID


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", f"/v1/apps/{MINE}/erasures", DEVICES),
        ("GET", f"/v1/apps/{MINE}/erasures/e1", None),
        ("POST", f"/v1/apps/{MINE}/devices:access", DEVICES),
    ],
)
async def test_app_routes_need_the_apps_own_s2s_key(
    gateway: tuple[TestClient[Any, Any], FakePrivacy], method: str, path: str, body: Any
) -> None:
    client, fake = gateway
    assert (await call(client, method, path, "", body))[0] == 401
    assert (await call(client, method, path, "nonsense", body))[0] == 401
    for key in (KEYS[MINE, auth.SDK], KEYS[OTHER, auth.S2S], KEYS[OTHER, auth.SDK]):
        status, answer = await call(client, method, path, key, body)
        assert status == 403 and answer["error"]["code"] == "PERMISSION_DENIED"
    assert fake.calls == []  # nothing refused reached the decider
    for key in (KEYS[MINE, auth.S2S], ADMIN):
        assert (await call(client, method, path, key, body))[0] in (200, 202)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [("POST", "/v1/erasures", DEVICES), ("GET", "/v1/erasures/e1", None)],
)
async def test_every_app_routes_need_an_admin_key(
    gateway: tuple[TestClient[Any, Any], FakePrivacy], method: str, path: str, body: Any
) -> None:
    client, fake = gateway
    assert (await call(client, method, path, "", body))[0] == 401
    for key in KEYS.values():
        assert (await call(client, method, path, key, body))[0] == 403
    assert fake.calls == []
    assert (await call(client, method, path, ADMIN, body))[0] in (200, 202)


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"devices": [{"gaid": "zzz"}]}, {"devices[0].gaid"}),
        ({"devices": [{"gaid": GAID}, {"gaid": 42}]}, {"devices[1].gaid"}),
        (
            {"devices": [{"gaid": GAID}, {"idfa": "x"}, {"imei": "1"}]},
            {"devices[1].idfa", "devices[2].imei"},
        ),
        (
            {"devices": [{"hashed": [{"type": "gaid", "algorithm": "sha1", "value": "abc"}]}]},
            {"devices[0].hashed[0].value"},
        ),
        (
            {"devices": [{"hashed": [{"type": "gaid", "algorithm": "sha256", "value": SHA1}]}]},
            {"devices[0].hashed[0].algorithm"},
        ),
        (
            {"devices": [{"hashed": [{"algorithm": "md5", "value": "b" * 32}]}]},
            {"devices[0].hashed[0].type"},
        ),
        ({"devices": [{"colour": "blue"}]}, {"devices[0].colour"}),
        (
            {"devices": [{"gaid": 42, "hashed": [{"type": "gaid"}, {"type": "cookie"}]}]},
            {"devices[0].gaid", "devices[0].hashed[1].type"},
        ),
        ({"devices": [{"hashed": {"type": "gaid"}}]}, {"devices[0].hashed"}),
        (
            {
                "devices": [
                    {"hashed": [{"type": "gaid", "algorithm": "md5", "value": "d" * 32}] * 21}
                ]
            },
            {"devices[0].hashed"},
        ),
        ({"devices": [{}]}, {"devices[0]"}),
        ({"devices": ["38400000-8cf0-11bd-b23e-10b96e40000d"]}, {"devices[0]"}),
        ({"devices": []}, {"devices"}),
        ({"devices": {"gaid": GAID}}, {"devices"}),
        ({}, {"devices"}),
        ({"devices": [{"gaid": GAID}], "all_apps": True}, {"all_apps"}),
        ([{"gaid": GAID}], {"body"}),
    ],
)
@pytest.mark.parametrize(
    "path", [f"/v1/apps/{MINE}/erasures", "/v1/erasures", f"/v1/apps/{MINE}/devices:access"]
)
async def test_bad_bodies_are_400s_naming_the_field(
    gateway: tuple[TestClient[Any, Any], FakePrivacy], path: str, body: Any, fields: set[str]
) -> None:
    client, fake = gateway
    status, answer = await call(client, "POST", path, ADMIN, body)
    assert status == 400, answer
    assert answer["error"]["code"] == "INVALID_ARGUMENT"
    assert {v["field"] for v in answer["error"]["field_violations"]} == fields
    assert fake.calls == []


async def test_a_body_that_is_not_json_names_body(
    gateway: tuple[TestClient[Any, Any], FakePrivacy],
) -> None:
    client, _ = gateway
    async with client.post(
        f"/v1/apps/{MINE}/erasures",
        data=b"{not json",
        headers={"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"},
    ) as r:
        assert r.status == 400
        assert (await r.json())["error"]["field_violations"][0]["field"] == "body"


def test_device_counts_are_limited() -> None:
    many = {"devices": [{"gaid": GAID}] * 101}
    assert len(parse_devices(many, 101)) == 101
    with pytest.raises(Exception, match="devices") as info:
        parse_devices(many, 100)
    assert [v.field for v in info.value.violations] == ["devices"]  # type: ignore[attr-defined]


def test_answers_json() -> None:
    e = erasure_pb2.Erasure(erasure_id="e2", state=erasure_pb2.ERASURE_STATE_COMPLETED)
    e.complete_time.CopyFrom(micros_to_ts(1_780_000_000_000_000))
    shown = erasure_json(e)
    assert shown["state"] == "completed"
    assert shown["complete_time"] == "2026-05-28T20:26:40Z"
    assert shown["create_time"] is None
    assert records_json(store_pb.DeviceRecords()) == {
        "touches": [],
        "installs": [],
        "decisions": [],
        "events": [],
    }
