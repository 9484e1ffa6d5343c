"""The gateway's HTTP API: SDK calls and attribution links, to gRPC.

Routes (JSON in and out; see docs/http-api.md):

- ``GET /v1/click``, ``GET /v1/impression``: attribution links. Query
  parameters name the touch; the device's IP and user agent default to the
  request's. With ``redirect=<url>`` the answer is a 302 to it. The touch is
  stored (durably) before the answer; touches arriving together are written
  together.
- ``POST /v1/touches``: a batch of touches (``{"touches": [...]}``).
- ``POST /v1/installs``, ``POST /v1/opens``, ``POST /v1/events``: SDK
  reports, validated here and decided by the decider; installs and opens
  are answered with the decision.
- ``POST /v1/apps``, ``GET /v1/apps/{app_id}``, ``PATCH /v1/apps/{app_id}``,
  ``POST /v1/apps/{app_id}/keys:rotate``: apps and their keys (admin).
- ``GET /healthz`` (alive), ``GET /readyz`` (the decider and the store
  reachable and serving).

Every route has a rule (:mod:`lookback.core.auth`): links and health are
public; reports need the app's ``sdk`` or ``s2s`` key, touch batches its
``s2s`` key, apps an admin key (``Authorization: Bearer <key>``). 401 for
no key or an unknown one, 403 for a key used beyond its app or scope; in
both cases before anything is stored.

Every error is a JSON body ``{"error": {"code", "message",
"field_violations": [{"field", "description"}]}}`` with a matching status:
400 for bad input, naming the field.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiohttp import web
from google.protobuf import field_mask_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from yarl import URL

from lookback.api.apps.v1 import app_settings_service_pb2 as apps_pb
from lookback.api.apps.v1 import app_settings_service_pb2_grpc as apps_grpc
from lookback.api.ingestion.v1 import ingestion_service_pb2 as ingestion_pb
from lookback.api.types.v1 import app_pb2, install_pb2, touch_pb2
from lookback.core import auth, intake, jsonapi, telemetry
from lookback.core.errors import Code, FieldViolation, InvalidArgument, LookbackError
from lookback.decider.client import AppDirectory, DeciderClient
from lookback.gateway.links import touch_from_link
from lookback.touchpoint_store.client import TouchWriter

log = logging.getLogger("lookback.gateway")

HTTP_STATUS = {
    Code.INVALID_ARGUMENT: 400,
    Code.FAILED_PRECONDITION: 400,
    Code.OUT_OF_RANGE: 400,
    Code.UNAUTHENTICATED: 401,
    Code.PERMISSION_DENIED: 403,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.ABORTED: 409,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.UNAVAILABLE: 503,
    Code.DEADLINE_EXCEEDED: 504,
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def _traced(request: web.Request, handler: Handler) -> web.StreamResponse:
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


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """aiohttp's own refusals (no such route, wrong method, body too large)
    in the JSON error shape every other answer has."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "NOT_FOUND", 405: "UNIMPLEMENTED", 413: "INVALID_ARGUMENT"}.get(
            exc.status, "INVALID_ARGUMENT" if exc.status < 500 else "INTERNAL"
        )
        violations = [FieldViolation("body", exc.reason)] if exc.status == 413 else []
        return error_response(exc.status, code, exc.reason, violations)


MAX_VIOLATIONS = 100
"""Field violations an error answer lists at most (its message says how many
there were): a body of 10,000 bad elements gets a short answer."""
MAX_MESSAGE = 500


def error_response(
    status: int, code: str, message: str, violations: Sequence[FieldViolation] = ()
) -> web.Response:
    shown = violations[:MAX_VIOLATIONS]
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 1] + "\u2026"
    if len(violations) > len(shown):
        message += f" ({len(violations)} violations, first {len(shown)} listed)"
    body: dict[str, Any] = {"code": code, "message": message}
    if shown:
        body["field_violations"] = [{"field": v.field, "description": v.description} for v in shown]
    return web.json_response({"error": body}, status=status)


def _stripped(app: app_pb2.App) -> dict[str, Any]:
    """An app as HTTP answers show it: never its key hashes."""
    shown = app_pb2.App()
    shown.CopyFrom(app)
    del shown.keys[:]
    return jsonapi.dump(shown)


def _retry_after(exc: LookbackError) -> dict[str, str]:
    seconds = getattr(exc, "retry_after", None)
    return {"Retry-After": str(max(1, int(seconds + 0.999)))} if seconds is not None else {}


