"""The server bootstrap: health is NOT_SERVING until the component is warm;
``lookback up`` starts the whole suite, runs the demo and stops on Ctrl-C."""

from __future__ import annotations

import asyncio
import re
import signal
from pathlib import Path

import aiohttp
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lookback.core.server import LIVENESS, GrpcServer, ServerConfig
from lookback.testing.keys import ADMIN_KEY, admin_channel, bearer
from lookback.testing.processes import up


class SlowToWarm:
    """A real component whose warm-up waits for the test's go-ahead."""

    name = "slow"

    def __init__(self) -> None:
        self.warming = asyncio.Event()
        self.go = asyncio.Event()

    def register(self, server: grpc.aio.Server) -> list[str]:
        return ["test.Slow"]

    async def start(self) -> None:
        self.warming.set()
        await self.go.wait()

    async def stop(self) -> None:
        pass


async def _status(address: str, service: str = "") -> int:
    async with admin_channel(address) as channel:
        answer = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=service), timeout=2
        )
        return answer.status


async def test_health_is_serving_only_once_warm() -> None:
    component = SlowToWarm()
    server = GrpcServer(component, ServerConfig(port=0, grace_period=1, admin_keys=ADMIN_KEY))
    starting = asyncio.ensure_future(server.start())
    await asyncio.wait_for(component.warming.wait(), 10)  # bound and started, not warm
    address = server.address
    assert await _status(address) == health_pb2.HealthCheckResponse.NOT_SERVING
    assert await _status(address, "test.Slow") == health_pb2.HealthCheckResponse.NOT_SERVING
    assert await _status(address, LIVENESS) == health_pb2.HealthCheckResponse.SERVING  # alive
    component.go.set()
    await starting
    assert await _status(address) == health_pb2.HealthCheckResponse.SERVING
    await server.set_serving(False)  # its backend went away: not ready, still alive
    assert await _status(address) == health_pb2.HealthCheckResponse.NOT_SERVING
    assert await _status(address, LIVENESS) == health_pb2.HealthCheckResponse.SERVING
    await server.stop()


async def test_lookback_up_runs_the_demo_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    # No admin keys given: `lookback up` makes one, prints it, and the demo uses keys.
    suite = await up(tmp_path, "--demo", env={"LOOKBACK_ADMIN_KEYS": "", "LOOKBACK_ADMIN_KEY": ""})
    try:
        text = suite.output()
        assert "Lookback is up" in text
        printed = re.search(r"admin key +(lb-admin-[0-9a-f]{64})", text)
        assert printed is not None, text
        assert f"/dashboard#app=com.lookback.demo&key={printed.group(1)}" in text
        gateway = re.search(r"gateway +http (http://\S+)", text)
        assert gateway is not None
        async with aiohttp.ClientSession() as http:
            app = f"{gateway.group(1)}/v1/apps/com.lookback.demo"
            async with http.get(app) as r:
                assert r.status == 401
            async with http.get(app, headers=bearer(printed.group(1))) as r:
                assert r.status == 200
            async with http.get(app, headers=bearer(ADMIN_KEY)) as r:
                assert r.status == 401  # not this test process's key: the one printed
        assert "no ad seen" in text and "organic" in text
        assert "clicked networka" in text and "device_id" in text
        assert "duplicate" in text
        ready = len(suite.log)
        assert await suite.stop(signal.SIGINT, timeout=30) == 0
        rest = "".join(suite.log[ready:])
        assert "lookback up: stopped" in rest
    finally:
        await suite.stop()
