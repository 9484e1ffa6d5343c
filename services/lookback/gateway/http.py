"""The gateway's HTTP API: SDK calls and attribution links, to gRPC.

Routes (JSON in and out; see docs/http-api.md):

- ``GET /v1/click``, ``GET /v1/impression``: attribution links. Query
  parameters name the touch; the device's IP and user agent default to the
  request's. With ``redirect=<url>`` the answer is a 302 to it (an allowed
  target only: :mod:`lookback.gateway.redirects`). Links of an unknown app
  are refused (404); a partner may require signed links
  (:func:`lookback.gateway.links.check_link_signature`, 401 otherwise). The
  touch is stored (durably) before the answer; touches arriving together
  are written together.
- ``POST /v1/touches``: a batch of touches (``{"touches": [...]}``).
- ``POST /v1/installs``, ``POST /v1/opens``, ``POST /v1/events``: SDK
  reports, validated here and decided by the decider; installs and opens
  are answered with the decision.
- ``POST /v1/apps``, ``GET /v1/apps/{app_id}``, ``PATCH /v1/apps/{app_id}``,
  ``POST /v1/apps/{app_id}/keys:rotate``: apps and their keys (admin).
- ``POST /v1/apps/{app_id}/erasures``, ``GET /v1/apps/{app_id}/erasures/{id}``,
  ``POST /v1/apps/{app_id}/devices:access``: data-subject erasure and access
  (the app's ``s2s`` key or admin); ``POST /v1/erasures``, ``GET
  /v1/erasures/{id}``: erasure from every app (admin). Over the decider's
  PrivacyService.
- ``GET /healthz`` (alive), ``GET /readyz`` (the decider and the store
  reachable and serving).

Every route has a rule (:mod:`lookback.core.auth`): links and health are
public; reports need the app's ``sdk`` or ``s2s`` key, touch batches its
``s2s`` key, apps an admin key (``Authorization: Bearer <key>``). 401 for
no key or an unknown one, 403 for a key used beyond its app or scope; in
both cases before anything is stored.

The client's IP is the TCP peer's, or from ``X-Forwarded-For`` through
trusted proxies only (:mod:`lookback.gateway.clientip`); an ``ip`` the
request names itself is honoured only from ``s2s`` or admin keys and signed
links. Token buckets per client IP (links) and per key (reports and touch
batches) answer 429 with ``Retry-After`` over their limit
(:mod:`lookback.gateway.ratelimit`). See docs/security.md.

Every error is a JSON body ``{"error": {"code", "message",
"field_violations": [{"field", "description"}]}}`` with a matching status:
400 for bad input, naming the field.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from google.protobuf import field_mask_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from yarl import URL

from lookback.api.apps.v1 import app_settings_service_pb2 as apps_pb
from lookback.api.apps.v1 import app_settings_service_pb2_grpc as apps_grpc
from lookback.api.explain.v1 import explain_service_pb2 as explain_pb
from lookback.api.explain.v1 import explain_service_pb2_grpc as explain_grpc
from lookback.api.ingestion.v1 import ingestion_service_pb2 as ingestion_pb
from lookback.api.links.v1 import link_service_pb2 as links_pb
from lookback.api.links.v1 import link_service_pb2_grpc as links_grpc
from lookback.api.outcomes.v1 import outcomes_service_pb2 as outcomes_pb
from lookback.api.outcomes.v1 import outcomes_service_pb2_grpc as outcomes_grpc
from lookback.api.privacy.v1 import privacy_service_pb2 as privacy_pb
from lookback.api.privacy.v1 import privacy_service_pb2_grpc as privacy_grpc
from lookback.api.reports.v1 import reports_service_pb2 as reports_pb
from lookback.api.reports.v1 import reports_service_pb2_grpc as reports_grpc
from lookback.api.store.v1 import touchpoint_store_service_pb2 as store_pb
from lookback.api.types.v1 import app_pb2, device_pb2, erasure_pb2, install_pb2, link_pb2, touch_pb2
from lookback.core import auth, intake, jsonapi, redact, telemetry, wire
from lookback.core.errors import (
    Code,
    FieldViolation,
    InvalidArgument,
    LookbackError,
    NotFound,
    Violations,
)
from lookback.core.validation import MAX_HASHED_IDS, check_device
from lookback.decider.client import AppDirectory, DeciderClient
from lookback.domain import useragent
from lookback.gateway import linkroutes
from lookback.gateway.clientip import client_ip
from lookback.gateway.config import GatewayConfig
from lookback.gateway.linkroutes import LinkDirectory
from lookback.gateway.links import LINK_FIXED, check_link_signature, touch_from_link
from lookback.gateway.ratelimit import RateLimiter
from lookback.gateway.redirects import check_redirect_target
from lookback.touchpoint_store.client import TouchWriter
from lookback.touchpoint_store.logreader import app_ids

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


TRACE_HEADERS = ("traceparent", "tracestate")


def _traced(authenticator: auth.Authenticator) -> Any:
    """A server span per request while tracing is on. A caller's trace
    context (``traceparent``, with its sampling decision) is followed only
    from a keyed caller: an anonymous one (a browser on a link) cannot force
    us to record its traces."""

    @web.middleware
    async def traced(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not telemetry.enabled():
            return await handler(request)
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else request.path
        headers: Mapping[str, str] = {}
        if "traceparent" in request.headers:
            key = auth.bearer(request.headers.get("Authorization"))
            try:
                if key:  # kept for the route's own check: one authentication a request
                    request[PRINCIPAL] = await authenticator.authenticate(key)
            except LookbackError:
                pass  # the route answers 401 itself
            if PRINCIPAL in request and request[PRINCIPAL].keyed:
                headers = {h: request.headers[h] for h in TRACE_HEADERS if h in request.headers}
        with telemetry.http_server_span(request.method, route, headers) as span:
            response = await handler(request)
            span.set_attribute("http.response.status_code", response.status)
            if response.status >= 500:
                telemetry.record_error(span, str(response.status), response.reason or "")
            return response

    return traced


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
CLIENT_IP = web.RequestKey("client_ip", str)
"""The client's address, once a route has taken it (for the access log)."""


