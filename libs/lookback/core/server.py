"""The gRPC server bootstrap every service uses.

A service is a :class:`Component`: it registers its servicers, warms up in
``start`` (opens its database, connects its clients) and releases everything
in ``stop``. :class:`GrpcServer` wraps it in a ``grpc.aio`` server with

- the gRPC health service: NOT_SERVING until ``start`` has finished, SERVING
  after, NOT_SERVING again as soon as shutdown begins;
- server reflection for every service;
- interceptors that log each call and map project errors
  (:mod:`lookback.core.errors`) to gRPC status (:mod:`lookback.core.wire`);
- a graceful stop: new calls are refused, in-flight calls get ``grace_period``
  seconds to finish;
- TLS, or mutual TLS, when the config names certificate files
  (:mod:`lookback.core.tls`), and then, if asked, a plain-text port serving
  the health service alone, for probes that cannot present a certificate.

:func:`serve` runs one until SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from opentelemetry.trace import Span

from lookback.core import auth, redact, telemetry, tls, wire
from lookback.core.errors import Code, FieldViolation, InvalidArgument, LookbackError
from lookback.core.tasks import cancel_and_wait

log = logging.getLogger("lookback.server")


@dataclass(frozen=True)
class ServerConfig:
    """Settings shared by every gRPC service."""

    host: str = "127.0.0.1"
    """Address to listen on; ``0.0.0.0`` in a container."""
    port: int = 0
    """gRPC port; 0 picks a free one (printed at start-up)."""
    grace_period: float = 10.0
    """Seconds in-flight calls get to finish after SIGTERM."""
    log_level: str = "INFO"
    """Python log level name."""
    otlp_endpoint: str = ""
    """OpenTelemetry collector (OTLP/gRPC, ``http://collector:4317``) for traces,
    metrics and logs; empty turns telemetry export off."""
    trace_sample_ratio: float = 1.0
    """Share of traces recorded and exported (0 to 1) when an OTLP endpoint is
    set; a caller's sampling decision (``traceparent``) is followed."""
    max_connection_age: float = 120.0
    """Seconds after which a client's connection is closed gracefully, so that
    clients re-resolve the address and spread over new replicas; 0: never."""
    admin_keys: str = ""
    """Admin keys, comma separated (usually from a Secret). Only their SHA-256
    is kept after start; the first is also the key this service presents to
    the services it calls."""
    admin_keys_file: str = ""
    """A file with more admin keys, one per line (``#`` starts a comment)."""
    require_keys: bool = True
    """Check every caller's key. Turn off only to measure the cost of the
    checks (the benchmarks); never in production."""
    outbound_allow_cidrs: str = ""
    """Address ranges (comma separated CIDRs) outbound requests (postbacks,
    SRN queries) may reach although they are not public, e.g. ``127.0.0.0/8``
    for a local receiver in tests and the demo; empty: public addresses only."""
    tls_cert: str = ""
    """PEM certificate (chain) this service presents, as a server and to the
    services it calls; empty: plain text."""
    tls_key: str = ""
    """PEM private key of ``tls_cert``."""
    tls_ca: str = ""
    """PEM CA bundle: servers require client certificates signed by it (mutual
    TLS), clients verify the services they call against it."""
    health_port: int = 0
    """A second, plain-text gRPC port serving only the health service, for
    probes that cannot present a client certificate (Kubernetes' gRPC
    probes); 0: none."""

    def outgoing_key(self) -> str:
        """The key this service presents to the services it calls (its first
        admin key; empty when it has none)."""
        keys = auth.read_admin_keys(self.admin_keys, self.admin_keys_file)
        return keys[0] if keys else ""


LIVENESS = "liveness"
"""Health service name that is SERVING while the process runs (its backend may
be down): for liveness probes, which should not restart a pod for an outage
elsewhere. The empty name (readiness) follows the backend."""


class Component(Protocol):
    """What a service gives the bootstrap."""

    name: str
    """Short name, e.g. ``decider``."""

    def register(self, server: grpc.aio.Server) -> list[str]:
        """Add servicers to ``server``; return their full service names."""
        ...

    async def start(self) -> None:
        """Warm up; the service is reported SERVING once this returns."""
        ...

    async def stop(self) -> None:
        """Release resources after the server has stopped."""
        ...


# A component may also have ``async def healthy(self) -> bool`` (and a
# ``health_interval`` in seconds): the server then follows it, reporting
# NOT_SERVING while it answers False; ``def listening(self) -> str``,
# the address to announce instead of the gRPC one (the gateway's HTTP);
# ``auth_rules``, who may call each of its methods (a method without a rule
# is for admin keys only); and ``app_keys``, an
# :class:`~lookback.core.auth.AppKeySource` when app keys may call it.

HEALTH_RULES = {
    "/grpc.health.v1.Health/Check": auth.PUBLIC,
    "/grpc.health.v1.Health/Watch": auth.PUBLIC,
}
"""Probes carry no key; health says nothing but SERVING or not."""


def _bearer(context: grpc.aio.ServicerContext) -> str:
    for item in context.invocation_metadata() or ():
        if item[0] == auth.METADATA_KEY:
            return auth.bearer(item[1] if isinstance(item[1], str) else "")
    return ""


class ErrorInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Logs every unary call and turns exceptions into proper status.

    - :class:`LookbackError`: its code, message and details (AIP-193). A
      failed downstream call arrives as one too (the client wrappers raise
      it), so a caller of ingestion sees the decider's ``INVALID_ARGUMENT``
      unchanged.
    - Anything else: ``INTERNAL``, logged with its traceback.
    """

    def __init__(
        self,
        authenticator: auth.Authenticator | None = None,
        rules: Mapping[str, auth.Rule] | None = None,
    ) -> None:
        # The wrapped handler of each method, made once: this runs on every call.
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}
        self.authenticator = authenticator
        self.rules = {**HEALTH_RULES, **(rules or {})}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        wrapped = self._wrapped.get(method)
        if wrapped is not None:
            return wrapped
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        rule = self.rules.get(method, auth.ADMIN_ONLY)
        if handler.unary_unary is None:
            wrapped = self._wrap_stream(method, handler, rule)
        else:
            wrapped = self._wrap(method, handler, rule)
        self._wrapped[method] = wrapped
        return wrapped

    async def _authenticate(
        self, rule: auth.Rule, context: grpc.aio.ServicerContext
    ) -> auth.Principal:
        """Who is calling (before anything is done): anonymous on a public
        method without a key; :class:`~lookback.core.errors.Unauthenticated`
        for a missing or unknown key."""
        if self.authenticator is None:
            return auth.ADMIN
        key = _bearer(context)
        if rule.kind == "public" and not key:
            return auth.ANONYMOUS
        return await self.authenticator.authenticate(key)

    async def _check(
        self, rule: auth.Rule, request: Any, context: grpc.aio.ServicerContext
    ) -> None:
        """Authenticate and authorize the call (before anything is done)."""
        auth.authorize(await self._authenticate(rule, context), rule, request)

    def _wrap_stream(
        self, method: str, handler: grpc.RpcMethodHandler, rule: auth.Rule
    ) -> grpc.RpcMethodHandler:
        """Streaming methods (health Watch, reflection, WatchDecisions):
        checked before the first message (a server stream's request too); a
        project error while streaming ends the stream with its status."""
        check = self._check

        async def refuse(context: grpc.aio.ServicerContext, exc: LookbackError) -> None:
            # Ending the stream with a status (rather than aborting it before
            # the request stream was read) avoids a race in gRPC core that
            # now and then turned the refusal into INTERNAL.
            status = wire.to_status(exc)
            log.info("%s -> %s", method, exc.code.name)
            context.set_code(wire.grpc_code(exc.code))
            context.set_details(status.message)
            context.set_trailing_metadata(((wire.STATUS_DETAILS_KEY, status.SerializeToString()),))

        if handler.unary_stream is not None:
            inner_us = handler.unary_stream

            async def unary_stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
                try:
                    await check(rule, request, context)  # the apps it names too
                except LookbackError as exc:
                    await refuse(context, exc)
                    return
                try:
                    async for item in inner_us(request, context):
                        yield item
                except LookbackError as exc:
                    await refuse(context, exc)

            return grpc.unary_stream_rpc_method_handler(
                unary_stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream is not None:
            inner_ss = handler.stream_stream

            async def stream_stream(requests: Any, context: grpc.aio.ServicerContext) -> Any:
                try:
                    await check(rule, None, context)
                except LookbackError as exc:
                    # Read the first request before answering: a stream ended
                    # while its client is still sending came out INTERNAL now
                    # and then (gRPC core), not with the refusal.
                    with contextlib.suppress(StopAsyncIteration, Exception):
                        await asyncio.wait_for(anext(aiter(requests)), 1.0)
                    await refuse(context, exc)
                    return
                async for item in inner_ss(requests, context):
                    yield item

            return grpc.stream_stream_rpc_method_handler(
                stream_stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler  # no stream-unary methods here

    def _wrap(
        self, method: str, handler: grpc.RpcMethodHandler, rule: auth.Rule
    ) -> grpc.RpcMethodHandler:
        behavior = handler.unary_unary
        authenticate = self._authenticate

        async def wrapper(request: Any, context: grpc.aio.ServicerContext) -> Any:
            # Authenticated once, before the span: only a keyed caller's
            # trace context (and sampling decision) is followed.
            try:
                caller: auth.Principal | LookbackError = await authenticate(rule, context)
            except LookbackError as exc:
                caller = exc
            if telemetry.enabled():
                trusted = isinstance(caller, auth.Principal) and caller.keyed
                metadata = context.invocation_metadata() if trusted else ()
                with telemetry.server_span(method, metadata) as span:
                    return await handle(request, context, span, caller)
            return await handle(request, context, None, caller)

        async def handle(
            request: Any,
            context: grpc.aio.ServicerContext,
            span: Span | None,
            caller: auth.Principal | LookbackError,
        ) -> Any:
            started = time.perf_counter()
            try:
                if isinstance(caller, LookbackError):
                    raise caller
                if isinstance(request, _Undecodable):  # the key first, as for any request
                    auth.authorize(caller, rule, None)
                    raise InvalidArgument([FieldViolation("request", request.description)])
                auth.authorize(caller, rule, request)
                return await behavior(request, context)
            except LookbackError as exc:
                await _abort(context, span, method, exc)
            except grpc.aio.AioRpcError as exc:  # a raw stub's call (wrapped stubs raise the above)
                await _abort(context, span, method, wire.from_rpc_error(exc))
            except grpc.aio.AbortError:
                raise
            except Exception:
                log.exception("%s failed", method)
                telemetry.record_error(span, "INTERNAL", "internal error")
                await context.abort(grpc.StatusCode.INTERNAL, "internal error")
            finally:
                if log.isEnabledFor(logging.DEBUG):
                    ms = (time.perf_counter() - started) * 1000
                    log.debug("%s %.2f ms", method, ms)

        return grpc.unary_unary_rpc_method_handler(
            wrapper,
            request_deserializer=_tolerant(handler.request_deserializer),
            response_serializer=handler.response_serializer,
        )


@dataclass(frozen=True)
class _Undecodable:
    """A request its method's deserializer could not read (grpc itself would
    answer UNKNOWN); the wrapper answers INVALID_ARGUMENT naming ``request``."""

    description: str


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def deserialize(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:  # DecodeError: corrupt wire format, strings not UTF-8
            return _Undecodable(f"is not a valid serialized request: {exc}")

    return deserialize


# Failures an operator should see (the others are the caller's own mistakes).
_OPERATOR_CODES = frozenset(
    {Code.INTERNAL, Code.UNAVAILABLE, Code.DATA_LOSS, Code.DEADLINE_EXCEEDED, Code.UNKNOWN}
)


async def _abort(
    context: grpc.aio.ServicerContext, span: Span | None, method: str, exc: LookbackError
) -> None:
    status = wire.to_status(exc)
    name = exc.code.name
    # The caller gets the message as it is; the log line and the span do not
    # (a message may echo a value the caller sent, or a library's URL).
    message = redact.text(exc.message)
    if exc.code in _OPERATOR_CODES:
        log.warning("%s -> %s: %s", method, name, message)
    else:
        log.info("%s -> %s: %s", method, name, message)
    telemetry.record_error(span, name, message)
    await context.abort(
        wire.grpc_code(exc.code),
        status.message,
        trailing_metadata=((wire.STATUS_DETAILS_KEY, status.SerializeToString()),),
    )


class GrpcServer:
    """A component served over gRPC with health, reflection and graceful stop."""

    def __init__(self, component: Component, config: ServerConfig) -> None:
        self.component = component
        self.config = config
        self.health = HealthServicer()
        options: list[tuple[str, int]] = [("grpc.so_reuseport", 0)]
        if config.max_connection_age > 0:
            # Clients reconnect (and re-resolve) now and then, so new
            # replicas get their share of long-lived client channels.
            options += [
                ("grpc.max_connection_age_ms", int(config.max_connection_age * 1000)),
                ("grpc.max_connection_age_grace_ms", int(config.grace_period * 1000)),
            ]
        admin_keys = auth.read_admin_keys(config.admin_keys, config.admin_keys_file)
        self.authenticator = auth.Authenticator(
            admin_keys, getattr(component, "app_keys", None), enabled=config.require_keys
        )
        interceptor = ErrorInterceptor(self.authenticator, getattr(component, "auth_rules", {}))
        self.server = grpc.aio.server(interceptors=[interceptor], options=options)
        self.service_names = component.register(self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            [
                *self.service_names,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ],
            self.server,
        )
        self.port = 0
        self.health_port = 0
        self._health_server: grpc.aio.Server | None = None
        self._stopping: asyncio.Task[None] | None = None
        self._monitor: asyncio.Task[None] | None = None

    @property
    def address(self) -> str:
        return f"{self.config.host}:{self.port}"

    async def start(self) -> int:
        """Bind, start, warm up, then report SERVING. Returns the bound port."""
        credentials = tls.server_credentials(self.config)  # ConfigError if half set
        for name in ["", *self.service_names]:
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        listen = f"{self.config.host}:{self.config.port}"
        if credentials is None:
            self.port = self.server.add_insecure_port(listen)
        else:
            self.port = self.server.add_secure_port(listen, credentials)
        if not self.port:
            raise OSError(f"cannot bind {listen}")
        if self.config.health_port:
            await self._start_health_port()
        await self.server.start()
        await self.health.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
        await self.component.start()
        # A component may make its key source while warming up.
        self.authenticator.apps = getattr(self.component, "app_keys", None)
        tune_gc()
        await self.set_serving(True)
        probe = getattr(self.component, "healthy", None)
        if probe is not None:
            interval = getattr(self.component, "health_interval", 1.0)
            self._monitor = asyncio.create_task(self._watch_health(probe, interval))
        mode = (
            "plain text" if credentials is None else "mutual TLS" if self.config.tls_ca else "TLS"
        )
        log.info("%s serving on %s (%s)", self.component.name, self.address, mode)
        return self.port

    async def _start_health_port(self) -> None:
        """The health service alone, in plain text, on ``health_port``: what
        it tells (SERVING or not) is no secret, and nothing else is served."""
        self._health_server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._health_server)
        listen = f"{self.config.host}:{self.config.health_port}"
        self.health_port = self._health_server.add_insecure_port(listen)
        if not self.health_port:
            raise OSError(f"cannot bind {listen}")
        await self._health_server.start()
        log.info("%s health (plain text) on port %d", self.component.name, self.health_port)

    async def _watch_health(self, probe: Callable[[], Awaitable[bool]], interval: float) -> None:
        """Follow the component's own health: NOT_SERVING while its backend
        is down, SERVING again as soon as it answers."""
        serving = True
        while True:
            await asyncio.sleep(interval)
            try:
                ok = await asyncio.wait_for(probe(), timeout=max(interval, 1.0))
            except Exception:
                ok = False
            if ok != serving:
                serving = ok
                log.warning("%s backend %s", self.component.name, "back" if ok else "unavailable")
                await self.set_serving(ok)

    async def set_serving(self, serving: bool) -> None:
        """Report the component's readiness (e.g. while its backend is down)."""
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ["", *self.service_names]:
            await self.health.set(name, status)

    def stop(self, grace: float | None = None) -> asyncio.Task[None]:
        """Begin a graceful stop (idempotent); await the task to wait for it."""
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self._stop(grace))
        return self._stopping

    async def _stop(self, grace: float | None) -> None:
        grace = self.config.grace_period if grace is None else grace
        log.info("%s stopping (grace %.1fs)", self.component.name, grace)
        await cancel_and_wait(self._monitor)
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        if self._health_server is not None:
            await self._health_server.stop(None)
        await self.component.stop()
        log.info("%s stopped", self.component.name)

    async def wait(self) -> None:
        await self.server.wait_for_termination()
        if self._stopping is not None:
            await self._stopping


def tune_gc() -> None:
    """Move everything allocated while warming up out of the collector's way
    and collect the young generation less often: a request allocates many
    short-lived objects, and full collections were the latency tail."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)


def install_signal_handlers(on_signal: Callable[[], object]) -> None:
    """Call ``on_signal`` on SIGTERM or SIGINT (once per signal)."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)


async def serve(component: Component, config: ServerConfig) -> None:
    """Run ``component`` until SIGTERM or SIGINT, then stop gracefully."""
    telemetry.setup(component.name, config.otlp_endpoint, config.trace_sample_ratio)
    server = GrpcServer(component, config)
    await server.start()
    # Handlers first: whoever reads the line below may send SIGTERM at once.
    install_signal_handlers(server.stop)
    announce = getattr(component, "listening", None)
    address = announce() if announce is not None else server.address
    print(f"{component.name} listening on {address}", flush=True)
    try:
        await server.wait()
    finally:
        telemetry.shutdown()
