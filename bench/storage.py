"""Storage benchmark: what a decision costs on Cassandra and on the embedded
store, measured in the same run.

    python -m bench.storage [--cassandra HOST:PORT [--cassandra-pid PID]]
                            [--backends sqlite,cassandra] [--paxos v1|v2]
                            [--decisions 4000] [--rate 100] [--duration 20]
                            [--warmup 60] [--out docs/benchmarks/storage.md]

Without ``--cassandra`` a node is started with scripts/cassandra.sh (and
wiped afterwards), with Paxos v2 unless ``--paxos v1``. For each backend
the suite runs as ``lookback up`` runs it (one process per service); every
install decided is new (its own install id and device) with a click to
find, so each decision does the whole job. After
``--warmup`` seconds of unmeasured decisions (the JIT of a node in service is
warm), four things are measured:

- **CPU per decision**: utime + stime of every process (from
  ``/proc/<pid>/stat``: each service, Cassandra, this load generator) before
  and after ``--decisions`` decisions in a closed loop;
- **capacity**: those decisions per second, 16 in flight (closed loop);
- **latency at a fixed rate**: ``--rate`` installs per second for
  ``--duration`` seconds, open loop: the send times are fixed in advance and
  each latency runs from the intended send time, so a slow answer cannot slow
  the load down; errors and deadline misses (``--deadline``) are counted, not
  fatal;
- **touch ingestion**: touches per second through ``RecordTouches`` (batches
  of 500 touches, 4 batches in flight), each stored durably before the call
  answers. This runs last, so its compactions land in nothing else.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from lookback.api.apps.v1 import app_settings_service_pb2 as apps_pb
from lookback.api.apps.v1 import app_settings_service_pb2_grpc as apps_grpc
from lookback.api.decider.v1 import decider_service_pb2 as decider_pb
from lookback.api.decider.v1 import decider_service_pb2_grpc as decider_grpc
from lookback.api.ingestion.v1 import ingestion_service_pb2 as ingestion_pb
from lookback.api.ingestion.v1 import ingestion_service_pb2_grpc as ingestion_grpc
from lookback.api.types.v1 import app_pb2, install_pb2, touch_pb2
from lookback.cli.suite import PORT_OFFSETS, Supervisor, child_commands
from lookback.testing.keys import admin_channel, admin_env
from lookback.testing.processes import free_base_port, wait_health

REPO = Path(__file__).resolve().parent.parent
BATCH = 500
IN_FLIGHT = 16
LOADGEN = "load generator"


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by process ``pid``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU seconds per named process between :meth:`start` and :meth:`stop`."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.before: dict[str, float] = {}

    def start(self) -> None:
        self.before = {name: cpu_seconds(pid) for name, pid in self.pids.items()}

    def stop(self) -> dict[str, float]:
        return {name: cpu_seconds(pid) - self.before[name] for name, pid in self.pids.items()}


@dataclass
class Run:
    name: str
    calls: int
    seconds: float
    latencies: list[float] = field(default_factory=list)
    """Seconds, of the calls answered OK."""
    errors: Counter[str] = field(default_factory=Counter)
    """Failed calls by gRPC status (DEADLINE_EXCEEDED: a deadline miss)."""
    cpu: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> int:
        return len(self.latencies)

    @property
    def rate(self) -> float:
        return self.ok / self.seconds

    def pct(self, q: float) -> float:
        """Milliseconds; a failed call counts as slower than every answer."""
        ordered = sorted(self.latencies)
        rank = int(q * self.calls)
        return ordered[rank] * 1000 if rank < len(ordered) else float("inf")

    def cpu_ms(self, name: str) -> float:
        return self.cpu[name] * 1000 / max(1, self.ok)


async def timed(call: Callable[[int], Awaitable[object]], i: int, since: float, run: Run) -> None:
    try:
        await call(i)
    except grpc.aio.AioRpcError as exc:
        run.errors[exc.code().name] += 1
    else:
        run.latencies.append(time.perf_counter() - since)


async def closed_loop(
    name: str,
    call: Callable[[int], Awaitable[object]],
    meter: CpuMeter,
    n: int,
    in_flight: int = IN_FLIGHT,
    duration: float | None = None,
) -> Run:
    """``n`` calls (or as many as ``duration`` seconds allow), ``in_flight``
    at a time, with the CPU each process used."""
    run = Run(name, 0, 0.0)
    todo = iter(range(n))
    began = time.perf_counter()
    stop_at = began + duration if duration is not None else float("inf")

    async def worker() -> None:
        for i in todo:
            started = time.perf_counter()
            if started >= stop_at:
                return
            run.calls += 1
            await timed(call, i, started, run)

    meter.start()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    run.seconds = time.perf_counter() - began
    run.cpu = meter.stop()
    return run


async def open_loop(
    name: str,
    call: Callable[[int], Awaitable[object]],
    rate: float,
    duration: float,
    meter: CpuMeter,
) -> Run:
    """One call every 1/rate seconds whatever the answers take; each latency
    runs from the call's intended send time."""
    n = int(rate * duration)
    run = Run(name, n, duration)
    begin = time.perf_counter() + 0.1

    async def one(i: int) -> None:
        due = begin + i / rate
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        await timed(call, i, due, run)

    meter.start()
    await asyncio.gather(*(one(i) for i in range(n)))
    run.cpu = meter.stop()
    return run


