"""Client channels and stubs between services: every call has a deadline.

Services reach each other only through generated stubs made by :func:`stub`
over channels made by :func:`channel`. A call without an explicit
``timeout`` gets the stub's default deadline, so no call can hang for ever,
and a failed call raises the project error it carried
(:class:`~lookback.core.errors.LookbackError`, via :mod:`lookback.core.wire`),
so callers never handle gRPC errors themselves.

Channels are TLS when the process's service has TLS settings: the bootstrap
makes its :class:`~lookback.core.tls.ClientTls` the default (:func:`using_tls`)
before the component makes its channels, so call sites never pass it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any, TypeVar

import grpc

from lookback.core import auth, telemetry, wire
from lookback.core.tls import ClientTls

# Retry transient UNAVAILABLE (a peer restarting) a few times, fast.
_SERVICE_CONFIG = json.dumps(
    {
        # Spread calls over every address the name resolves to (a headless
        # Kubernetes Service gives one per replica).
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [
            {
                "name": [{}],
                "waitForReady": False,
                "retryPolicy": {
                    "maxAttempts": 3,
                    "initialBackoff": "0.05s",
                    "maxBackoff": "0.5s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ],
    }
)


class _WithDeadline:
    """A multicallable that adds ``timeout=`` when the caller gives none, and
    (while tracing is on) a client span whose context goes in the metadata."""

    __slots__ = ("_call", "_metadata", "_method", "_timeout")

    def __init__(self, call: Any, timeout: float, metadata: tuple[tuple[str, str], ...]) -> None:
        self._call = call
        self._timeout = timeout
        self._metadata = metadata
        method = getattr(call, "_method", b"")
        self._method = method.decode() if isinstance(method, bytes) else str(method)

    def __call__(self, request: Any, *, timeout: float | None = None, **kwargs: Any) -> Any:
        timeout = self._timeout if timeout is None else timeout
        if self._metadata:
            extra = kwargs.get("metadata")
            kwargs["metadata"] = self._metadata + tuple(extra) if extra else self._metadata
        if telemetry.enabled():
            return self._traced(request, timeout, kwargs)
        return self._plain(request, timeout, kwargs)

    async def _plain(self, request: Any, timeout: float, kwargs: dict[str, Any]) -> Any:
        try:
            return await self._call(request, timeout=timeout, **kwargs)
        except grpc.aio.AioRpcError as exc:
            raise wire.from_rpc_error(exc) from None

    async def _traced(self, request: Any, timeout: float, kwargs: dict[str, Any]) -> Any:
        with telemetry.client_span(self._method.lstrip("/")) as span:
            kwargs["metadata"] = telemetry.outgoing_metadata(kwargs.get("metadata"))
            try:
                return await self._call(request, timeout=timeout, **kwargs)
            except grpc.aio.AioRpcError as exc:
                telemetry.record_error(span, exc.code().name, exc.details() or "")
                raise wire.from_rpc_error(exc) from None


S = TypeVar("S")


def stub(
    stub_class: Callable[[grpc.aio.Channel], S],
    channel: grpc.aio.Channel,
    default_timeout: float = 5.0,
    key: str = "",
) -> S:
    """A generated stub whose every call has a deadline (``default_timeout``
    seconds unless the call names one) and presents ``key`` (a service's own
    admin key, see ``ServerConfig.outgoing_key``). Wrapping the stub's methods
    costs far less per call than a client interceptor."""
    instance = stub_class(channel)
    metadata = key_metadata(key)
    for name, call in list(vars(instance).items()):
        if callable(call):
            setattr(instance, name, _WithDeadline(call, default_timeout, metadata))
    return instance


def key_metadata(key: str) -> tuple[tuple[str, str], ...]:
    """The call metadata presenting ``key`` (none for an empty key)."""
    return ((auth.METADATA_KEY, f"Bearer {key}"),) if key else ()


class _WithKey:
    """Adds a key to every call of a channel (tools and tests using raw stubs)."""

    def __init__(self, key: str) -> None:
        self.metadata = key_metadata(key)

    def details(self, details: Any) -> Any:
        return details._replace(metadata=tuple(details.metadata or ()) + self.metadata)


class _KeyUnaryUnary(_WithKey, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self.details(details), request)


class _KeyUnaryStream(_WithKey, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[misc]
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self.details(details), request)


class _KeyStreamStream(_WithKey, grpc.aio.StreamStreamClientInterceptor):  # type: ignore[misc]
    async def intercept_stream_stream(
        self, continuation: Any, details: Any, request_iterator: Any
    ) -> Any:
        return await continuation(self.details(details), request_iterator)


def _key_interceptors(key: str) -> list[Any]:
    # A channel files each interceptor under one kind only, so one per kind.
    return [_KeyUnaryUnary(key), _KeyUnaryStream(key), _KeyStreamStream(key)]


_OPTIONS = [
    ("grpc.service_config", _SERVICE_CONFIG),
    ("grpc.enable_retries", 1),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
]

_default_tls: ContextVar[ClientTls | None] = ContextVar("lookback_client_tls", default=None)


@contextlib.contextmanager
def using_tls(tls: ClientTls | None) -> Iterator[None]:
    """Make ``tls`` the default of :func:`channel` within the block (and the
    tasks it starts): the bootstrap wraps a service in it, the in-process
    suite each of its services."""
    token = _default_tls.set(tls)
    try:
        yield
    finally:
        _default_tls.reset(token)


def channel(address: str, tls: ClientTls | None = None, key: str = "") -> grpc.aio.Channel:
    """A channel to ``address`` (``host:port``) that retries UNAVAILABLE: TLS
    with ``tls``, else with the default (:func:`using_tls`), else plain text.
    With ``key``, every call on it presents that key (for tools and tests;
    services give their stubs the key instead, see :func:`stub`)."""
    tls = tls or _default_tls.get()
    interceptors = _key_interceptors(key) if key else None
    if tls is None:
        return grpc.aio.insecure_channel(address, options=_OPTIONS, interceptors=interceptors)
    return grpc.aio.secure_channel(
        address,
        tls.credentials(),
        options=[*_OPTIONS, *tls.channel_options()],
        interceptors=interceptors,
    )


def channels(*addresses: str) -> list[grpc.aio.Channel]:
    """One channel (see :func:`channel`) per address."""
    return [channel(address) for address in addresses]


async def wait_ready(chans: list[grpc.aio.Channel], timeout: float = 30.0) -> None:
    """Wait until every channel is connected (a component's warm-up)."""
    for ch in chans:
        await asyncio.wait_for(ch.channel_ready(), timeout=timeout)


async def close(chans: list[grpc.aio.Channel]) -> None:
    for ch in chans:
        await ch.close()
