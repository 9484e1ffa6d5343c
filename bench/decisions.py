"""Decision benchmark: decisions per second and latency at several
concurrencies, beside a bare grpc.aio echo server measured in the same run.

    python -m bench.decisions [--duration 10] [--out docs/benchmarks/decisions.md]

The suite runs as `lookback up` runs it (one process per service, embedded
SQLite store) on free loopback ports. The app's settings are cached (warm)
before measuring. Each install is new (its own install id and device, with a
click to find), so every decision does the full work: one store round trip
to gather, the rules, one store write (durable, fsync'd).

Also measured, at concurrency 16, to show what each RPC hop costs:
- store GetApp (one hop, a small read),
- ingestion ReportInstall (one hop more than the decider),
- the SDK's ``POST /v1/installs`` on the HTTP gateway (one HTTP hop more),
  driven by the Go load generator (bench/loadgen/): closed loop at
  concurrency 16, then open loop (send times fixed in advance) at half the
  rate the closed loop reached.

A failed call never stops a measurement: errors (gRPC codes, HTTP statuses,
timeouts) are counted and reported beside the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from bench.echo_server import ECHO_METHOD
from bench.loadgen import LoadResult, run_loadgen
from lookback.api.apps.v1 import app_settings_service_pb2 as apps_pb
from lookback.api.apps.v1 import app_settings_service_pb2_grpc as apps_grpc
from lookback.api.decider.v1 import decider_service_pb2 as decider_pb
from lookback.api.decider.v1 import decider_service_pb2_grpc as decider_grpc
from lookback.api.ingestion.v1 import ingestion_service_pb2 as ingestion_pb
from lookback.api.ingestion.v1 import ingestion_service_pb2_grpc as ingestion_grpc
from lookback.api.store.v1 import touchpoint_store_service_pb2 as store_pb
from lookback.api.store.v1 import touchpoint_store_service_pb2_grpc as store_grpc
from lookback.api.types.v1 import app_pb2, install_pb2, touch_pb2
from lookback.cli.suite import PORT_OFFSETS, Supervisor, child_commands
from lookback.testing.keys import admin_channel, admin_env, bearer
from lookback.testing.processes import (
    free_base_port,
    python_module,
    wait_health,
    wait_http_ready,
)

CONCURRENCIES = (1, 16, 64)
TIMEOUT = 10.0  # seconds: a call slower than this counts as DEADLINE_EXCEEDED


@dataclass
class Result:
    name: str
    concurrency: int
    calls: int
    seconds: float
    latencies: list[float]
    errors: Counter[str] = field(default_factory=Counter)  # failed calls by gRPC code

    @property
    def rate(self) -> float:
        return self.calls / self.seconds

    def pct(self, q: float) -> float:
        if not self.latencies:
            return 0.0
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    def mean_ms(self) -> float:
        return statistics.fmean(self.latencies) * 1000 if self.latencies else 0.0

    def row(self) -> str:
        concurrency = self.concurrency or "open loop"
        return (
            f"| {self.name} | {concurrency} | {self.rate:,.0f} | {self.pct(0.5):.2f} "
            f"| {self.pct(0.99):.2f} | {self.calls:,} |"
        )


@dataclass
class HttpResult(Result):
    """A measurement by the Go load generator: ``calls`` are 2xx answers;
    every other outcome is in ``errors`` (``HTTP 503``, ``timeout``, ...)."""

    figures: LoadResult | None = None

    @classmethod
    def of(cls, name: str, figures: LoadResult) -> HttpResult:
        errors: Counter[str] = Counter()
        for status, n in figures.statuses.items():
            if not 200 <= status < 300:
                errors[f"HTTP {status}"] += n
        errors.update(figures.error_kinds)
        errors["timeout"] += figures.timeouts
        errors["not sent (open loop fell behind)"] += figures.unsent
        errors = +errors  # drop the zeros
        concurrency = figures.concurrency if figures.mode == "closed" else 0
        return cls(name, concurrency, figures.ok, figures.duration_s, [], errors, figures)

    def pct(self, q: float) -> float:
        assert self.figures is not None
        return {0.5: self.figures.latency.p50, 0.99: self.figures.latency.p99}[q]

    def mean_ms(self) -> float:
        assert self.figures is not None
        return self.figures.latency.mean


async def load(
    name: str,
    call: Callable[[int], Awaitable[object]],
    concurrency: int,
    duration: float,
    warmup: float = 1.0,
) -> Result:
    """A closed loop: ``concurrency`` callers, each calling again as soon as
    its call returns. A failed call is counted by its code, never raised."""
    counter = itertools.count()
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    begin = time.perf_counter()
    measure_from, stop_at = begin + warmup, begin + warmup + duration

    async def worker() -> None:
        while True:
            started = time.perf_counter()
            if started >= stop_at:
                return
            try:
                await call(next(counter))
            except grpc.aio.AioRpcError as exc:
                if started >= measure_from:
                    errors[exc.code().name] += 1
                continue
            if started >= measure_from:
                latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Result(name, concurrency, len(latencies), duration, latencies, errors)


@dataclass(frozen=True)
class Suite:
    """A running suite: gRPC addresses by service name, the gateway's URL,
    and the file its processes log to."""

    addr: dict[str, str]
    gateway_url: str
    log: Path


@contextlib.asynccontextmanager
async def running_suite(
    first_port: int,
    store: dict[str, object] | None = None,
    info_logs: tuple[str, ...] = (),
    timeout: float = 60.0,
    env: dict[str, str] | None = None,
    flags: dict[str, list[str]] | None = None,
) -> AsyncIterator[Suite]:
    """The suite as ``lookback up`` runs it (one process per service) on free
    loopback ports, until the block ends. ``store`` holds the Cassandra
    options (``cassandra``, ``cassandra_keyspace``); without them the store is
    the embedded SQLite one. The processes' output and logs (and this
    process's stdout and stderr, meanwhile) go to the suite's log file;
    ``info_logs`` names the services that log at INFO; ``env`` is added to
    every service's environment (besides the test admin key); ``flags`` adds
    command-line flags to the services it names."""
    data = Path(tempfile.mkdtemp(prefix="lookback-bench-"))
    base = free_base_port(first_port)
    ns = argparse.Namespace(
        host="127.0.0.1",
        base_port=base,
        http_port=base + 100,
        data_dir=str(data),
        srn_endpoints="",
        **(store or {}),
    )
    children = child_commands(ns)
    for child in children:
        if child.name in info_logs:
            child.argv += ["--log-level", "INFO"]
        child.argv += (flags or {}).get(child.name, [])
    suite = Suite(
        {n: f"127.0.0.1:{base + off}" for n, off in PORT_OFFSETS.items()},
        f"http://127.0.0.1:{base + 100}",
        data / "suite.log",
    )
    sys.stdout.flush()
    saved = os.dup(1), os.dup(2)
    with suite.log.open("w") as log_file:
        # The children inherit stdout and stderr: their lines go to the file.
        os.dup2(log_file.fileno(), 1)
        os.dup2(log_file.fileno(), 2)
        supervisor = Supervisor(children, {**admin_env(), **(env or {})})
        runner = asyncio.create_task(supervisor.run())
        try:
            for name in ("touchpoint_store", "decider", "ingestion"):
                await wait_health(suite.addr[name], timeout=timeout)
            await wait_http_ready(suite.gateway_url, timeout)
            yield suite
        finally:
            supervisor.stopping.set()
            await runner
            sys.stdout.flush()
            for fd, copy in enumerate(saved, start=1):
                os.dup2(copy, fd)
                os.close(copy)


def seed_gaid(prefix: str, i: int) -> str:
    """The device of the i-th click seeded for the HTTP installs: the Go load
    generator writes the same one from ``{prefix}`` and ``{seq:12}``."""
    return f"{prefix}-0000-4000-8000-{i:012d}"


HTTP_INSTALL = (
    '{{"app_id": "{app_id}", "install_id": "{{prefix}}-{{seq}}",'
    ' "device": {{"gaid": "{{prefix}}-0000-4000-8000-{{seq:12}}"}}}}'
)


async def run(duration: float, otlp: float | None = None) -> tuple[list[Result], str]:
    collector = None
    if otlp is not None:  # every service exports (the environment reaches them all)
        collector = await python_module("lookback.testing.otlp", capture_stderr=False)
        os.environ["LOOKBACK_OTLP_ENDPOINT"] = f"http://{collector.address}"
        os.environ["LOOKBACK_TRACE_SAMPLE_RATIO"] = str(otlp)
    async with running_suite(31_000, info_logs=("decider",)) as suite:
        results = await measure(suite, duration)
    if collector is not None:
        await collector.stop()
    stats = "\n".join(
        line.split(" span=- ")[-1].split(" INFO ")[-1]
        for line in suite.log.read_text().splitlines()
        if "cache:" in line
    )
    return results, stats


async def measure(suite: Suite, duration: float) -> list[Result]:
    addr = suite.addr
    echo_process = await python_module("bench.echo_server", capture_stderr=False)
    results: list[Result] = []
    app_id = f"com.bench.{uuid.uuid4().hex[:8]}"
    async with (
        grpc.aio.insecure_channel(echo_process.address) as echo_ch,
        admin_channel(addr["decider"]) as decider_ch,
        admin_channel(addr["ingestion"]) as ingestion_ch,
        admin_channel(addr["touchpoint_store"]) as store_ch,
    ):
        echo = echo_ch.unary_unary(ECHO_METHOD)
        apps = apps_grpc.AppSettingsServiceStub(decider_ch)
        decider = decider_grpc.DeciderServiceStub(decider_ch)
        ingestion = ingestion_grpc.IngestionServiceStub(ingestion_ch)
        store = store_grpc.TouchpointStoreServiceStub(store_ch)
        created = await apps.CreateApp(
            apps_pb.CreateAppRequest(
                app=app_pb2.App(app_id=app_id, platform=app_pb2.PLATFORM_ANDROID)
            )
        )
        run_id = itertools.count()
        clicked_at = int(time.time()) - 3600

        async def seed(n: int, prefix: str, gaid: Callable[[str, int], str] | None = None) -> None:
            await seed_clicks(ingestion, app_id, n, prefix, clicked_at, gaid)

        def install(prefix: str, i: int) -> install_pb2.Install:
            return new_install(app_id, prefix, i)

        payload = b"x" * 200
        for c in CONCURRENCIES:
            results.append(
                await load("bare echo", lambda i: echo(payload, timeout=TIMEOUT), c, duration)
            )
            prefix = f"d{next(run_id)}"
            await seed(int(3000 * duration * (1 + c / 16)), prefix)
            await decider.DecideInstall(decider_pb.DecideInstallRequest(install=install("warm", 0)))
            results.append(
                await load(
                    "DecideInstall (decider + store)",
                    lambda i, p=prefix: decider.DecideInstall(  # type: ignore[misc]
                        decider_pb.DecideInstallRequest(install=install(p, i)), timeout=TIMEOUT
                    ),
                    c,
                    duration,
                )
            )
        results.append(
            await load(
                "store GetApp (one hop)",
                lambda i: store.GetApp(store_pb.GetAppRequest(app_id=app_id), timeout=TIMEOUT),
                16,
                duration,
            )
        )
        prefix = f"i{next(run_id)}"
        await seed(int(3000 * duration * 2), prefix)
        results.append(
            await load(
                "ReportInstall (ingestion + decider + store)",
                lambda i: ingestion.ReportInstall(
                    ingestion_pb.ReportInstallRequest(install=install(prefix, i)), timeout=TIMEOUT
                ),
                16,
                duration,
            )
        )

        # The SDK's install over HTTP. Prefixes are 8 hex digits: the start of
        # each install's device id (see seed_gaid).
        name = "POST /v1/installs (gateway + decider + store)"
        body = HTTP_INSTALL.format(app_id=app_id)
        url = f"{suite.gateway_url}/v1/installs"
        # The app's own sdk key, as an SDK presents it.
        headers = {"Content-Type": "application/json", **bearer(created.keys.sdk)}
        prefix = uuid.uuid4().hex[:8]
        await seed(int(2000 * (duration + 1)), prefix, seed_gaid)
        closed = await run_loadgen(
            url,
            method="POST",
            body=body,
            headers=headers,
            concurrency=16,
            duration=duration,
            warmup=1.0,
            prefix=prefix,
            timeout=TIMEOUT,
        )
        results.append(HttpResult.of(name, closed))
        rate = max(1.0, closed.ok_rate / 2)
        prefix = uuid.uuid4().hex[:8]
        await seed(int(rate * (duration + 1)) + 100, prefix, seed_gaid)
        opened = await run_loadgen(
            url,
            method="POST",
            body=body,
            headers=headers,
            rate=rate,
            duration=duration,
            warmup=1.0,
            prefix=prefix,
            timeout=TIMEOUT,
        )
        results.append(HttpResult.of(f"{name}, at {rate:,.0f}/s", opened))
    await echo_process.stop()
    return results


async def seed_clicks(
    ingestion: ingestion_grpc.IngestionServiceStub,
    app_id: str,
    n: int,
    prefix: str,
    clicked_at: int,
    gaid: Callable[[str, int], str] | None = None,
) -> None:
    """``n`` clicks of networka, the i-th on device ``gaid(prefix, i)`` (by
    default :func:`hashed_gaid`), for the installs of ``prefix`` to find."""
    for start in range(0, n, 1000):
        batch = []
        for i in range(start, min(n, start + 1000)):
            t = touch_pb2.Touch(
                app_id=app_id,
                type=touch_pb2.TOUCH_TYPE_CLICK,
                media_source="networka",
                campaign="bench",
                click_id=f"{prefix}-{i}",
            )
            t.device.gaid = gaid(prefix, i) if gaid else hashed_gaid(prefix, i)
            t.engaged_at.FromSeconds(clicked_at)
            batch.append(t)
        await ingestion.RecordTouches(ingestion_pb.RecordTouchesRequest(touches=batch), timeout=60)


def new_install(app_id: str, prefix: str, i: int) -> install_pb2.Install:
    """The i-th install of ``prefix``: new, on the device of the i-th click."""
    inst = install_pb2.Install(app_id=app_id, install_id=f"{prefix}-{i}")
    inst.device.gaid = hashed_gaid(prefix, i)
    return inst


def hashed_gaid(prefix: str, i: int) -> str:
    return str(uuid.UUID(int=hash((prefix, i)) & ((1 << 128) - 1)))


def report(results: list[Result], stats: str, duration: float) -> str:
    echo = {r.concurrency: r.rate for r in results if r.name == "bare echo"}
    lines = [
        "| what | concurrency | calls/s | p50 ms | p99 ms | calls |",
        "|---|---|---|---|---|---|",
        *[r.row() for r in results],
        "",
        "| concurrency | decisions/s as a share of echo calls/s |",
        "|---|---|",
    ]
    for r in results:
        if r.name.startswith("DecideInstall"):
            lines.append(f"| {r.concurrency} | {r.rate / echo[r.concurrency]:.0%} |")
    lines += ["", "| SDK install path, concurrency 16 | share of echo calls/s |", "|---|---|"]
    for r in results:
        if r.name.startswith(("POST /v1/installs", "ReportInstall")) and r.concurrency == 16:
            lines.append(f"| {r.name} | {r.rate / echo[16]:.0%} |")
    failed = [
        f"{r.name} (concurrency {r.concurrency or 'open loop'}): "
        + ", ".join(f"{n:,} {code}" for code, n in sorted(r.errors.items()))
        for r in results
        if r.errors
    ]
    lines += [
        "",
        "Failed calls (not in the figures above): " + ("; ".join(failed) if failed else "none."),
        "",
        "`POST /v1/installs`: the Go load generator (bench/loadgen/), one keep-alive"
        " connection per caller; the open loop sends at fixed times and measures"
        " from the intended send time. calls/s counts 2xx answers.",
        "",
        "Decider caches at the end of the run:",
        "",
        "```",
        stats,
        "```",
        "",
        f"Machine: {platform.platform()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, grpcio {grpc.__version__}; "
        f"{duration:.0f} s per measurement after 1 s of warm-up.",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--out", help="also write the report (markdown) to this file")
    parser.add_argument("--json", help="also write the raw figures (JSON) to this file")
    parser.add_argument(
        "--otlp",
        type=float,
        nargs="?",
        const=1.0,
        metavar="RATIO",
        help="OpenTelemetry on: every service exports to a local OTLP collector, "
        "recording this share of traces (default 1)",
    )
    args = parser.parse_args()
    results, stats = asyncio.run(run(args.duration, args.otlp))
    text = report(results, stats, args.duration)
    if args.otlp is not None:
        text += (
            "\n\nOpenTelemetry on: every service exported over OTLP/gRPC to a local collector,"
            f" recording {args.otlp:.0%} of traces."
        )
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                [
                    {
                        "name": r.name,
                        "concurrency": r.concurrency,
                        "calls_per_s": r.rate,
                        "p50_ms": r.pct(0.5),
                        "p99_ms": r.pct(0.99),
                        "mean_ms": r.mean_ms(),
                        "errors": dict(r.errors),
                    }
                    for r in results
                ],
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
