"""Waiting for services to be ready: a gRPC server's health status, the HTTP
gateway's ``/readyz``. Used by ``lookback up`` and by :mod:`lookback.testing`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import aiohttp
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

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
) -> None:
    """Wait until the gRPC server at ``address`` reports ``status`` (SERVING
    by default) for ``service`` (the whole server by default); TimeoutError
    after ``timeout`` seconds."""
    async with grpc.aio.insecure_channel(address) as channel:
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


async def wait_http_ready(url: str, timeout: float = 60.0) -> None:
    """Wait until ``{url}/readyz`` answers 200; TimeoutError after ``timeout`` seconds."""
    async with aiohttp.ClientSession() as session:

        async def probe() -> bool:
            try:
                async with session.get(
                    f"{url}/readyz", timeout=aiohttp.ClientTimeout(total=1)
                ) as r:
                    return r.status == 200
            except (aiohttp.ClientError, TimeoutError):
                return False

        await _poll(probe, f"{url} not ready", timeout)
