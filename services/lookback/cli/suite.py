"""``lookback up``: one process per service on fixed ports, supervised
(restarted when one dies, all stopped on Ctrl-C or SIGTERM).

The services inherit its environment, ``LOOKBACK_TLS_CERT``, ``_KEY`` and
``_CA`` included: set them and every service serves (mutual) TLS and calls
the others over it; the certificate must name ``--host`` (127.0.0.1).

The in-process suite for tests and the scenario runner is
:class:`lookback.testing.suite.EphemeralSuite`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from lookback.cli.readiness import wait_health, wait_http_ready
from lookback.core import auth
from lookback.core.config import ConfigError, env_name, parse_map
from lookback.core.outbound import parse_cidrs
from lookback.core.tasks import cancel_and_wait
from lookback.core.telemetry import configure_logging
from lookback.core.tls import ClientTls

PORT_OFFSETS = {
    "touchpoint_store": 1,
    "decider": 2,
    "ingestion": 3,
    "srn_adapter": 4,
    "postback": 5,
}


@dataclass
class Child:
    name: str
    argv: list[str]
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    started_at: float = 0.0


ALLOW_CIDRS_ENV = env_name("outbound_allow_cidrs")


def outbound_allow_cidrs(ns: argparse.Namespace) -> str:
    """The ranges outbound requests may reach besides public addresses:
    ``--outbound-allow-cidrs``, else ``LOOKBACK_OUTBOUND_ALLOW_CIDRS`` from
    this process's environment; empty (public only) unless set."""
    given = getattr(ns, "outbound_allow_cidrs", None)
    return os.environ.get(ALLOW_CIDRS_ENV, "") if given is None else str(given)


def child_commands(ns: argparse.Namespace) -> list[Child]:
    host, base, data = ns.host, ns.base_port, Path(ns.data_dir).resolve()
    addr = {n: f"{host}:{base + off}" for n, off in PORT_OFFSETS.items()}
    allow = outbound_allow_cidrs(ns)
    # Every service gets the ranges (handed on explicitly, not by chance of
    # the environment); only the dispatcher, SRN adapter, decider and store use them.
    serve = [sys.executable, "-m", "lookback.cli.main", "serve"]
    shared = ["--outbound-allow-cidrs", allow] if allow else []

    def grpc_child(name: str, *extra: str) -> Child:
        return Child(
            name,
            [
                *serve,
                name,
                "--host",
                host,
                "--port",
                str(base + PORT_OFFSETS[name]),
                *shared,
                *extra,
            ],
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
        grpc_child(
            "postback",
            *("--queue-path", str(data / "postbacks.sqlite3")),
            *("--store-address", addr["touchpoint_store"]),  # the relay
            *redis_extra,
        ),
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
                    "--reports-address",
                    addr["postback"],
                    *shared,
                    # Off: local load tests come from one address and one key.
                    *("--link-rate-limit", "0", "--sdk-rate-limit", "0"),
                    *(["--http-reuse-port", "true"] if gateways > 1 else []),
                ],
            )
            for i in range(gateways)
        ),
    ]


ADMIN_KEYS_ENV = "LOOKBACK_ADMIN_KEYS"


def admin_keys_env() -> tuple[dict[str, str], str]:
    """The admin keys every service gets: ``LOOKBACK_ADMIN_KEYS`` from this
    environment, or one generated now. Returns the environment to add and
    the key generated ('' when the operator gave the keys)."""
    given = os.environ.get(ADMIN_KEYS_ENV, "")
    if given.strip():
        return {ADMIN_KEYS_ENV: given}, ""
    key = auth.new_admin_key()
    return {ADMIN_KEYS_ENV: key}, key


class Supervisor:
    """Starts every child, restarts one that dies, stops all on request."""

    def __init__(self, children: list[Child], env: dict[str, str] | None = None) -> None:
        self.children = children
        self.env = env or {}
        self.stopping = asyncio.Event()

    async def _spawn(self, child: Child) -> None:
        child.process = await asyncio.create_subprocess_exec(
            *child.argv, env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
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
    env, generated = admin_keys_env()
    ns.admin_key = env[ADMIN_KEYS_ENV].split(",")[0].strip()
    ns.admin_key_generated = generated
    supervisor = Supervisor(children, env)
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
    tls = ClientTls.from_env()  # what the services were given (checked by run_up)
    https = bool(os.environ.get("LOOKBACK_TLS_CERT"))
    gateway_url = f"{'https' if https else 'http'}://{ns.host}:{ns.http_port}"
    ssl_context = tls.ssl_context() if tls is not None else None
    try:
        for child in children:
            if child.name.startswith("gateway"):
                await wait_http_ready(gateway_url, ssl_context=ssl_context)
            else:
                address = f"{ns.host}:{ns.base_port + PORT_OFFSETS[child.name]}"
                await wait_health(address, tls=tls)
    except TimeoutError as exc:
        print(f"lookback up: {exc}", file=sys.stderr)
        return 1
    print("\nLookback is up:")
    for name, offset in PORT_OFFSETS.items():
        print(f"  {name:<17} grpc {ns.host}:{ns.base_port + offset}")
    print(f"  {'gateway':<17} {'https' if https else 'http'} {gateway_url}")
    if getattr(ns, "redis", ""):
        print(f"  postback queue    Redis {ns.redis} (also settings cache coherence)")
    if getattr(ns, "cassandra", ""):
        print(f"  store backend     Cassandra {ns.cassandra} (keyspace {ns.cassandra_keyspace})")
    if tls is not None:
        mode = "mutual TLS" if os.environ.get("LOOKBACK_TLS_CA") else "TLS"
        print(f"  between services  {mode} (LOOKBACK_TLS_*)")
    print(f"  data folder       {Path(ns.data_dir).resolve()}")
    if ns.admin_key_generated:
        print(f"  admin key         {ns.admin_key_generated}")
        print(f"                    (generated; set {ADMIN_KEYS_ENV} to choose your own)")
    else:
        print(f"  admin key         from {ADMIN_KEYS_ENV}")
    print(flush=True)
    traffic: asyncio.Task[None] | None = None
    if ns.demo:
        from lookback.cli.demo import DEMO_APP, demo_traffic, run_demo

        try:
            await run_demo(gateway_url, ns.admin_key, ssl_context)
        except Exception as exc:
            print(f"lookback up: the demo failed: {exc}", file=sys.stderr)
            return 1
        print(
            f"\nLive dashboard (demo traffic keeps flowing):"
            f"\n  {gateway_url}/dashboard#app={DEMO_APP}&key={ns.admin_key}\n",
            flush=True,
        )
        traffic = asyncio.create_task(demo_traffic(gateway_url, ns.admin_key, ssl_context))
    print("Press Ctrl-C to stop.", flush=True)
    await supervisor.stopping.wait()
    await cancel_and_wait(traffic)
    await runner
    print("lookback up: stopped", flush=True)
    return 0


def run_up(ns: argparse.Namespace) -> int:
    configure_logging("WARNING")
    try:  # fail early on a malformed value
        if ns.srn_endpoints:
            parse_map(ns.srn_endpoints)
        parse_cidrs(outbound_allow_cidrs(ns))
        ClientTls.from_env()  # half-set or unreadable TLS files
    except ConfigError as exc:
        print(f"lookback up: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(_up(ns))
