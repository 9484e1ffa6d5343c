"""The HTTP gateway: SDK calls and attribution links, translated to gRPC.

Routes (JSON in and out; see docs/http-api.md):

- ``GET /v1/click``, ``GET /v1/impression``: attribution links. Query
  parameters name the touch; the device's IP and user agent default to the
  request's. With ``redirect=<url>`` the answer is a 302 to it.
- ``POST /v1/touches``: a batch of touches (``{"touches": [...]}``).
- ``POST /v1/installs``, ``POST /v1/opens``, ``POST /v1/events``: SDK
  reports; the body is the install, open or event; installs and opens are
  answered with the decision.
- ``POST /v1/apps``, ``GET /v1/apps/{app_id}``, ``PATCH /v1/apps/{app_id}``:
  app settings (for internal tools; put them behind your own auth).
- ``GET /healthz`` (alive), ``GET /readyz`` (ingestion reachable and serving).

Every error is a JSON body ``{"error": {"code", "message",
"field_violations": [{"field", "description"}]}}`` with a matching status:
400 for bad input, naming the field.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from aiohttp import web
from google.protobuf import field_mask_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lookback.api.apps.v1 import app_settings_service_pb2 as apps_pb
from lookback.api.apps.v1 import app_settings_service_pb2_grpc as apps_grpc
from lookback.api.ingestion.v1 import ingestion_service_pb2 as ingestion_pb
from lookback.api.ingestion.v1 import ingestion_service_pb2_grpc as ingestion_grpc
from lookback.api.types.v1 import app_pb2, device_pb2, install_pb2, touch_pb2
from lookback.core import clients, jsonapi, telemetry
from lookback.core.errors import (
    FieldViolation,
    InvalidArgument,
    LookbackError,
    RemoteError,
    status_from_rpc_error,
)
from lookback.core.server import install_signal_handlers
from lookback.domain.durations import parse_duration
from lookback.domain.model import DEVICE_ID_TYPES

log = logging.getLogger("lookback.gateway")

_HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}

_LINK_PARAMS = {
    "app_id",
    "media_source",
    "campaign",
    "adset",
    "ad",
    "site_id",
    "click_id",
    "ip",
    "user_agent",
    "engaged_at",
    "is_retargeting",
    "click_lookback",
    "redirect",
    *DEVICE_ID_TYPES,
}
_HASHED = {f"{alg}_{t}": (t, alg) for t in DEVICE_ID_TYPES for alg in ("sha1", "md5")}


@dataclass(frozen=True)
class GatewayConfig:
    """Settings of the HTTP gateway."""

    http_host: str = "127.0.0.1"
    """Address the HTTP server listens on."""
    http_port: int = 8080
    """HTTP port; 0 picks a free one."""
    ingestion_address: str = "127.0.0.1:7403"
    """The ingestion service."""
    decider_address: str = "127.0.0.1:7402"
    """The decider (serves the app settings API)."""
    log_level: str = "INFO"
    """Python log level name."""
    grace_period: float = 10.0
    """Seconds in-flight requests get to finish after SIGTERM."""
    otlp_endpoint: str = ""
    """OpenTelemetry collector (OTLP/gRPC, ``http://collector:4317``) for traces,
    metrics and logs; empty turns telemetry export off."""
    trace_sample_ratio: float = 1.0
    """Share of traces recorded and exported (0 to 1) when an OTLP endpoint is
    set; a caller's sampling decision (``traceparent``) is followed."""


@web.middleware
async def _traced(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """A server span per request (continuing a ``traceparent`` header), while tracing is on."""
    if not telemetry.enabled():
        return await handler(request)
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else request.path
    with telemetry.http_server_span(request.method, route, request.headers) as span:
        response = await handler(request)
        span.set_attribute("http.response.status_code", response.status)
        if response.status >= 500:
            telemetry.record_error(span, str(response.status), response.reason or "")
        return response


def _error(status: int, code: str, message: str, violations: list[FieldViolation]) -> web.Response:
    body: dict[str, Any] = {"code": code, "message": message}
    if violations:
        body["field_violations"] = [
            {"field": v.field, "description": v.description} for v in violations
        ]
    return web.json_response({"error": body}, status=status)


def _strip(violations: list[FieldViolation], prefix: str) -> list[FieldViolation]:
    return [FieldViolation(v.field.removeprefix(prefix), v.description) for v in violations]


def _remote_response(err: RemoteError, prefix: str) -> web.Response:
    return _error(
        _HTTP_STATUS.get(err.code, 500), err.code.name, err.message, _strip(err.violations, prefix)
    )


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _guard(prefix: str, handler: Handler) -> Handler:
    """Turn every failure into a JSON error; field names lose ``prefix``."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except InvalidArgument as exc:
            return _error(400, "INVALID_ARGUMENT", exc.message, _strip(exc.violations, prefix))
        except LookbackError as exc:
            remote = RemoteError(exc.code, exc.message, [])
            return _remote_response(remote, prefix)
        except grpc.aio.AioRpcError as exc:
            return _remote_response(status_from_rpc_error(exc), prefix)
        except web.HTTPException:
            raise
        except Exception:
            log.exception("%s %s failed", request.method, request.path)
            return _error(500, "INTERNAL", "internal error", [])

    return wrapped


async def _json_body(request: web.Request) -> Any:
    try:
        return await request.json(loads=json.loads)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidArgument([FieldViolation("body", f"is not valid JSON: {exc}")]) from exc


def _client_ip(request: web.Request) -> str:
    forwarded = request.headers.get("X-Forwarded-For", "")
    if forwarded:
        return forwarded.split(",")[0].strip()
    return request.remote or ""


def touch_from_link(request: web.Request, touch_type: int) -> tuple[touch_pb2.Touch, str]:
    """A touch from an attribution link's query string; also the redirect URL."""
    q = request.query
    violations: list[FieldViolation] = []
    unknown = sorted(k for k in q if k not in _LINK_PARAMS and k not in _HASHED)
    violations += [FieldViolation(k, "is not a known parameter") for k in unknown]
    touch = touch_pb2.Touch(
        type=touch_type,  # type: ignore[arg-type]
        app_id=q.get("app_id", ""),
        media_source=q.get("media_source", ""),
        campaign=q.get("campaign", ""),
        adset=q.get("adset", ""),
        ad=q.get("ad", ""),
        site_id=q.get("site_id", ""),
        click_id=q.get("click_id", ""),
        ip=q.get("ip") or _client_ip(request),
        user_agent=q.get("user_agent") or request.headers.get("User-Agent") or "",
        is_retargeting=q.get("is_retargeting", "").lower() in ("1", "true", "yes"),
    )
    for id_type in DEVICE_ID_TYPES:
        if q.get(id_type):
            setattr(touch.device, id_type, q[id_type])
    for name, (id_type, alg) in _HASHED.items():
        if q.get(name):
            touch.device.hashed.append(
                device_pb2.HashedIdentifier(
                    type=getattr(device_pb2, f"DEVICE_ID_TYPE_{id_type.upper()}"),
                    algorithm=getattr(device_pb2, f"HASH_ALGORITHM_{alg.upper()}"),
                    value=q[name].lower(),
                )
            )
    if q.get("engaged_at"):
        try:
            touch.engaged_at.FromJsonString(q["engaged_at"])
        except ValueError:
            violations.append(FieldViolation("engaged_at", "must be an RFC 3339 time"))
    if q.get("click_lookback"):
        try:
            micros = parse_duration(q["click_lookback"])
            touch.click_lookback.FromMicroseconds(micros)
        except ValueError as exc:
            violations.append(FieldViolation("click_lookback", str(exc)))
    if violations:
        raise InvalidArgument(violations)
    return touch, q.get("redirect", "")


class Gateway:
    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self._ingestion_ch = clients.channel(config.ingestion_address)
        self._decider_ch = clients.channel(config.decider_address)
        self.ingestion = clients.stub(ingestion_grpc.IngestionServiceStub, self._ingestion_ch, 10.0)
        self.apps = clients.stub(apps_grpc.AppSettingsServiceStub, self._decider_ch)
        self.health = health_pb2_grpc.HealthStub(self._ingestion_ch)
        self.draining = False

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1024 * 1024, middlewares=[_traced])
        r = app.router
        r.add_get("/v1/click", _guard("touch.", self.click))
        r.add_get("/v1/impression", _guard("touch.", self.impression))
        r.add_post("/v1/touches", _guard("", self.touches))
        r.add_post("/v1/installs", _guard("install.", self.install))
        r.add_post("/v1/opens", _guard("open.", self.open))
        r.add_post("/v1/events", _guard("event.", self.event))
        r.add_post("/v1/apps", _guard("app.", self.create_app))
        r.add_get("/v1/apps/{app_id}", _guard("app.", self.get_app))
        r.add_patch("/v1/apps/{app_id}", _guard("app.", self.update_app))
        r.add_get("/healthz", self.healthz)
        r.add_get("/readyz", self.readyz)
        return app

    async def close(self) -> None:
        await self._ingestion_ch.close()
        await self._decider_ch.close()

    async def _link(self, request: web.Request, touch_type: int) -> web.StreamResponse:
        touch, redirect = touch_from_link(request, touch_type)
        response = await self.ingestion.RecordTouch(ingestion_pb.RecordTouchRequest(touch=touch))
        if redirect:
            raise web.HTTPFound(redirect)
        return web.json_response({"click_id": response.click_id})

    async def click(self, request: web.Request) -> web.StreamResponse:
        return await self._link(request, touch_pb2.TOUCH_TYPE_CLICK)

    async def impression(self, request: web.Request) -> web.StreamResponse:
        return await self._link(request, touch_pb2.TOUCH_TYPE_IMPRESSION)

    async def touches(self, request: web.Request) -> web.StreamResponse:
        req = jsonapi.parse(ingestion_pb.RecordTouchesRequest, await _json_body(request))
        response = await self.ingestion.RecordTouches(req)
        return web.json_response({"click_ids": list(response.click_ids)})

    async def install(self, request: web.Request) -> web.StreamResponse:
        install = jsonapi.parse(install_pb2.Install, await _json_body(request))
        if not install.ip:
            install.ip = _client_ip(request)
        if not install.user_agent:
            install.user_agent = request.headers.get("User-Agent", "")
        response = await self.ingestion.ReportInstall(
            ingestion_pb.ReportInstallRequest(install=install)
        )
        return web.json_response({"decision": jsonapi.dump(response.decision, defaults=True)})

    async def open(self, request: web.Request) -> web.StreamResponse:
        open_ = jsonapi.parse(install_pb2.Open, await _json_body(request))
        response = await self.ingestion.ReportOpen(ingestion_pb.ReportOpenRequest(open=open_))
        return web.json_response({"decision": jsonapi.dump(response.decision, defaults=True)})

    async def event(self, request: web.Request) -> web.StreamResponse:
        event = jsonapi.parse(install_pb2.InAppEvent, await _json_body(request))
        response = await self.ingestion.RecordEvent(ingestion_pb.RecordEventRequest(event=event))
        return web.json_response({"attribution": jsonapi.dump(response.attribution, defaults=True)})

    async def create_app(self, request: web.Request) -> web.StreamResponse:
        app = jsonapi.parse(app_pb2.App, await _json_body(request))
        response = await self.apps.CreateApp(apps_pb.CreateAppRequest(app=app))
        return web.json_response({"app": jsonapi.dump(response.app)}, status=201)

    async def get_app(self, request: web.Request) -> web.StreamResponse:
        response = await self.apps.GetApp(
            apps_pb.GetAppRequest(app_id=request.match_info["app_id"])
        )
        return web.json_response({"app": jsonapi.dump(response.app)})

    async def update_app(self, request: web.Request) -> web.StreamResponse:
        body = await _json_body(request)
        app = jsonapi.parse(app_pb2.App, body)
        app.app_id = request.match_info["app_id"]
        paths = [k for k in body if k == "platform"]
        paths += [f"settings.{k}" for k in (body.get("settings") or {})]
        mask = field_mask_pb2.FieldMask(paths=paths)
        response = await self.apps.UpdateApp(
            apps_pb.UpdateAppRequest(
                app=app, update_mask=mask, expected_version=int(body.get("version") or 0)
            )
        )
        return web.json_response({"app": jsonapi.dump(response.app)})

    async def healthz(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"status": "alive"})

    async def readyz(self, request: web.Request) -> web.StreamResponse:
        if self.draining:
            return web.json_response({"status": "draining"}, status=503)
        try:
            answer = await self.health.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
        except grpc.aio.AioRpcError as exc:
            return web.json_response({"status": f"ingestion: {exc.code().name}"}, status=503)
        if answer.status != health_pb2.HealthCheckResponse.SERVING:
            return web.json_response({"status": "ingestion not serving"}, status=503)
        return web.json_response({"status": "ready"})


class GatewayServer:
    """Runs the gateway's HTTP server; stops gracefully."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.gateway: Gateway | None = None
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> int:
        self.gateway = Gateway(self.config)
        self.runner = web.AppRunner(
            self.gateway.app(), access_log=None, shutdown_timeout=self.config.grace_period
        )
        await self.runner.setup()
        site = web.TCPSite(self.runner, self.config.http_host, self.config.http_port)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        log.info("gateway serving on http://%s:%d", self.config.http_host, self.port)
        return self.port

    async def stop(self) -> None:
        if self.gateway is not None:
            self.gateway.draining = True
        if self.runner is not None:
            await self.runner.cleanup()
        if self.gateway is not None:
            await self.gateway.close()


async def serve(config: GatewayConfig) -> None:
    telemetry.setup("gateway", config.otlp_endpoint, config.trace_sample_ratio)
    server = GatewayServer(config)
    port = await server.start()
    stop = asyncio.Event()
    install_signal_handlers(stop.set)  # before the line a supervisor waits for
    print(f"gateway listening on http://{config.http_host}:{port}", flush=True)
    await stop.wait()
    await server.stop()
    telemetry.shutdown()