STATIC = Path(__file__).parent / "static"
DASHBOARD_ASSETS = {"dashboard.css": "text/css", "dashboard.js": "text/javascript"}
_PAGE_HEADERS = {
    # Our own files only, nothing inline, never framed, no referrer.
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


def _static(name: str) -> web.Response:
    kind = DASHBOARD_ASSETS.get(name, "text/html")
    return web.Response(
        body=(STATIC / name).read_bytes(),
        content_type=kind,
        charset="utf-8",
        headers=_PAGE_HEADERS,
    )


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
                # Authenticated already when tracing looked at the caller.
                principal = request.get(PRINCIPAL) or await authenticator.authenticate(key)
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


class RedactedAccessLog(AbstractAccessLogger):
    """The access log, at DEBUG (``lookback.gateway.access``): method, path
    without its query (link parameters name devices), status, time, and the
    client's network (/24, /48), never its address. aiohttp's own format
    would print both in full."""

    def log(self, request: BaseRequest, response: web.StreamResponse, time: float) -> None:
        # The client's address as the route took it (trusted proxies only), else the peer.
        client = request.get(CLIENT_IP) or request.remote
        self.logger.debug(
            "%s %s %d %.1fms from %s",
            request.method,
            request.path,
            response.status,
            time * 1000,
            redact.ip(client or ""),
        )

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.DEBUG)


def _explained_json(data: Any) -> Any:
    """An answer with explanations, without the ``reason`` of candidates
    that were not rejected (it would read ``unspecified``)."""
    if isinstance(data, dict):
        if "verdict" in data and data.get("verdict") != "rejected":
            data.pop("reason", None)
        for value in data.values():
            _explained_json(value)
    elif isinstance(data, list):
        for value in data:
            _explained_json(value)
    return data


def _may_name_ip(principal: auth.Principal, app_id: str) -> bool:
    """Whether the caller may say which IP a report or link comes from: the
    app's backend (``s2s``) or an admin."""
    return principal.admin or (principal.scope == auth.S2S and principal.app_id == app_id)


MAX_ERASURE_DEVICES = 10_000
"""Devices one erasure request may name (PrivacyService.CreateErasure)."""
MAX_ACCESS_DEVICES = 100
"""Devices one access request may name (PrivacyService.AccessDevices)."""
ERASURE_COUNTS = ("touches", "installs", "decisions", "events", "postbacks")
"""What an erasure counts, in the order its answer lists them."""
DEVICE_RECORDS = ("touches", "installs", "decisions", "events")
"""The kinds of record an access request answers."""


def parse_devices(body: Any, limit: int) -> list[device_pb2.DeviceIdentifiers]:
    """The devices of an erasure or access body (``{"devices": [...]}``):
    each parsed and validated as an install's ``device`` is (raw
    identifiers, ``hashed`` ones), every bad field named by its place
    (``devices[2].gaid``, ``devices[0].hashed[1].value``); 1 to ``limit``
    devices, each naming at least one identifier."""
    if not isinstance(body, dict):
        raise InvalidArgument([FieldViolation("body", "must be a JSON object")])
    v = Violations()
    for key in body:
        if not key:
            v.add("body", "has a field without a name")
        elif key != "devices":
            v.add(key, "is not a known field")
    items = body.get("devices")
    if not isinstance(items, list) or not items:
        v.add("devices", "is required (a non-empty list of devices)")
        v.raise_if_any()
    assert isinstance(items, list)
    if len(items) > limit:
        v.add("devices", f"at most {limit} devices per request")
        v.raise_if_any()
    devices = []
    for i, item in enumerate(items):
        path = f"devices[{i}]"
        device = _parse_device(v, item, path)
        if device is None:
            continue
        if device.ByteSize() == 0:
            v.add(path, "must name at least one identifier (raw or hashed)")
        check_device(v, device, path)
        devices.append(device)
    v.raise_if_any()
    return devices


