"""Messages for tests and benchmarks: apps (created through the settings
API), touches and installs, fresh ids and times."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

from google.protobuf import timestamp_pb2

from lookback.api.apps.v1 import app_settings_service_pb2 as apps_pb
from lookback.api.apps.v1 import app_settings_service_pb2_grpc as apps_grpc
from lookback.api.types.v1 import app_pb2, install_pb2, touch_pb2


def new_gaid() -> str:
    """A fresh Google advertising id."""
    return str(uuid.uuid4())


def new_app_id(prefix: str = "com.test") -> str:
    """A fresh app id under ``prefix``: tests sharing a suite never meet."""
    return f"{prefix}.{uuid.uuid4().hex[:12]}"


def iso_ago(seconds: float) -> str:
    """The time ``seconds`` ago, as the HTTP API writes it (RFC 3339, UTC)."""
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int((time.time() - seconds) * 1e9))
    return ts.ToJsonString()


def app(
    app_id: str,
    *,
    platform: int = app_pb2.PLATFORM_ANDROID,
    postbacks: Mapping[str, str] | None = None,
    **settings: Any,
) -> app_pb2.App:
    """An app (Android by default) with these ``AppSettings`` fields, and an
    install postback URL template per partner in ``postbacks``."""
    built = app_pb2.App(
        app_id=app_id,
        platform=platform,  # type: ignore[arg-type]
        settings=app_pb2.AppSettings(**settings),
    )
    for partner, url in (postbacks or {}).items():
        built.settings.postbacks[partner].install.url = url
    return built


async def create_app(
    apps: apps_grpc.AppSettingsServiceStub, app_id: str = "", **options: Any
) -> str:
    """Create :func:`app` (``app_id``, or a fresh one) through the settings
    API; its app id."""
    app_id = app_id or new_app_id()
    await apps.CreateApp(apps_pb.CreateAppRequest(app=app(app_id, **options)))
    return app_id


def click(
    app_id: str, gaid: str, *, ago: float = 3600, media_source: str = "networka", **fields: Any
) -> touch_pb2.Touch:
    """A click on ``gaid``'s device ``ago`` seconds ago (other ``Touch`` fields
    in ``fields``)."""
    touch = touch_pb2.Touch(
        app_id=app_id, type=touch_pb2.TOUCH_TYPE_CLICK, media_source=media_source, **fields
    )
    touch.device.gaid = gaid
    touch.engaged_at.FromNanoseconds(int((time.time() - ago) * 1e9))
    return touch


def install(
    app_id: str, install_id: str = "", *, gaid: str = "", **fields: Any
) -> install_pb2.Install:
    """An install (``install_id``, or a fresh one) on ``gaid``'s device."""
    built = install_pb2.Install(
        app_id=app_id, install_id=install_id or f"i-{uuid.uuid4().hex[:8]}", **fields
    )
    if gaid:
        built.device.gaid = gaid
    return built


async def keyed_app(decider: str, prefix: str = "com.test") -> tuple[str, apps_pb.AppKeys]:
    """A fresh app (under ``prefix``) created with the admin key at the
    decider's address; its id and its keys."""
    from lookback.testing.keys import admin_channel

    app_id = new_app_id(prefix)
    async with admin_channel(decider) as channel:
        created = await apps_grpc.AppSettingsServiceStub(channel).CreateApp(
            apps_pb.CreateAppRequest(app=app(app_id))
        )
    return app_id, created.keys


async def http_app(
    gateway_url: str, prefix: str, postback_sink: str = ""
) -> tuple[str, dict[str, str]]:
    """An android app created through the gateway with the admin key: its id
    and its keys (``sdk``, ``s2s``). With ``postback_sink`` (a receiver's
    URL), networka's install postbacks go there."""
    import aiohttp  # the HTTP client is a test dependency, not the library's

    from lookback.testing.keys import admin_headers

    app_id = new_app_id(prefix)
    settings: dict[str, Any] = {}
    if postback_sink:
        url = f"{postback_sink}/networka?c={{click_id}}"
        settings["postbacks"] = {"networka": {"install": {"url": url}}}
    async with aiohttp.ClientSession(headers=admin_headers()) as http:
        body = {"app_id": app_id, "platform": "android", "settings": settings}
        async with http.post(f"{gateway_url}/v1/apps", json=body) as r:
            assert r.status == 201, await r.text()
            keys: dict[str, str] = (await r.json())["keys"]
    return app_id, keys
