"""Write-ahead log benchmark: the embedded store's log while clicks are
stored at full speed.

    python -m bench.wal [--clicks 1000000] [--batch 1000] [--in-flight 4]
                        [--out docs/benchmarks/wal.md]

The suite runs as ``lookback up`` runs it (one process per service, the
embedded SQLite store; no gateway) on free loopback ports. ``--clicks``
clicks go through ``IngestionService.RecordTouches`` in batches of
``--batch``, ``--in-flight`` calls at a time, each batch stored durably
before its call answers. A thread of the benchmark samples the sizes of
``store.sqlite3-wal`` and ``store.sqlite3`` every 100 ms from start to end.
Decision latency (``DeciderService.DecideInstall`` at a fixed rate, each a
new install with a click to find) is measured on a nearly empty store
first, and with every click stored twice: right after the writes and
again 10 s later, so a store or log whose size slowed reads would show.
Errors are counted by status code, never fatal.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import itertools
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from bench.decisions import Result, load
from bench.storage import click_batch, gaid
from lookback.api.apps.v1 import app_settings_service_pb2 as apps_pb
from lookback.api.apps.v1 import app_settings_service_pb2_grpc as apps_grpc
from lookback.api.decider.v1 import decider_service_pb2 as decider_pb
from lookback.api.decider.v1 import decider_service_pb2_grpc as decider_grpc
from lookback.api.ingestion.v1 import ingestion_service_pb2_grpc as ingestion_grpc
from lookback.api.types.v1 import app_pb2, install_pb2
from lookback.cli.suite import PORT_OFFSETS, Supervisor, child_commands
from lookback.core.clock import now_micros
from lookback.core.sqlite import WAL_LIMIT
from lookback.testing.keys import admin_channel, admin_env
from lookback.testing.processes import free_base_port, wait_health

GOAL = 256 * 1000 * 1000
"""The log must never pass this many bytes (256 MB)."""
DECIDE_RATE, DECIDE_SECONDS = 100, 5.0
SETTLE_SECONDS = 10.0
SAMPLE_INTERVAL = 0.1


def mb(n: float) -> str:
    return f"{n / 1e6:,.1f} MB"


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


@dataclass
class Sizes:
    """Sizes of the store's files, sampled by a thread of their own."""

    db: Path
    wal: Path = field(init=False)
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # (t, wal, db)
    _done: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.wal = Path(f"{self.db}-wal")
        self._thread = threading.Thread(target=self._sample, daemon=True)

    @staticmethod
    def size(path: Path) -> int:
        try:
            return path.stat().st_size
        except FileNotFoundError:
            return 0

    def now(self) -> tuple[float, int, int]:
        return time.perf_counter(), self.size(self.wal), self.size(self.db)

    def _sample(self) -> None:
        while not self._done.wait(SAMPLE_INTERVAL):
            self.samples.append(self.now())

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join()

    def largest_wal(self, start: float = 0.0, end: float = float("inf")) -> int:
        return max((w for t, w, _ in self.samples if start <= t < end), default=0)


@dataclass
class Run:
    clicks: int
    seconds: float
    calls: list[float]
    decide_before: Result
    decide_after: Result
    decide_settled: Result
    sizes: Sizes
    write_span: tuple[float, float]
    at_end: tuple[float, int, int]
    after_stop: tuple[int, int]
    errors: Counter[str]


async def counted(call: Callable[[], Awaitable[object]], errors: Counter[str]) -> bool:
    """Whether ``call()`` succeeded; a failure is counted (by status code), not raised."""
    try:
        await call()
    except grpc.aio.AioRpcError as exc:
        errors[exc.code().name] += 1
        return False
    except Exception as exc:
        errors[type(exc).__name__] += 1
        return False
    return True