def bench_ip(i: int) -> str:
    """A spread of addresses in 198.18.0.0/15 (benchmarking), so no IP key
    partition grows with the run."""
    return f"198.{18 + (i >> 16) % 2}.{(i >> 8) % 256}.{i % 256}"


def click_batch(
    app_id: str, prefix: str, indexes: Iterable[int], engaged: int
) -> ingestion_pb.RecordTouchesRequest:
    """Clicks ``prefix-i`` for each index, each on a device (:func:`gaid`) and an
    address (:func:`bench_ip`) of its own, engaged at ``engaged`` (seconds)."""
    touches = []
    for i in indexes:
        t = touch_pb2.Touch(
            app_id=app_id,
            type=touch_pb2.TOUCH_TYPE_CLICK,
            media_source="networka",
            campaign="bench",
            click_id=f"{prefix}-{i}",
            ip=bench_ip(i),
        )
        t.device.gaid = gaid(prefix, i)
        t.engaged_at.FromSeconds(engaged)
        touches.append(t)
    return ingestion_pb.RecordTouchesRequest(touches=touches)


def gaid(prefix: str, i: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{prefix}/{i}"))


@dataclass(frozen=True)
class Options:
    decisions: int
    rate: float
    duration: float
    warmup: float
    deadline: float
    flags: dict[str, list[str]] = field(default_factory=dict)
    """Extra flags per service (``--without``: what is turned off)."""


@dataclass
class Measured:
    label: str
    runs: list[Run]
    ingestion: Run


async def measure(
    label: str, store_args: dict[str, str], opts: Options, external: dict[str, int]
) -> Measured:
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
    children = child_commands(ns)
    for child in children:
        child.argv += opts.flags.get(child.name, [])
    supervisor = Supervisor(children, admin_env())
    runner = asyncio.create_task(supervisor.run())
    addr = {n: f"127.0.0.1:{base + off}" for n, off in PORT_OFFSETS.items()}
    try:
        for name in ("touchpoint_store", "decider", "ingestion"):
            await wait_health(addr[name], timeout=120)
        pids = {c.name: c.process.pid for c in children if c.process is not None}
        meter = CpuMeter({**pids, **external, LOADGEN: os.getpid()})
        app_id = f"com.bench.{uuid.uuid4().hex[:8]}"
        async with (
            admin_channel(addr["decider"]) as decider_ch,
            admin_channel(addr["ingestion"]) as ingestion_ch,
        ):
            await apps_grpc.AppSettingsServiceStub(decider_ch).CreateApp(
                apps_pb.CreateAppRequest(
                    app=app_pb2.App(app_id=app_id, platform=app_pb2.PLATFORM_ANDROID)
                )
            )
            ingestion = ingestion_grpc.IngestionServiceStub(ingestion_ch)
            decider = decider_grpc.DeciderServiceStub(decider_ch)
            clicked = int(time.time()) - 3600

            def batch(prefix: str, indexes: Iterable[int]) -> ingestion_pb.RecordTouchesRequest:
                return click_batch(app_id, prefix, indexes, clicked)

            async def seed(prefix: str, n: int) -> None:
                for start in range(0, n, BATCH):
                    indexes = range(start, min(n, start + BATCH))
                    await ingestion.RecordTouches(batch(prefix, indexes), timeout=60)

            def decide(prefix: str) -> Callable[[int], Awaitable[object]]:
                def call(i: int) -> Awaitable[object]:
                    inst = install_pb2.Install(app_id=app_id, install_id=f"{prefix}-{i}")
                    inst.device.gaid = gaid(prefix, i)
                    return decider.DecideInstall(  # type: ignore[no-any-return]
                        decider_pb.DecideInstallRequest(install=inst), timeout=opts.deadline
                    )

                return call

            run_id = uuid.uuid4().hex[:6]
            cap, fixed, warm = (f"{p}{run_id}" for p in "cfw")
            await seed(cap, opts.decisions)
            await seed(fixed, int(opts.rate * opts.duration))
            # The warm-up's installs find clicks too (the first 5,000; organic after).
            await seed(warm, 5000)
            await closed_loop("warm-up", decide(warm), meter, 1 << 30, duration=opts.warmup)
            runs = [
                await closed_loop(
                    f"{label}: DecideInstall, {IN_FLIGHT} in flight",
                    decide(cap),
                    meter,
                    opts.decisions,
                ),
                await open_loop(
                    f"{label}: DecideInstall at {opts.rate:.0f}/s",
                    decide(fixed),
                    opts.rate,
                    opts.duration,
                    meter,
                ),
            ]
            ingest = await closed_loop(
                f"{label}: RecordTouches ({BATCH} per call)",
                lambda i: ingestion.RecordTouches(
                    batch("t", range(i * BATCH, (i + 1) * BATCH)), timeout=60
                ),
                meter,
                1 << 30,
                in_flight=4,
                duration=10.0,
            )
        return Measured(label, runs, ingest)
    finally:
        supervisor.stopping.set()
        await runner


def fmt_ms(v: float) -> str:
    return "all failed" if v == float("inf") else f"{v:.1f}"


def report(results: list[Measured], opts: Options, cassandra_cpu: bool) -> str:
    lines = [
        "| what | calls | answered/s | p50 ms | p99 ms | errors |",
        "|---|---|---|---|---|---|",
    ]
    for m in results:
        for r in m.runs:
            errors = ", ".join(f"{n} {c}" for n, c in r.errors.most_common()) or "0"
            lines.append(
                f"| {r.name} | {r.calls:,} | {r.rate:,.0f} | {fmt_ms(r.pct(0.5))} "
                f"| {fmt_ms(r.pct(0.99))} | {errors} |"
            )
        i = m.ingestion
        lines.append(
            f"| {i.name} | {i.ok * BATCH:,} touches | {i.rate * BATCH:,.0f} touches/s "
            f"| {fmt_ms(i.pct(0.5))} per call | {fmt_ms(i.pct(0.99))} per call "
            f"| {sum(i.errors.values())} |"
        )
    lines += ["", "CPU per decision, ms (utime + stime of each process / decisions answered):", ""]
    runs = [r for m in results for r in m.runs]
    names = sorted({n for r in runs for n in r.cpu}, key=_process_order)
    lines += [
        "| run | " + " | ".join(names) + " | all |",
        "|---|" + "---|" * (len(names) + 1),
    ]
    for r in runs:
        cells = [f"{r.cpu_ms(n):.2f}" if n in r.cpu else "" for n in names]
        total = sum(r.cpu_ms(n) for n in r.cpu)
        lines.append(f"| {r.name} | " + " | ".join(cells) + f" | **{total:.2f}** |")
    lines += [
        "",
        f"Machine: {platform.platform()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}; Cassandra on the same machine"
        + ("" if cassandra_cpu else " (its CPU not measured: pass --cassandra-pid)")
        + f". {opts.warmup:.0f} s of unmeasured decisions first; closed loop: "
        f"{opts.decisions:,} decisions, {IN_FLIGHT} in flight; open loop: {opts.rate:.0f}/s for "
        f"{opts.duration:.0f} s, latency from the intended send time, deadline "
        f"{opts.deadline:.1f} s; RecordTouches: 4 calls of {BATCH} touches in flight for 10 s, "
        "latencies per call. Idle services (gateway, ingestion, SRN adapter, postback) are"
        " counted in `all` too.",
    ]
    return "\n".join(lines)


def _process_order(name: str) -> tuple[int, str]:
    order = ["cassandra", "touchpoint_store", "decider", LOADGEN]
    return (order.index(name) if name in order else len(order), name)


async def run(backends: list[str], cassandra: str, cassandra_pid: int | None, opts: Options) -> str:
    results = []
    if "sqlite" in backends:
        results.append(await measure("embedded SQLite", {}, opts, {}))
    if "cassandra" in backends:
        external = {"cassandra": cassandra_pid} if cassandra_pid else {}
        store = {"cassandra": cassandra, "cassandra_keyspace": "lookback_bench"}
        results.append(await measure("Cassandra", store, opts, external))
    return report(results, opts, cassandra_pid is not None)


def start_cassandra(directory: Path, paxos: str) -> tuple[str, int]:
    """A node of our own (scripts/cassandra.sh): its address and pid."""
    started = subprocess.run(
        [
            str(REPO / "scripts" / "cassandra.sh"),
            "start",
            "--dir",
            str(directory),
            "--port",
            "19042",
            "--storage-port",
            "17000",
            "--paxos",
            paxos,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if started.returncode != 0:
        raise RuntimeError(f"cassandra.sh start failed:\n{started.stdout}\n{started.stderr}")
    return "127.0.0.1:19042", int((directory / "cassandra.pid").read_text())


WITHOUT = {
    "outcomes-log": ("touchpoint_store", "--outcomes-log"),
    "explanations": ("decider", "--explanations"),
}
"""What ``--without`` can turn off: the service and its flag."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cassandra", default="", help="HOST:PORT of a running Cassandra")
    parser.add_argument("--cassandra-pid", type=int, help="its pid, to measure its CPU")
    parser.add_argument("--backends", default="sqlite,cassandra")
    parser.add_argument(
        "--paxos", choices=("v1", "v2"), default="v2", help="paxos_variant of the node started"
    )
    parser.add_argument("--decisions", type=int, default=4000, help="closed-loop decisions")
    parser.add_argument("--rate", type=float, default=100.0, help="open-loop installs/s")
    parser.add_argument("--duration", type=float, default=20.0, help="open-loop seconds")
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds not measured")
    parser.add_argument("--deadline", type=float, default=1.0, help="seconds per decision")
    parser.add_argument(
        "--without",
        default="",
        help="comma-separated: outcomes-log (the store's --outcomes-log false),"
        " explanations (the decider's --explanations false)",
    )
    parser.add_argument("--out", help="also write the report (markdown) here")
    args = parser.parse_args()
    flags: dict[str, list[str]] = {}
    for part in (p.strip() for p in args.without.split(",") if p.strip()):
        service, flag = WITHOUT[part]
        flags.setdefault(service, []).extend([flag, "false"])
    opts = Options(args.decisions, args.rate, args.duration, args.warmup, args.deadline, flags)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    ours = None
    cassandra, pid = args.cassandra, args.cassandra_pid
    if not cassandra and "cassandra" in backends:
        ours = Path(tempfile.mkdtemp(prefix="lookback-bench-cassandra-"))
        cassandra, pid = start_cassandra(ours, args.paxos)
    try:
        text = asyncio.run(run(backends, cassandra, pid, opts))
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
