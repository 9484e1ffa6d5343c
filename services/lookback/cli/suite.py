"""Running the whole suite: supervised processes (``lookback up``) or, for
tests and the scenario runner, servers on free ports inside one event loop.

Either way every service is a real gRPC server and they talk only through
the generated stubs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from lookback.core.config import parse_map
from lookback.core.server import GrpcServer
from lookback.core.telemetry import configure_logging
from lookback.decider.component import DeciderComponent
from lookback.decider.config import DeciderConfig
from lookback.gateway.component import GatewayComponent
from lookback.gateway.config import GatewayConfig
from lookback.ingestion.service import IngestionComponent, IngestionConfig
from lookback.postback.service import PostbackComponent, PostbackConfig
from lookback.srn_adapter.service import SrnComponent, SrnConfig
from lookback.touchpoint_store.service import StoreComponent, StoreConfig

PORT_OFFSETS = {
    "touchpoint_store": 1,
    "decider": 2,
    "ingestion": 3,
    "srn_adapter": 4,
    "postback": 5,
}


@dataclass
class SuiteAddresses:
    store: str = ""
    decider: str = ""
    ingestion: str = ""
    srn: str = ""
    postback: str = ""
    gateway_url: str = ""


@dataclass
class EphemeralSuite:
    """Every service as a real server on a free loopback port, in this loop."""

    data_dir: Path
    srn_endpoints: dict[str, str] = field(default_factory=dict)
    host: str = "127.0.0.1"
    decider_overrides: dict[str, object] = field(default_factory=dict)
    postback_overrides: dict[str, object] = field(default_factory=dict)
    servers: dict[str, GrpcServer] = field(default_factory=dict)
    addresses: SuiteAddresses = field(default_factory=SuiteAddresses)

    async def _start(self, name: str, server: GrpcServer) -> str:
        await server.start()
        self.servers[name] = server
        return server.address

    async def start(self) -> SuiteAddresses:
        a = self.addresses
        base: dict[str, Any] = {"host": self.host, "port": 0, "grace_period": 1.0}
        store = StoreConfig(**base, sqlite_path=str(self.data_dir / "store.sqlite3"))
        a.store = await self._start("touchpoint_store", GrpcServer(StoreComponent(store), store))
        srn = SrnConfig(**base, srn_endpoints=self.srn_endpoints)
        a.srn = await self._start("srn_adapter", GrpcServer(SrnComponent(srn), srn))
        postback = PostbackConfig(
            **{
                **base,
                "queue_path": str(self.data_dir / "postbacks.sqlite3"),
                **self.postback_overrides,
            }
        )
        a.postback = await self._start(
            "postback", GrpcServer(PostbackComponent(postback), postback)
        )
        decider = DeciderConfig(
            **{
                **base,
                "store_address": a.store,
                "srn_address": a.srn,
                "postback_address": a.postback,
                **self.decider_overrides,
            }
        )
        a.decider = await self._start("decider", GrpcServer(DeciderComponent(decider), decider))
        ingestion = IngestionConfig(**base, store_address=a.store, decider_address=a.decider)
        a.ingestion = await self._start(
            "ingestion", GrpcServer(IngestionComponent(ingestion), ingestion)
        )
        gateway = GatewayConfig(
            **base,
            http_host=self.host,
            http_port=0,
            store_address=a.store,
            decider_address=a.decider,
        )
        gateway_component = GatewayComponent(gateway)
        await self._start("gateway", GrpcServer(gateway_component, gateway))
        a.gateway_url = gateway_component.listening()
        return a

    async def stop(self) -> None:
        for name in (
            "gateway",
            "ingestion",
            "decider",
            "postback",
            "srn_adapter",
            "touchpoint_store",
        ):
            server = self.servers.pop(name, None)
            if server is not None:
                await server.stop(grace=1.0)


# --- lookback up: one process per service, supervised ----------------------


@dataclass
class Child:
    name: str
    argv: list[str]
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    started_at: float = 0.0


def child_commands(ns: argparse.Namespace) -> list[Child]:
    host, base, data = ns.host, ns.base_port, Path(ns.data_dir).resolve()
    addr = {n: f"{host}:{base + off}" for n, off in PORT_OFFSETS.items()}
    serve = [sys.executable, "-m", "lookback.cli.main", "serve"]

    def grpc_child(name: str, *extra: str) -> Child:
        return Child(
            name, [*serve, name, "--host", host, "--port", str(base + PORT_OFFSETS[name]), *extra]
        )

    srn_extra = ["--srn-endpoints", ns.srn_endpoints] if ns.srn_endpoints else []
    store_extra = ["--sqlite-path", str(data / "store.sqlite3")]
    if getattr(ns, "cassandra", ""):
        c_host, _, c_port = ns.cassandra.rpartition(":")
        store_extra = [
            "--cassandra-hosts",
            c_host or "127.0.0.1",
            "--cassandra-port",
            c_port or "9042",
            "--cassandra-keyspace",
            ns.cassandra_keyspace,
        ]
    gateways = max(1, getattr(ns, "gateway_processes", 1))
    redis = getattr(ns, "redis", "")
    redis_extra = ["--redis-url", redis] if redis else []
    return [
        grpc_child("touchpoint_store", *store_extra),
        grpc_child("srn_adapter", *srn_extra),
        grpc_child("postback", "--queue-path", str(data / "postbacks.sqlite3"), *redis_extra),
        grpc_child(
            "decider",
            "--store-address",
            addr["touchpoint_store"],
            "--srn-address",
            addr["srn_adapter"],
            "--postback-address",
            addr["postback"],
            *redis_extra,
        ),
        grpc_child(
            "ingestion",
            "--store-address",
            addr["touchpoint_store"],
            "--decider-address",
            addr["decider"],
        ),
        *(
            Child(
                "gateway" if i == 0 else f"gateway-{i + 1}",
                [
                    *serve,
                    "gateway",
                    "--host",
                    host,
                    "--http-host",
                    host,
                    "--http-port",
                    str(ns.http_port),
                    "--store-address",
                    addr["touchpoint_store"],
                    "--decider-address",
                    addr["decider"],
                    *(["--http-reuse-port", "true"] if gateways > 1 else []),
                ],
            )
            for i in range(gateways)
        ),
    ]


def free_base_port(start: int = 23_000) -> int:
    """A base port for ``lookback up`` whose service ports (base+1..base+5)
    and gateway port (base+100) are free right now."""
    for base in range(start, 60_000, 97):
        socks: list[socket.socket] = []
        try:
            for port in [*(base + off for off in PORT_OFFSETS.values()), base + 100]:
                sock = socket.socket()
                socks.append(sock)
                sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for sock in socks:
                sock.close()
        return base
    raise RuntimeError("no free block of ports")


async def wait_serving(address: str, timeout: float = 60.0) -> None:
    """Wait until ``address`` reports SERVING on the gRPC health service."""
    deadline = time.monotonic() + timeout
    async with grpc.aio.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                answer = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{address} not serving after {timeout:.0f}s")
            await asyncio.sleep(0.1)


async def wait_http_ready(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while True:
            try:
                async with session.get(
                    f"{url}/readyz", timeout=aiohttp.ClientTimeout(total=1)
                ) as r:
                    if r.status == 200:
                        return
            except (aiohttp.ClientError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} not ready after {timeout:.0f}s")
            await asyncio.sleep(0.1)


class Supervisor:
    """Starts every child, restarts one that dies, stops all on request."""

    def __init__(self, children: list[Child]) -> None:
        self.children = children
        self.stopping = asyncio.Event()

    async def _spawn(self, child: Child) -> None:
        child.process = await asyncio.create_subprocess_exec(
            *child.argv, env={**os.environ, "PYTHONUNBUFFERED": "1"}
        )
        child.started_at = time.monotonic()

    async def _watch(self, child: Child) -> None:
        while not self.stopping.is_set():
            assert child.process is not None
            code = await child.process.wait()
            if self.stopping.is_set():
                return
            child.restarts += 1
            delay = min(30.0, 2.0 ** min(child.restarts, 5))
            if time.monotonic() - child.started_at > 60:
                delay = 1.0
            print(
                f"lookback up: {child.name} exited ({code}); restarting in {delay:.0f}s", flush=True
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), delay)
            if not self.stopping.is_set():
                await self._spawn(child)

    async def run(self, on_ready: asyncio.Future[None] | None = None) -> None:
        for child in self.children:
            await self._spawn(child)
        watchers = [asyncio.create_task(self._watch(c)) for c in self.children]
        await self.stopping.wait()
        for child in reversed(self.children):
            if child.process and child.process.returncode is None:
                child.process.send_signal(signal.SIGTERM)
        for child in reversed(self.children):
            if child.process is None:
                continue
            try:
                await asyncio.wait_for(child.process.wait(), 15)
            except TimeoutError:
                child.process.kill()
                await child.process.wait()
        for w in watchers:
            w.cancel()


async def _up(ns: argparse.Namespace) -> int:
    children = child_commands(ns)
    supervisor = Supervisor(children)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, supervisor.stopping.set)
    runner = asyncio.create_task(supervisor.run())
    try:
        return await _announce_and_wait(ns, children, supervisor, runner)
    finally:
        # Whatever happened (a failed demo, a start-up timeout), stop every child.
        supervisor.stopping.set()
        await runner


async def _announce_and_wait(
    ns: argparse.Namespace,
    children: list[Child],
    supervisor: Supervisor,
    runner: asyncio.Task[None],
) -> int:
    gateway_url = f"http://{ns.host}:{ns.http_port}"
    try:
        for child in children:
            if child.name.startswith("gateway"):
                await wait_http_ready(gateway_url)
            else:
                await wait_serving(f"{ns.host}:{ns.base_port + PORT_OFFSETS[child.name]}")
    except TimeoutError as exc:
        print(f"lookback up: {exc}", file=sys.stderr)
        return 1
    print("\nLookback is up:")
    for name, offset in PORT_OFFSETS.items():
        print(f"  {name:<17} grpc {ns.host}:{ns.base_port + offset}")
    print(f"  {'gateway':<17} http {gateway_url}")
    if getattr(ns, "redis", ""):
        print(f"  postback queue    Redis {ns.redis} (also settings cache coherence)")
    if getattr(ns, "cassandra", ""):
        print(f"  store backend     Cassandra {ns.cassandra} (keyspace {ns.cassandra_keyspace})")
    print(f"  data folder       {Path(ns.data_dir).resolve()}\n", flush=True)
    if ns.demo:
        from lookback.cli.demo import run_demo

        try:
            await run_demo(gateway_url)
        except Exception as exc:
            print(f"lookback up: the demo failed: {exc}", file=sys.stderr)
            return 1
    print("Press Ctrl-C to stop.", flush=True)
    await supervisor.stopping.wait()
    await runner
    print("lookback up: stopped", flush=True)
    return 0


def run_up(ns: argparse.Namespace) -> int:
    configure_logging("WARNING")
    if ns.srn_endpoints:
        parse_map(ns.srn_endpoints)  # fail early on a malformed value
    return asyncio.run(_up(ns))
