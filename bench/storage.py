"""Storage benchmark: touch ingestion and decision latency on Cassandra and
on the embedded store, in the same run.

    python -m bench.storage [--cassandra HOST:PORT] [--duration 10]
                            [--out docs/benchmarks/storage.md]

Without ``--cassandra`` a node is started with scripts/cassandra.sh (and
stopped afterwards). For each backend the suite runs as ``lookback up`` runs
it (one process per service) and two things are measured:

- **ingestion**: touches per second through ``IngestionService.RecordTouches``
  (batches of 500 touches, 4 batches in flight), each stored durably before
  the call answers;
- **decision latency at a fixed rate**: installs sent to
  ``DeciderService.DecideInstall`` at 200 per second (open loop: the send
  times are fixed in advance, so a slow answer cannot slow the load down),
  each a new install with a click to find; p50/p99 of the answers. This runs
  first, so the heavy ingestion (and the compactions it sets off) does not
  land in it.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import grpc

from bench.decisions import Result, load
from lookback.api.apps.v1 import app_settings_service_pb2 as apps_pb
from lookback.api.apps.v1 import app_settings_service_pb2_grpc as apps_grpc
from lookback.api.decider.v1 import decider_service_pb2 as decider_pb
from lookback.api.decider.v1 import decider_service_pb2_grpc as decider_grpc
from lookback.api.ingestion.v1 import ingestion_service_pb2 as ingestion_pb
from lookback.api.ingestion.v1 import ingestion_service_pb2_grpc as ingestion_grpc
from lookback.api.types.v1 import app_pb2, install_pb2, touch_pb2
from lookback.cli.suite import PORT_OFFSETS, Supervisor, child_commands
from lookback.testing.processes import free_base_port, wait_health

REPO = Path(__file__).resolve().parent.parent
BATCH = 500


def gaid(prefix: str, i: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{prefix}/{i}"))


def clicks(
    app_id: str, prefix: str, start: int, n: int, engaged: int
) -> ingestion_pb.RecordTouchesRequest:
    """Clicks ``prefix-start`` to ``prefix-(start+n-1)``, each on a device of
    its own (:func:`gaid`), engaged at ``engaged`` (seconds since the epoch)."""
    touches = []
    for i in range(start, start + n):
        t = touch_pb2.Touch(
            app_id=app_id,
            type=touch_pb2.TOUCH_TYPE_CLICK,
            media_source="networka",
            campaign="bench",
            click_id=f"{prefix}-{i}",
            ip="203.0.113.9",
        )
        t.device.gaid = gaid(prefix, i)
        t.engaged_at.FromSeconds(engaged)
        touches.append(t)
    return ingestion_pb.RecordTouchesRequest(touches=touches)


async def fixed_rate(name: str, call: object, rate: float, duration: float) -> Result:
    """Start one call every 1/rate seconds, whatever the answers take."""
    latencies: list[float] = []
    begin = time.perf_counter() + 0.1
    n = int(rate * duration)

    async def one(i: int) -> None:
        await asyncio.sleep(max(0.0, begin + i / rate - time.perf_counter()))
        started = time.perf_counter()
        await call(i)  # type: ignore[operator]
        latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(one(i) for i in range(n)))
    return Result(name, 0, len(latencies), duration, latencies)


async def measure(label: str, store_args: dict[str, str], duration: float) -> list[Result]:
    data = tempfile.mkdtemp(prefix="lookback-bench-")
    base = free_base_port(33_000)
    ns = argparse.Namespace(
        host="127.0.0.1",
        base_port=base,
        http_port=base + 100,
        data_dir=data,
        srn_endpoints="",
        **store_args,
    )
    supervisor = Supervisor(child_commands(ns))
    runner = asyncio.create_task(supervisor.run())
    addr = {n: f"127.0.0.1:{base + off}" for n, off in PORT_OFFSETS.items()}
    try:
        for name in ("touchpoint_store", "decider", "ingestion"):
            await wait_health(addr[name], timeout=120)
        app_id = f"com.bench.{uuid.uuid4().hex[:8]}"
        results = []
        async with (
            grpc.aio.insecure_channel(addr["decider"]) as decider_ch,
            grpc.aio.insecure_channel(addr["ingestion"]) as ingestion_ch,
        ):
            await apps_grpc.AppSettingsServiceStub(decider_ch).CreateApp(
                apps_pb.CreateAppRequest(
                    app=app_pb2.App(app_id=app_id, platform=app_pb2.PLATFORM_ANDROID)
                )
            )
            ingestion = ingestion_grpc.IngestionServiceStub(ingestion_ch)
            decider = decider_grpc.DeciderServiceStub(decider_ch)
            clicked = int(time.time()) - 3600

            def batch(prefix: str, start: int) -> ingestion_pb.RecordTouchesRequest:
                return clicks(app_id, prefix, start, BATCH, clicked)

            decided = f"d{uuid.uuid4().hex[:6]}"
            rate, total = 200, int(200 * duration) + 10
            for start in range(0, total, BATCH):
                await ingestion.RecordTouches(batch(decided, start), timeout=60)

            def install(i: int) -> decider_pb.DecideInstallRequest:
                inst = install_pb2.Install(app_id=app_id, install_id=f"{decided}-{i}")
                inst.device.gaid = gaid(decided, i)
                return decider_pb.DecideInstallRequest(install=inst)

            # Warm up (the settings cache, and Cassandra's JIT: a node in
            # service is warm) with a few seconds of decisions not measured.
            warm = f"w{decided}"
            for start in range(0, 1500, BATCH):
                await ingestion.RecordTouches(batch(warm, start), timeout=60)

            def warm_install(i: int) -> decider_pb.DecideInstallRequest:
                inst = install_pb2.Install(app_id=app_id, install_id=f"{warm}-{i}")
                inst.device.gaid = gaid(warm, i)
                return decider_pb.DecideInstallRequest(install=inst)

            warm_counter = itertools.count()
            await load(
                "warm-up",
                lambda i: decider.DecideInstall(
                    warm_install(next(warm_counter) % 1500), timeout=30
                ),
                8,
                5.0,
                warmup=0,
            )
            counter = itertools.count()
            results.append(
                await fixed_rate(
                    f"{label}: DecideInstall at {rate}/s",
                    lambda i: decider.DecideInstall(install(next(counter)), timeout=10),
                    rate,
                    duration,
                )
            )
            ingest = await load(
                f"{label}: RecordTouches ({BATCH} per call)",
                lambda i: ingestion.RecordTouches(batch("t", i * BATCH), timeout=60),
                4,
                duration,
            )
            ingest.calls *= BATCH  # touches, not calls
            results.append(ingest)

        return results
    finally:
        supervisor.stopping.set()
        await runner


def row(r: Result, unit: str) -> str:
    return (
        f"| {r.name} | {r.rate:,.0f} {unit} | {r.pct(0.5):.2f} | {r.pct(0.99):.2f} "
        f"| {len(r.latencies):,} |"
    )


async def run(cassandra: str, duration: float) -> str:
    results = await measure("embedded SQLite", {}, duration)
    results += await measure(
        "Cassandra", {"cassandra": cassandra, "cassandra_keyspace": "lookback_bench"}, duration
    )
    lines = ["| what | throughput | p50 ms | p99 ms | samples |", "|---|---|---|---|---|"]
    for r in results:
        lines.append(row(r, "touches/s" if "RecordTouches" in r.name else "installs/s"))
    lines += [
        "",
        f"Machine: {platform.platform()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}; Cassandra on the same machine; "
        f"{duration:.0f} s per measurement. RecordTouches latencies are per call "
        f"({BATCH} touches).",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cassandra", default="", help="HOST:PORT of a running Cassandra")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--out", help="also write the report (markdown) here")
    args = parser.parse_args()
    ours = None
    cassandra = args.cassandra
    if not cassandra:
        ours = Path(tempfile.mkdtemp(prefix="lookback-bench-cassandra-"))
        started = subprocess.run(
            [
                str(REPO / "scripts" / "cassandra.sh"),
                "start",
                "--dir",
                str(ours),
                "--port",
                "19042",
                "--storage-port",
                "17000",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if started.returncode != 0:
            print(started.stdout, started.stderr, file=sys.stderr)
            return 1
        cassandra = "127.0.0.1:19042"
    try:
        text = asyncio.run(run(cassandra, args.duration))
    finally:
        if ours is not None:
            subprocess.run(
                [str(REPO / "scripts" / "cassandra.sh"), "wipe", "--dir", str(ours)], check=False
            )
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
