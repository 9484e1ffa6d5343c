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
- ingestion ReportInstall (one hop more than the decider).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import grpc

from bench.echo_server import ECHO_METHOD
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
from lookback.testing.processes import free_base_port, python_module, wait_health

CONCURRENCIES = (1, 16, 64)


@dataclass
class Result:
    name: str
    concurrency: int
    calls: int
    seconds: float
    latencies: list[float]

    @property
    def rate(self) -> float:
        return self.calls / self.seconds

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    def row(self) -> str:
        return (
            f"| {self.name} | {self.concurrency} | {self.rate:,.0f} | {self.pct(0.5):.2f} "
            f"| {self.pct(0.99):.2f} | {self.calls:,} |"
        )


async def load(
    name: str,
    call: Callable[[int], Awaitable[object]],
    concurrency: int,
    duration: float,
    warmup: float = 1.0,
) -> Result:
    counter = itertools.count()
    latencies: list[float] = []
    begin = time.perf_counter()
    measure_from, stop_at = begin + warmup, begin + warmup + duration

    async def worker() -> None:
        while True:
            started = time.perf_counter()
            if started >= stop_at:
                return
            await call(next(counter))
            if started >= measure_from:
                latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Result(name, concurrency, len(latencies), duration, latencies)


async def run(duration: float, otlp: float | None = None) -> tuple[list[Result], str]:
    data = tempfile.mkdtemp(prefix="lookback-bench-")
    collector = None
    if otlp is not None:  # every service exports (the environment reaches them all)
        collector = await python_module("lookback.testing.otlp", capture_stderr=False)
        os.environ["LOOKBACK_OTLP_ENDPOINT"] = f"http://{collector.address}"
        os.environ["LOOKBACK_TRACE_SAMPLE_RATIO"] = str(otlp)
    base = free_base_port(31_000)
    ns = argparse.Namespace(
        host="127.0.0.1", base_port=base, http_port=base + 100, data_dir=data, srn_endpoints=""
    )
    children = child_commands(ns)
    for child in children:
        if child.name == "decider":
            child.argv += ["--log-level", "INFO"]
    logs = Path(data) / "suite.log"
    supervisor = Supervisor(children)
    log_file = logs.open("w")
    os.dup2(log_file.fileno(), 2)  # the children inherit stderr: their logs go to the file
    runner = asyncio.create_task(supervisor.run())
    addr = {n: f"127.0.0.1:{base + off}" for n, off in PORT_OFFSETS.items()}
    for name in ("touchpoint_store", "decider", "ingestion"):
        await wait_health(addr[name])
    echo_server = await python_module("bench.echo_server", capture_stderr=False)

    results: list[Result] = []
    app_id = f"com.bench.{uuid.uuid4().hex[:8]}"
    async with (
        grpc.aio.insecure_channel(echo_server.address) as echo_ch,
        grpc.aio.insecure_channel(addr["decider"]) as decider_ch,
        grpc.aio.insecure_channel(addr["ingestion"]) as ingestion_ch,
        grpc.aio.insecure_channel(addr["touchpoint_store"]) as store_ch,
    ):
        echo = echo_ch.unary_unary(ECHO_METHOD)
        apps = apps_grpc.AppSettingsServiceStub(decider_ch)
        decider = decider_grpc.DeciderServiceStub(decider_ch)
        ingestion = ingestion_grpc.IngestionServiceStub(ingestion_ch)
        store = store_grpc.TouchpointStoreServiceStub(store_ch)
        await apps.CreateApp(
            apps_pb.CreateAppRequest(
                app=app_pb2.App(app_id=app_id, platform=app_pb2.PLATFORM_ANDROID)
            )
        )
        run_id = itertools.count()
        clicked_at = int(time.time()) - 3600

        async def seed(n: int, prefix: str) -> None:
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
                    t.device.gaid = str(uuid.UUID(int=hash((prefix, i)) & ((1 << 128) - 1)))
                    t.engaged_at.FromSeconds(clicked_at)
                    batch.append(t)
                await ingestion.RecordTouches(ingestion_pb.RecordTouchesRequest(touches=batch))

        def install(prefix: str, i: int) -> install_pb2.Install:
            inst = install_pb2.Install(app_id=app_id, install_id=f"{prefix}-{i}")
            inst.device.gaid = str(uuid.UUID(int=hash((prefix, i)) & ((1 << 128) - 1)))
            return inst

        payload = b"x" * 200
        for c in CONCURRENCIES:
            results.append(await load("bare echo", lambda i: echo(payload), c, duration))
            prefix = f"d{next(run_id)}"
            await seed(int(3000 * duration * (1 + c / 16)), prefix)
            await decider.DecideInstall(decider_pb.DecideInstallRequest(install=install("warm", 0)))
            results.append(
                await load(
                    "DecideInstall (decider + store)",
                    lambda i, p=prefix: decider.DecideInstall(  # type: ignore[misc]
                        decider_pb.DecideInstallRequest(install=install(p, i))
                    ),
                    c,
                    duration,
                )
            )
        results.append(
            await load(
                "store GetApp (one hop)",
                lambda i: store.GetApp(store_pb.GetAppRequest(app_id=app_id)),
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
                    ingestion_pb.ReportInstallRequest(install=install(prefix, i))
                ),
                16,
                duration,
            )
        )
    await echo_server.stop()
    supervisor.stopping.set()
    await runner
    if collector is not None:
        await collector.stop()
    log_file.close()
    stats = "\n".join(
        line.split(" span=- ")[-1].split(" INFO ")[-1]
        for line in logs.read_text().splitlines()
        if "cache:" in line
    )
    return results, stats


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
    lines += [
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
    saved_stderr = os.dup(2)
    results, stats = asyncio.run(run(args.duration, args.otlp))
    os.dup2(saved_stderr, 2)
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
                        "mean_ms": statistics.fmean(r.latencies) * 1000,
                    }
                    for r in results
                ],
                indent=2,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