async def run(clicks: int, batch: int, in_flight: int, data: Path) -> Run:
    base = free_base_port(37_000)
    ns = argparse.Namespace(
        host="127.0.0.1", base_port=base, http_port=base + 100, data_dir=str(data), srn_endpoints=""
    )
    supervisor = Supervisor([c for c in child_commands(ns) if c.name != "gateway"], admin_env())
    runner = asyncio.create_task(supervisor.run())
    addr = {n: f"127.0.0.1:{base + off}" for n, off in PORT_OFFSETS.items()}
    sizes = Sizes(data / "store.sqlite3")
    sizes.start()
    errors: Counter[str] = Counter()
    try:
        for name in ("touchpoint_store", "decider", "ingestion"):
            await wait_health(addr[name], timeout=120)
        async with (
            admin_channel(addr["decider"]) as decider_ch,
            admin_channel(addr["ingestion"]) as ingestion_ch,
        ):
            app_id = f"com.bench.{uuid.uuid4().hex[:8]}"
            await apps_grpc.AppSettingsServiceStub(decider_ch).CreateApp(
                apps_pb.CreateAppRequest(
                    app=app_pb2.App(app_id=app_id, platform=app_pb2.PLATFORM_ANDROID)
                )
            )
            ingestion = ingestion_grpc.IngestionServiceStub(ingestion_ch)
            decider = decider_grpc.DeciderServiceStub(decider_ch)
            engaged = now_micros() // 1_000_000 - 3600

            async def record(prefix: str, start: int, n: int) -> None:
                await ingestion.RecordTouches(
                    click_batch(app_id, prefix, range(start, start + n), engaged), timeout=120
                )

            installs = itertools.count()

            def decide(prefix: str, i: int) -> Awaitable[bool]:
                inst = install_pb2.Install(app_id=app_id, install_id=f"i{next(installs)}")
                inst.device.gaid = gaid(prefix, i)
                request = decider_pb.DecideInstallRequest(install=inst)
                return counted(lambda: decider.DecideInstall(request, timeout=10), errors)

            # Decisions on a nearly empty store (after a short warm-up), each
            # on a device of its own.
            few = int(DECIDE_RATE * DECIDE_SECONDS) + 10
            for prefix in ("warm", "few"):
                for start in range(0, few, batch):
                    n = min(batch, few - start)
                    await counted(functools.partial(record, prefix, start, n), errors)
            warm = itertools.count()
            await load("warm-up", lambda i: decide("warm", next(warm) % few), 4, 2.0, warmup=0)
            before = await fixed_rate(
                "before", lambda i: decide("few", i), DECIDE_RATE, DECIDE_SECONDS
            )

            # The clicks, at full speed.
            starts = iter(range(0, clicks, batch))
            calls: list[float] = []
            stored = 0

            async def writer() -> None:
                nonlocal stored
                for start in starts:
                    n = min(batch, clicks - start)
                    began = time.perf_counter()
                    ok = await counted(functools.partial(record, "bulk", start, n), errors)
                    calls.append(time.perf_counter() - began)
                    stored += n if ok else 0

            began = time.perf_counter()
            await asyncio.gather(*(writer() for _ in range(in_flight)))
            ended = time.perf_counter()
            at_end = sizes.now()

            # Decisions with every click stored, each finding one of them.
            # Right after the writes (the store still copying its log and the
            # kernel writing back), then again once that has settled.
            step = max(1, clicks // int(2 * DECIDE_RATE * DECIDE_SECONDS))
            after = await fixed_rate(
                "after",
                lambda i: decide("bulk", (2 * i * step) % clicks),
                DECIDE_RATE,
                DECIDE_SECONDS,
            )
            await asyncio.sleep(SETTLE_SECONDS)
            settled = await fixed_rate(
                "settled",
                lambda i: decide("bulk", ((2 * i + 1) * step) % clicks),
                DECIDE_RATE,
                DECIDE_SECONDS,
            )
    finally:
        supervisor.stopping.set()
        await runner
        sizes.stop()
    return Run(
        clicks=stored,
        seconds=ended - began,
        calls=calls,
        decide_before=before,
        decide_after=after,
        decide_settled=settled,
        sizes=sizes,
        write_span=(began, ended),
        at_end=at_end,
        after_stop=(sizes.size(sizes.wal), sizes.size(sizes.db)),
        errors=errors,
    )


def report(r: Run, clicks: int, batch: int, in_flight: int) -> str:
    largest = r.sizes.largest_wal()
    began, ended = r.write_span
    calls = Result("RecordTouches", in_flight, len(r.calls), r.seconds, r.calls)
    verdict = "met" if largest <= GOAL else "**not met**"
    lines = [
        f"{clicks:,} clicks through `IngestionService.RecordTouches`, {batch:,} per call, "
        f"{in_flight} calls in flight; the store's log limit (`wal_limit`) is "
        f"{WAL_LIMIT / 2**20:.0f} MiB ({mb(WAL_LIMIT)}).",
        "",
        "| what | figure |",
        "|---|---|",
        f"| clicks stored | {r.clicks:,} in {r.seconds:,.1f} s |",
        f"| clicks per second | {r.clicks / r.seconds:,.0f} |",
        f"| RecordTouches per call, p50 / p99 | {calls.pct(0.5):,.0f} ms / "
        f"{calls.pct(0.99):,.0f} ms |",
        f"| largest write-ahead log seen | **{mb(largest)}** |",
        f"| goal: the log never exceeds {mb(GOAL)} | {verdict} |",
        f"| log / database when the last click was stored | {mb(r.at_end[1])} / "
        f"{mb(r.at_end[2])} |",
        f"| log / database once the store had stopped | {mb(r.after_stop[0])} / "
        f"{mb(r.after_stop[1])} |",
        f"| errors | {sum(r.errors.values()):,}"
        + (f" ({', '.join(f'{k}: {v}' for k, v in sorted(r.errors.items()))})" if r.errors else "")
        + " |",
        "",
        f"DecideInstall at {DECIDE_RATE}/s for {DECIDE_SECONDS:.0f} s, each a new install "
        "with a click to find:",
        "",
        "| store | p50 ms | p99 ms | decisions |",
        "|---|---|---|---|",
        f"| nearly empty | {r.decide_before.pct(0.5):.2f} | {r.decide_before.pct(0.99):.2f} "
        f"| {len(r.decide_before.latencies):,} |",
        *(
            f"| with the {r.clicks:,} clicks, {when} | {d.pct(0.5):.2f} | {d.pct(0.99):.2f} "
            f"| {len(d.latencies):,} |"
            for when, d in (
                ("right after the writes", r.decide_after),
                (f"{SETTLE_SECONDS:.0f} s later", r.decide_settled),
            )
        ),
        "",
        "Largest log seen in each tenth of the writes:",
        "",
        "| tenth | seconds | largest log |",
        "|---|---|---|",
    ]
    tenth = (ended - began) / 10
    for k in range(10):
        start = began + k * tenth
        lines.append(
            f"| {k + 1} | {k * tenth:,.0f}-{(k + 1) * tenth:,.0f} "
            f"| {mb(r.sizes.largest_wal(start, start + tenth))} |"
        )
    lines += [
        "",
        f"Sizes sampled every {SAMPLE_INTERVAL * 1000:.0f} ms ({len(r.sizes.samples):,} samples) "
        f"by the benchmark process. Machine: {platform.platform()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}; the benchmark shares the machine with the suite.",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clicks", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=1000, help="clicks per call (at most 1000)")
    parser.add_argument("--in-flight", type=int, default=4, help="calls at a time")
    parser.add_argument("--out", help="also write the report (markdown) here")
    parser.add_argument("--keep-data", action="store_true", help="keep the suite's data folder")
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="lookback-bench-wal-"))
    saved = os.dup(1), os.dup(2)
    with (data / "suite.log").open("w") as log_file:
        # The children inherit stdout and stderr: their output goes to the file.
        os.dup2(log_file.fileno(), 1)
        os.dup2(log_file.fileno(), 2)
        try:
            result = asyncio.run(run(args.clicks, args.batch, args.in_flight, data))
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
    text = report(result, args.clicks, args.batch, args.in_flight)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    if args.keep_data:
        print(f"data kept in {data}", file=sys.stderr)
    else:
        shutil.rmtree(data, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
