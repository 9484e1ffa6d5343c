"""Waiting for services to be ready: a gRPC server's health status, the HTTP
gateway's ``/readyz``. Used by ``lookback up`` and by :mod:`lookback.testing`.
With TLS on, pass the client side (:class:`~lookback.core.tls.ClientTls`)."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable

import aiohttp
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lookback.core import clients
from lookback.core.tls import ClientTls

POLL_INTERVAL = 0.1
"""Seconds between two probes."""


async def _poll(probe: Callable[[], Awaitable[bool]], failed: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await probe():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{failed} after {timeout:.0f}s")
        await asyncio.sleep(POLL_INTERVAL)


async def wait_health(
    address: str,
    status: int = health_pb2.HealthCheckResponse.SERVING,
    timeout: float = 60.0,
    service: str = "",
    tls: ClientTls | None = None,
) -> None:
    """Wait until the gRPC server at ``address`` reports ``status`` (SERVING
    by default) for ``service`` (the whole server by default), over TLS with
    ``tls``; TimeoutError after ``timeout`` seconds."""
    async with clients.channel(address, tls) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service=service)

        async def probe() -> bool:
            try:
                answer = await stub.Check(request, timeout=1.0)
            except grpc.aio.AioRpcError:
                return False
            return bool(answer.status == status)

        name = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
        await _poll(probe, f"{address} not {name}", timeout)


async def wait_http_ready(
    url: str, timeout: float = 60.0, ssl_context: ssl.SSLContext | None = None
) -> None:
    """Wait until ``{url}/readyz`` answers 200 (an ``https`` URL verified
    with ``ssl_context``, else the system's CAs); TimeoutError after
    ``timeout`` seconds."""
    async with aiohttp.ClientSession() as session:

        async def probe() -> bool:
            try:
                async with session.get(
                    f"{url}/readyz",
                    timeout=aiohttp.ClientTimeout(total=1),
                    ssl=ssl_context or True,
                ) as r:
                    return r.status == 200
            except (aiohttp.ClientError, TimeoutError):
                return False

        await _poll(probe, f"{url} not ready", timeout)