def _parse_device(v: Violations, item: Any, path: str) -> device_pb2.DeviceIdentifiers | None:
    """One device, its hashed identifiers parsed one by one so that an error
    names its place (``hashed[1].algorithm``); None (and violations) if bad."""
    hashed = item.get("hashed") if isinstance(item, dict) else None
    if not isinstance(hashed, list):
        hashed = None  # not a list (or none): the device's parse names it
    elif len(hashed) > MAX_HASHED_IDS:
        v.add(f"{path}.hashed", f"at most {MAX_HASHED_IDS} hashed identifiers")
        return None
    else:
        item = {k: x for k, x in item.items() if k != "hashed"}
    before = len(v.items)
    device = device_pb2.DeviceIdentifiers()
    try:
        device = jsonapi.parse(device_pb2.DeviceIdentifiers, item, prefix=f"{path}.")
    except InvalidArgument as exc:
        v.items += exc.violations
    for j, entry in enumerate(hashed or ()):
        try:
            one = jsonapi.parse(device_pb2.HashedIdentifier, entry, f"{path}.hashed[{j}].")
        except InvalidArgument as exc:
            v.items += exc.violations
        else:
            device.hashed.append(one)
    return device if len(v.items) == before else None


def _time_json(message: Any, name: str) -> str | None:
    return getattr(message, name).ToJsonString() if message.HasField(name) else None


def erasure_json(erasure: erasure_pb2.Erasure) -> dict[str, Any]:
    """An erasure request as the HTTP API (and ``lookback erase --json``)
    shows it: its state a lower-case word, its counts numbers, its times
    RFC 3339 (``null`` while unset: ``complete_time`` while pending)."""
    state = (
        erasure_pb2.ErasureState.Name(erasure.state)
        if erasure.state in erasure_pb2.ErasureState.values()
        else "ERASURE_STATE_UNSPECIFIED"
    )
    return {
        "erasure_id": erasure.erasure_id,
        "app_id": erasure.app_id,
        "all_apps": erasure.all_apps,
        "state": state.removeprefix("ERASURE_STATE_").lower(),
        "devices": erasure.devices,
        "devices_done": erasure.devices_done,
        "erased": {name: getattr(erasure.erased, name) for name in ERASURE_COUNTS},
        "create_time": _time_json(erasure, "create_time"),
        "start_time": _time_json(erasure, "start_time"),
        "complete_time": _time_json(erasure, "complete_time"),
        "runs": erasure.runs,
    }


def records_json(records: store_pb.DeviceRecords) -> dict[str, Any]:
    """A device's stored records as the HTTP API (and ``lookback access``)
    shows them: ``touches``, ``installs`` (each with its decision and
    explanation), ``decisions`` (of opens) and ``events``, each record in the
    gateway's JSON (as ``GET .../installs/{id}`` and ``:explain`` show them)."""
    return {
        name: [_explained_json(jsonapi.dump(r)) for r in getattr(records, name)]
        for name in DEVICE_RECORDS
    }