PRINCIPAL = web.RequestKey("principal", auth.Principal)
"""Who made the request (set by :func:`_guard`)."""
RULE = web.RequestKey("rule", auth.Rule)
"""The rule of the request's route."""


def allow(request: web.Request, message: Any) -> None:
    """Raise unless the request's caller may act on ``message`` (the apps it names)."""
    auth.authorize(request[PRINCIPAL], request[RULE], message)


def _guard(
    authenticator: auth.Authenticator, rule: auth.Rule, prefix: str, handler: Handler
) -> Handler:
    """Authenticate the caller for ``rule``, then run ``handler``; turn every
    failure into a JSON error; field names lose ``prefix``. The rule stays on
    the handler (``.rule``), so tests can enumerate every route's rule."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            key = auth.bearer(request.headers.get("Authorization"))
            if key or rule.kind != "public":
                principal = await authenticator.authenticate(key)
                if rule.kind != "app":
                    auth.authorize(principal, rule)  # app rules: once the body names the app
            else:
                principal = auth.ANONYMOUS
            request[PRINCIPAL] = principal
            request[RULE] = rule
            return await handler(request)
        except LookbackError as exc:
            violations = [
                FieldViolation(v.field.removeprefix(prefix), v.description)
                for v in getattr(exc, "violations", ())
            ]
            status = HTTP_STATUS.get(exc.code, 500)
            answer = error_response(status, exc.code.name, exc.message, violations)
            answer.headers.update(_retry_after(exc))
            return answer
        except web.HTTPException:
            raise
        except Exception:
            log.exception("%s %s failed", request.method, request.path)
            return error_response(500, "INTERNAL", "internal error")

    wrapped.rule = rule  # type: ignore[attr-defined]
    return wrapped


async def _json_body(request: web.Request) -> Any:
    charset = request.charset or "utf-8"
    raw = await request.read()
    try:
        text = raw.decode(charset)
    except LookupError as exc:
        unknown = FieldViolation("body", f"has an unknown charset {charset[:40]!r}")
        raise InvalidArgument([unknown]) from exc
    except UnicodeDecodeError as exc:
        raise InvalidArgument([FieldViolation("body", f"is not valid JSON: {exc}")]) from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidArgument([FieldViolation("body", f"is not valid JSON: {exc}")]) from exc
    except ValueError as exc:  # an integer of more digits than Python converts
        raise InvalidArgument([FieldViolation("body", "has a number that is too long")]) from exc
    except RecursionError as exc:
        raise InvalidArgument([FieldViolation("body", "is nested too deeply")]) from exc


def _check_redirect(url: str) -> None:
    """A redirect must be an absolute http(s) URL the answer can carry."""
    try:
        parsed = URL(url)
        ok = parsed.scheme in ("http", "https") and bool(parsed.host) and parsed.port is not None
    except (ValueError, TypeError):
        ok = False
    if not ok:
        raise InvalidArgument([FieldViolation("redirect", "must be an absolute http(s) URL")])


def _client_ip(request: web.Request) -> str:
    forwarded = request.headers.get("X-Forwarded-For", "")
    if forwarded:
        return forwarded.split(",")[0].strip()
    return request.remote or ""


class Gateway:
    """The HTTP handlers, over the decider's and the store's stubs."""

    def __init__(
        self,
        decider: DeciderClient,
        apps: apps_grpc.AppSettingsServiceStub,
        touches: TouchWriter,
        health: dict[str, health_pb2_grpc.HealthStub],
        authenticator: auth.Authenticator,
        directory: AppDirectory,
    ) -> None:
        self.decider = decider
        self.apps = apps
        self.auth = authenticator
        self.directory = directory
        self.touches = touches
        self.health = health
        self.draining = False

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1024 * 1024, middlewares=[_traced, _json_errors])
        r = app.router
        a = self.auth
        public, admin = auth.PUBLIC, auth.ADMIN_ONLY
        sdk = auth.app_rule(auth.SDK, lambda m: (m.app_id,))
        s2s_touches = auth.app_rule(auth.S2S, lambda m: (t.app_id for t in m.touches))
        r.add_get("/v1/click", _guard(a, public, "touch.", self.click))
        r.add_get("/v1/impression", _guard(a, public, "touch.", self.impression))
        r.add_post("/v1/touches", _guard(a, s2s_touches, "", self.record_touches))
        r.add_post("/v1/installs", _guard(a, sdk, "install.", self.install))
        r.add_post("/v1/opens", _guard(a, sdk, "open.", self.open))
        r.add_post("/v1/events", _guard(a, sdk, "event.", self.event))
        r.add_post("/v1/apps", _guard(a, admin, "app.", self.create_app))
        r.add_get("/v1/apps/{app_id}", _guard(a, admin, "app.", self.get_app))
        r.add_patch("/v1/apps/{app_id}", _guard(a, admin, "app.", self.update_app))
        r.add_post("/v1/apps/{app_id}/keys:rotate", _guard(a, admin, "", self.rotate_key))
        r.add_get("/healthz", _guard(a, public, "", self.healthz))
        r.add_get("/readyz", _guard(a, public, "", self.readyz))
        return app

    async def _link(self, request: web.Request, touch_type: int) -> web.StreamResponse:
        q = request.query
        touch = touch_from_link(
            q, touch_type, _client_ip(request), request.headers.get("User-Agent", "")
        )
        intake.prepare_touch(touch)
        redirect = q.get("redirect", "")
        if redirect:
            _check_redirect(redirect)  # before storing: a refused link stores nothing
        await self.touches.put(touch)
        if redirect:
            raise web.HTTPFound(redirect)
        return web.json_response({"click_id": touch.click_id})

    async def click(self, request: web.Request) -> web.StreamResponse:
        return await self._link(request, touch_pb2.TOUCH_TYPE_CLICK)

    async def impression(self, request: web.Request) -> web.StreamResponse:
        return await self._link(request, touch_pb2.TOUCH_TYPE_IMPRESSION)

    async def record_touches(self, request: web.Request) -> web.StreamResponse:
        req = jsonapi.parse(ingestion_pb.RecordTouchesRequest, await _json_body(request))
        allow(request, req)
        intake.prepare_touches(req.touches)
        await self.touches.put_many(req.touches)
        return web.json_response({"click_ids": [t.click_id for t in req.touches]})

    async def install(self, request: web.Request) -> web.StreamResponse:
        install = jsonapi.parse(install_pb2.Install, await _json_body(request))
        allow(request, install)
        if not install.ip:
            install.ip = _client_ip(request)
        if not install.user_agent:
            install.user_agent = request.headers.get("User-Agent", "")
        decision = await self.decider.install(install)
        return web.json_response({"decision": jsonapi.dump(decision, defaults=True)})

    async def open(self, request: web.Request) -> web.StreamResponse:
        open_ = jsonapi.parse(install_pb2.Open, await _json_body(request))
        allow(request, open_)
        decision = await self.decider.open(open_)
        return web.json_response({"decision": jsonapi.dump(decision, defaults=True)})

    async def event(self, request: web.Request) -> web.StreamResponse:
        event = jsonapi.parse(install_pb2.InAppEvent, await _json_body(request))
        allow(request, event)
        attribution = await self.decider.event(event)
        return web.json_response({"attribution": jsonapi.dump(attribution, defaults=True)})

    async def create_app(self, request: web.Request) -> web.StreamResponse:
        app = jsonapi.parse(app_pb2.App, await _json_body(request))
        response = await self.apps.CreateApp(apps_pb.CreateAppRequest(app=app))
        keys = {"sdk": response.keys.sdk, "s2s": response.keys.s2s}
        return web.json_response({"app": _stripped(response.app), "keys": keys}, status=201)

    async def get_app(self, request: web.Request) -> web.StreamResponse:
        response = await self.apps.GetApp(
            apps_pb.GetAppRequest(app_id=request.match_info["app_id"])
        )
        return web.json_response({"app": _stripped(response.app)})

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
        self.directory.forget(app.app_id)
        return web.json_response({"app": _stripped(response.app)})

    async def rotate_key(self, request: web.Request) -> web.StreamResponse:
        req = jsonapi.parse(apps_pb.RotateAppKeyRequest, await _json_body(request))
        req.app_id = request.match_info["app_id"]
        response = await self.apps.RotateAppKey(req)
        self.directory.forget(req.app_id)
        return web.json_response(
            {
                "key": response.key,
                "scope": auth.SCOPE_NAMES.get(req.scope, ""),
                "previous_keys_expire_time": jsonapi.dump(response)["previous_keys_expire_time"],
            }
        )

    async def healthz(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"status": "alive"})

    async def readyz(self, request: web.Request) -> web.StreamResponse:
        if self.draining:
            return web.json_response({"status": "draining"}, status=503)
        for name, stub in self.health.items():
            try:
                answer = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
            except LookbackError as exc:
                return web.json_response({"status": f"{name}: {exc.code.name}"}, status=503)
            if answer.status != health_pb2.HealthCheckResponse.SERVING:
                return web.json_response({"status": f"{name} not serving"}, status=503)
        return web.json_response({"status": "ready"})