def _found(target: str) -> web.Response:
    """A ``302`` to ``target``, answered (not raised: no exception on the hot path)."""
    return web.Response(status=302, headers={"Location": target})


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
        config: GatewayConfig | None = None,
        outcomes: outcomes_grpc.OutcomesServiceStub | None = None,
        watch: tuple[Any, tuple[tuple[str, str], ...]] | None = None,
        reports: reports_grpc.ReportsServiceStub | None = None,
        explain: tuple[explain_grpc.ExplainServiceStub, Any] | None = None,
        privacy: privacy_grpc.PrivacyServiceStub | None = None,
        links: links_grpc.LinkServiceStub | None = None,
    ) -> None:
        self.config = config = config or GatewayConfig()
        self.link_limits = RateLimiter(
            config.link_rate_limit, config.link_rate_burst, what="link requests from this address"
        )
        self.sdk_limits = RateLimiter(
            config.sdk_rate_limit, config.sdk_rate_burst, what="requests with this key"
        )
        self.decider = decider
        self.apps = apps
        self.outcomes = outcomes
        self.reports = reports
        self.explain = explain
        """The explain stub (with a deadline) and the raw Simulate
        multicallable with the metadata (key) it presents."""
        self.privacy = privacy
        """The decider's PrivacyService (erasure and access)."""
        self.link_service = links
        """The decider's LinkService (creating and changing links)."""
        self.watch = watch
        """The raw WatchDecisions multicallable and the metadata (key) it presents."""
        self.auth = authenticator
        self.directory = directory
        self.touches = touches
        self.health = health
        self.draining = False
        store = touches.stub if touches is not None else None  # None: route listings only
        self.links = LinkDirectory(store, ttl=self.config.link_cache_ttl)
        self._well_known: dict[tuple[str, str], tuple[float, bytes]] = {}

    def app(self) -> web.Application:
        app = web.Application(
            client_max_size=1024 * 1024, middlewares=[_traced(self.auth), _json_errors]
        )
        r = app.router
        a = self.auth
        public, admin = auth.PUBLIC, auth.ADMIN_ONLY
        sdk = auth.app_rule(auth.SDK, lambda m: (m.app_id,))
        s2s_touches = auth.app_rule(auth.S2S, lambda m: (t.app_id for t in m.touches))
        r.add_get("/v1/click", _guard(a, public, "touch.", self.click))
        r.add_get("/v1/impression", _guard(a, public, "touch.", self.impression))
        r.add_get("/l/{code}", _guard(a, public, "", self.follow_link))
        r.add_get("/.well-known/apple-app-site-association", _guard(a, public, "", self.well_known))
        r.add_get("/.well-known/assetlinks.json", _guard(a, public, "", self.well_known))
        r.add_post("/v1/touches", _guard(a, s2s_touches, "", self.record_touches))
        r.add_post("/v1/installs", _guard(a, sdk, "install.", self.install))
        r.add_post("/v1/opens", _guard(a, sdk, "open.", self.open))
        r.add_post("/v1/events", _guard(a, sdk, "event.", self.event))
        r.add_post("/v1/apps", _guard(a, admin, "app.", self.create_app))
        r.add_get("/v1/apps/{app_id}", _guard(a, admin, "app.", self.get_app))
        r.add_patch("/v1/apps/{app_id}", _guard(a, admin, "app.", self.update_app))
        r.add_post("/v1/apps/{app_id}/keys:rotate", _guard(a, admin, "", self.rotate_key))
        own = auth.app_rule(auth.S2S, lambda m: (m["app_id"],))  # the app in the path
        r.add_get("/v1/apps/{app_id}/decisions", _guard(a, own, "", self.list_decisions))
        r.add_get("/v1/apps/{app_id}/decisions:watch", _guard(a, own, "", self.watch_decisions))
        r.add_get("/v1/decisions:watch", _guard(a, admin, "", self.watch_decisions))
        # The ``:explain`` routes before the plain ones, whose ids would take the suffix.
        r.add_get(
            "/v1/apps/{app_id}/decisions/{decision_id:[^/:]+}:explain",
            _guard(a, own, "", self.explain_decision),
        )
        r.add_get(
            "/v1/apps/{app_id}/installs/{install_id:[^/:]+}:explain",
            _guard(a, own, "", self.explain_decision),
        )
        r.add_post("/v1/apps/{app_id}/installs:simulate", _guard(a, own, "", self.simulate))
        r.add_get(
            "/v1/apps/{app_id}/decisions/{decision_id}", _guard(a, own, "", self.get_decision)
        )
        r.add_get("/v1/apps/{app_id}/installs/{install_id}", _guard(a, own, "", self.get_install))
        r.add_get("/v1/apps/{app_id}/reports", _guard(a, own, "", self.get_report))
        # Data subjects: the app's own devices (s2s), or every app's (admin).
        r.add_post("/v1/apps/{app_id}/erasures", _guard(a, own, "", self.create_erasure))
        r.add_get("/v1/apps/{app_id}/erasures/{erasure_id}", _guard(a, own, "", self.get_erasure))
        r.add_post("/v1/erasures", _guard(a, admin, "", self.create_erasure))
        r.add_get("/v1/erasures/{erasure_id}", _guard(a, admin, "", self.get_erasure))
        r.add_post("/v1/apps/{app_id}/devices:access", _guard(a, own, "", self.access_devices))
        r.add_post("/v1/apps/{app_id}/links", _guard(a, own, "link.", self.create_link))
        r.add_get("/v1/apps/{app_id}/links", _guard(a, own, "", self.list_links))
        r.add_get("/v1/apps/{app_id}/links/{code}", _guard(a, own, "", self.get_link))
        r.add_patch("/v1/apps/{app_id}/links/{code}", _guard(a, own, "link.", self.update_link))
        r.add_post("/v1/apps/{app_id}/links/{code}:disable", _guard(a, own, "", self.disable_link))
        r.add_get("/dashboard", _guard(a, public, "", self.dashboard))
        r.add_get("/dashboard/{asset}", _guard(a, public, "", self.dashboard_asset))
        r.add_get("/healthz", _guard(a, public, "", self.healthz))
        r.add_get("/readyz", _guard(a, public, "", self.readyz))
        return app

    def client_ip(self, request: web.Request) -> str:
        forwarded = request.headers.getall("X-Forwarded-For", [])
        ip = client_ip(request.remote or "", forwarded, self.config.trusted_proxies)
        request[CLIENT_IP] = ip
        return ip

    def _limit_sdk(self, request: web.Request) -> None:
        """Take a token of the caller's key: an app key's bucket is its app's
        and scope's (a rotated key shares it), an admin key's its own."""
        if self.sdk_limits.enabled:
            p = request[PRINCIPAL]
            key = auth.bearer(request.headers.get("Authorization"))
            self.sdk_limits.take(auth.hash_key(key) if p.admin else (p.app_id, p.scope))

    async def _link(self, request: web.Request, touch_type: int) -> web.StreamResponse:
        q = request.query
        peer = self.client_ip(request)
        self.link_limits.take(peer)
        touch = touch_from_link(q, touch_type, peer, request.headers.get("User-Agent", ""))
        if not (_may_name_ip(request[PRINCIPAL], touch.app_id) or "sig" in q):
            touch.ip = peer  # an unsigned, unkeyed link cannot choose its IP
        intake.prepare_touch(touch)
        app = await self.directory.get(touch.app_id)
        if app is None:
            raise NotFound("unknown app")
        check_link_signature(
            q.items(), app, touch.media_source, self.config.signing_secrets, time.time()
        )
        redirect = q.get("redirect", "")
        if redirect:
            _check_redirect(redirect)  # before storing: a refused link stores nothing
            check_redirect_target(redirect, app)
        await self.touches.put(touch)
        if redirect:
            raise web.HTTPFound(redirect)
        return web.json_response({"click_id": touch.click_id})

    async def click(self, request: web.Request) -> web.StreamResponse:
        return await self._link(request, touch_pb2.TOUCH_TYPE_CLICK)

    async def follow_link(self, request: web.Request) -> web.StreamResponse:
        """``GET /l/{code}``: record the click, send the person on by
        platform (:mod:`.linkroutes`). A crawler and a disabled link are sent
        to the web fallback and record nothing."""
        peer = self.client_ip(request)
        self.link_limits.take(peer)
        link = await self.links.get(request.match_info["code"])
        app = await self.directory.get(link.app_id) if link is not None else None
        if link is None or app is None:
            raise NotFound("unknown link")
        user_agent = request.headers.get("User-Agent", "")
        if link.disabled or useragent.is_bot(user_agent):
            target = linkroutes.fallback(link, app)
            if not target:
                raise NotFound("the link has nowhere to send this browser")
            return _found(target)
        q = request.query
        fixed = sorted(k for k in q if k in LINK_FIXED)
        if fixed:
            raise InvalidArgument([FieldViolation(k, "is set by the link") for k in fixed])
        touch = touch_from_link(q, touch_pb2.TOUCH_TYPE_CLICK, peer, user_agent)
        signed = check_link_signature(
            q.items(), app, link.media_source, self.config.signing_secrets, time.time()
        )
        if not signed:
            touch.ip = peer  # an unsigned link cannot choose its IP
        touch.app_id = link.app_id
        for name in ("media_source", "campaign", "adset", "ad", "site_id", "deep_link_value"):
            setattr(touch, name, getattr(link, name))
        touch.deep_link_params.update(link.deep_link_params)
        intake.prepare_touch(touch)
        target = linkroutes.destination(
            link, app, linkroutes.platform_of(user_agent), touch.click_id
        )
        if not target:
            raise NotFound("the link has nowhere to send this browser")
        await self.touches.put(touch)
        return _found(target)

    async def well_known(self, request: web.Request) -> web.StreamResponse:
        """The Universal Links / App Links files of the apps this host serves,
        built from their settings and cached for ``well_known_ttl`` seconds."""
        name = request.path.rsplit("/", 1)[-1]
        host = request.host
        cached = self._well_known.get((name, host))
        now = time.monotonic()
        if cached is None or now - cached[0] > self.config.well_known_ttl:
            apps = []
            async for app_id in app_ids(self.touches.stub):
                app = await self.directory.get(app_id)
                if app is not None and linkroutes.serves(app, host):
                    apps.append(app)
            if name == "assetlinks.json":
                body = linkroutes.asset_links(apps)
            else:
                body = linkroutes.apple_app_site_association(apps)
            cached = (now, body)
            self._well_known[(name, host)] = cached
        return web.Response(
            body=cached[1],
            content_type="application/json",
            headers={"Cache-Control": f"public, max-age={int(self.config.well_known_ttl)}"},
        )

    async def impression(self, request: web.Request) -> web.StreamResponse:
        return await self._link(request, touch_pb2.TOUCH_TYPE_IMPRESSION)

    async def record_touches(self, request: web.Request) -> web.StreamResponse:
        self._limit_sdk(request)
        req = jsonapi.parse(ingestion_pb.RecordTouchesRequest, await _json_body(request))
        allow(request, req)
        intake.prepare_touches(req.touches)
        await self.touches.put_many(req.touches)
        return web.json_response({"click_ids": [t.click_id for t in req.touches]})

    async def install(self, request: web.Request) -> web.StreamResponse:
        self._limit_sdk(request)
        install = jsonapi.parse(install_pb2.Install, await _json_body(request))
        allow(request, install)
        if not install.ip or not _may_name_ip(request[PRINCIPAL], install.app_id):
            install.ip = self.client_ip(request)
        if not install.user_agent:
            install.user_agent = request.headers.get("User-Agent", "")
        decision = await self.decider.install(install)
        return web.json_response({"decision": jsonapi.dump(decision, defaults=True)})

    async def open(self, request: web.Request) -> web.StreamResponse:
        self._limit_sdk(request)
        open_ = jsonapi.parse(install_pb2.Open, await _json_body(request))
        allow(request, open_)
        decision = await self.decider.open(open_)
        return web.json_response({"decision": jsonapi.dump(decision, defaults=True)})

    async def event(self, request: web.Request) -> web.StreamResponse:
        self._limit_sdk(request)
        event = jsonapi.parse(install_pb2.InAppEvent, await _json_body(request))
        allow(request, event)
        attribution = await self.decider.event(event)
        return web.json_response({"attribution": jsonapi.dump(attribution, defaults=True)})

    async def create_app(self, request: web.Request) -> web.StreamResponse:
        app = jsonapi.parse(app_pb2.App, await _json_body(request))
        response = await self.apps.CreateApp(apps_pb.CreateAppRequest(app=app))
        self.directory.forget(app.app_id)  # links for it may have been refused a moment ago
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

    def _outcomes(self, request: web.Request) -> outcomes_grpc.OutcomesServiceStub:
        allow(request, request.match_info)
        assert self.outcomes is not None
        return self.outcomes

    async def get_decision(self, request: web.Request) -> web.StreamResponse:
        stub = self._outcomes(request)
        m = request.match_info
        found = await stub.GetDecision(
            outcomes_pb.GetDecisionRequest(app_id=m["app_id"], decision_id=m["decision_id"])
        )
        return web.json_response({"decision": jsonapi.dump(found.decision, defaults=True)})

    async def get_install(self, request: web.Request) -> web.StreamResponse:
        stub = self._outcomes(request)
        m = request.match_info
        found = await stub.GetInstall(
            outcomes_pb.GetInstallRequest(app_id=m["app_id"], install_id=m["install_id"])
        )
        return web.json_response(jsonapi.dump(found, defaults=False))

    async def watch_decisions(self, request: web.Request) -> web.StreamResponse:
        """Server-Sent Events: each new decision (``event: decision``) or event
        attribution (``event: event``) of the app (``/v1/decisions:watch``:
        of every app, for the admin), its cursor as the event's ``id``; a
        client that reconnects with ``Last-Event-ID`` (or ``?cursor=``) goes
        on after it, missing nothing and seeing nothing twice."""
        app_id = request.match_info.get("app_id", "")  # none: every app (admin)
        if app_id:
            allow(request, request.match_info)
        assert self.watch is not None
        cursor = request.headers.get("Last-Event-ID") or request.query.get("cursor", "")
        if len(cursor) > (200 if app_id else 64 * 1024):
            raise InvalidArgument(
                [FieldViolation("cursor", "is not a cursor this service handed out")]
            )
        call, metadata = self.watch
        stream = call(
            outcomes_pb.WatchDecisionsRequest(app_id=app_id, cursor=cursor),
            metadata=metadata,
        )
        try:
            await stream.initial_metadata()  # the stream is in place ("from now" holds)
        except grpc.aio.AioRpcError as exc:
            stream.cancel()
            raise wire.from_rpc_error(exc) from None
        answer = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await answer.prepare(request)
        await answer.write(b": watching\n\n")
        try:
            async for entry in stream:
                kind = "decision" if entry.HasField("decision") else "event"
                outcome = jsonapi.dump(getattr(entry, kind), defaults=True)
                data = json.dumps({"app_id": entry.app_id, kind: outcome})
                await answer.write(f"id: {entry.cursor}\nevent: {kind}\ndata: {data}\n\n".encode())
        except grpc.aio.AioRpcError as exc:
            error = json.dumps({"code": exc.code().name, "message": exc.details() or ""})
            await answer.write(f"event: error\ndata: {error}\n\n".encode())
        except (ConnectionResetError, asyncio.CancelledError):
            stream.cancel()
            raise
        finally:
            stream.cancel()
        return answer

    async def list_decisions(self, request: web.Request) -> web.StreamResponse:
        """``?start_time=&end_time=`` (RFC 3339), ``kind=install,reattribution``,
        ``media_source=``, ``page_size=``, ``page_token=``."""
        stub = self._outcomes(request)
        q = request.query
        body: dict[str, Any] = {"app_id": request.match_info["app_id"]}
        for name in ("start_time", "end_time", "media_source", "page_token", "page_size"):
            if q.get(name):
                body[name] = q[name]
        if q.get("kind"):
            body["kinds"] = [k for k in q["kind"].split(",") if k]
        listed = await stub.ListDecisions(jsonapi.parse(outcomes_pb.ListDecisionsRequest, body))
        return web.json_response(
            {
                "decisions": [jsonapi.dump(d, defaults=True) for d in listed.decisions],
                "next_page_token": listed.next_page_token,
            }
        )

    async def explain_decision(self, request: web.Request) -> web.StreamResponse:
        """A decision's explanation, by decision id or by install id."""
        allow(request, request.match_info)
        assert self.explain is not None
        m = request.match_info
        found = await self.explain[0].ExplainDecision(
            explain_pb.ExplainDecisionRequest(
                app_id=m["app_id"],
                decision_id=m.get("decision_id", ""),
                install_id=m.get("install_id", ""),
            )
        )
        return web.json_response(_explained_json(jsonapi.dump(found, defaults=True)))

    async def simulate(self, request: web.Request) -> web.StreamResponse:
        """A what-if (``{"settings": {...}, "start_time", "end_time",
        "page_size"}``; the settings named are the change). Answers NDJSON:
        one line per page of the simulation, the last with ``"done": true``;
        a client that goes away cancels it."""
        allow(request, request.match_info)
        assert self.explain is not None
        body = await _json_body(request)
        if not isinstance(body, dict):
            raise InvalidArgument([FieldViolation("body", "must be a JSON object")])
        change = body.get("settings") or {}
        if not isinstance(change, dict):
            raise InvalidArgument([FieldViolation("settings", "must be a JSON object")])
        fields = {k: v for k, v in body.items() if k != "update_mask"}
        req = jsonapi.parse(
            explain_pb.SimulateRequest, {**fields, "app_id": request.match_info["app_id"]}
        )
        req.update_mask.paths.extend(change)
        _, (call, metadata) = self.explain
        stream = call(req, metadata=metadata)
        try:
            first = await stream.read()
        except grpc.aio.AioRpcError as exc:
            stream.cancel()
            raise wire.from_rpc_error(exc) from None
        answer = web.StreamResponse(
            headers={"Content-Type": "application/x-ndjson", "Cache-Control": "no-cache"}
        )
        await answer.prepare(request)
        try:
            page = first
            while page is not grpc.aio.EOF:
                line = json.dumps(_explained_json(jsonapi.dump(page, defaults=True))) + "\n"
                await answer.write(line.encode())
                page = await stream.read()
        except grpc.aio.AioRpcError as exc:
            error = {"error": {"code": exc.code().name, "message": exc.details() or ""}}
            await answer.write((json.dumps(error) + "\n").encode())
        finally:
            stream.cancel()
        return answer

    def _privacy(self, request: web.Request) -> tuple[privacy_grpc.PrivacyServiceStub, str]:
        """The stub and the path's app (checked against the caller's key);
        no app: every app's (the admin routes, checked already)."""
        app_id = request.match_info.get("app_id", "")
        if app_id:
            allow(request, request.match_info)
        assert self.privacy is not None
        return self.privacy, app_id

    async def create_erasure(self, request: web.Request) -> web.StreamResponse:
        """An erasure request (``{"devices": [...]}``), answered at once
        (202) with its id and state; it runs in the background. Without an
        app in the path: of every app (admin)."""
        stub, app_id = self._privacy(request)
        devices = parse_devices(await _json_body(request), MAX_ERASURE_DEVICES)
        answer = await stub.CreateErasure(
            privacy_pb.CreateErasureRequest(app_id=app_id, all_apps=not app_id, devices=devices)
        )
        return web.json_response(erasure_json(answer.erasure), status=202)

    async def get_erasure(self, request: web.Request) -> web.StreamResponse:
        """An erasure request's state and progress (404 if unknown)."""
        stub, app_id = self._privacy(request)
        answer = await stub.GetErasure(
            privacy_pb.GetErasureRequest(app_id=app_id, erasure_id=request.match_info["erasure_id"])
        )
        return web.json_response(erasure_json(answer.erasure))

    async def access_devices(self, request: web.Request) -> web.StreamResponse:
        """Every stored record of the devices named (``{"devices": [...]}``)."""
        stub, app_id = self._privacy(request)
        devices = parse_devices(await _json_body(request), MAX_ACCESS_DEVICES)
        answer = await stub.AccessDevices(
            privacy_pb.AccessDevicesRequest(app_id=app_id, devices=devices)
        )
        return web.json_response(records_json(answer.records))

    def _links(self, request: web.Request) -> tuple[links_grpc.LinkServiceStub, str]:
        allow(request, request.match_info)
        assert self.link_service is not None
        return self.link_service, request.match_info["app_id"]

    def _link_json(self, request: web.Request, link: link_pb2.Link) -> dict[str, Any]:
        """A link as the API shows it, with its public URL on this host."""
        body = jsonapi.dump(link)
        body["url"] = f"{request.scheme}://{request.host}/l/{link.code}"
        return body

    async def create_link(self, request: web.Request) -> web.StreamResponse:
        """``{"media_source", "campaign", ..., "deep_link_value",
        "deep_link_params", "web_fallback_url"}`` → 201 the link with its code."""
        stub, app_id = self._links(request)
        link = jsonapi.parse(link_pb2.Link, await _json_body(request))
        answer = await stub.CreateLink(links_pb.CreateLinkRequest(app_id=app_id, link=link))
        self.links.cache.drop(answer.link.code)
        return web.json_response({"link": self._link_json(request, answer.link)}, status=201)

    async def list_links(self, request: web.Request) -> web.StreamResponse:
        stub, app_id = self._links(request)
        q = request.query
        try:
            size = int(q.get("page_size") or 0)
        except ValueError:
            raise InvalidArgument([FieldViolation("page_size", "must be a number")]) from None
        answer = await stub.ListLinks(
            links_pb.ListLinksRequest(
                app_id=app_id, page_size=size, page_token=q.get("page_token", "")
            )
        )
        return web.json_response(
            {
                "links": [self._link_json(request, link) for link in answer.links],
                "next_page_token": answer.next_page_token,
            }
        )

    async def get_link(self, request: web.Request) -> web.StreamResponse:
        stub, app_id = self._links(request)
        answer = await stub.GetLink(
            links_pb.GetLinkRequest(app_id=app_id, code=request.match_info["code"])
        )
        return web.json_response({"link": self._link_json(request, answer.link)})

    async def update_link(self, request: web.Request) -> web.StreamResponse:
        """The fields given change (``{"campaign": "b", "disabled": true}``)."""
        stub, app_id = self._links(request)
        body = await _json_body(request)
        link = jsonapi.parse(link_pb2.Link, body)
        link.code = request.match_info["code"]
        mask = field_mask_pb2.FieldMask(paths=sorted(body))
        answer = await stub.UpdateLink(
            links_pb.UpdateLinkRequest(app_id=app_id, link=link, update_mask=mask)
        )
        self.links.cache.drop(link.code)
        return web.json_response({"link": self._link_json(request, answer.link)})

    async def disable_link(self, request: web.Request) -> web.StreamResponse:
        stub, app_id = self._links(request)
        code = request.match_info["code"]
        answer = await stub.DisableLink(links_pb.DisableLinkRequest(app_id=app_id, code=code))
        self.links.cache.drop(code)
        return web.json_response({"link": self._link_json(request, answer.link)})

    async def get_report(self, request: web.Request) -> web.StreamResponse:
        """``?start_time=&end_time=`` (RFC 3339), ``bucket=hour|day`` (none: a
        total), ``group_by=media_source,campaign,kind``."""
        allow(request, request.match_info)
        assert self.reports is not None
        q = request.query
        body: dict[str, Any] = {"app_id": request.match_info["app_id"]}
        for name in ("start_time", "end_time"):
            if q.get(name):
                body[name] = q[name]
        if q.get("bucket"):
            body["bucket"] = q["bucket"]
        if q.get("group_by"):
            body["group_by"] = [d for d in q["group_by"].split(",") if d]
        answer = await self.reports.GetReport(jsonapi.parse(reports_pb.GetReportRequest, body))
        return web.json_response(jsonapi.dump(answer, defaults=True))

    async def dashboard(self, request: web.Request) -> web.StreamResponse:
        """The live dashboard's page. It holds no data: the page asks for an
        app and its key, and every data request it makes carries that key."""
        return _static("dashboard.html")

    async def dashboard_asset(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["asset"]
        if name not in DASHBOARD_ASSETS:
            raise NotFound("no such file")
        return _static(name)

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
