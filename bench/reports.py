"""Reports benchmark: a day of a million decisions of one app, counted from
the outcomes log and read back as reports, on each backend pair.

    python -m bench.reports [--decisions 1000000] [--backends sqlite,cassandra]
                            [--cassandra HOST:PORT] [--out docs/benchmarks/reports.md]

For each backend pair (the embedded SQLite store with the dispatcher's
SQLite file; Cassandra with Redis) it

1. writes ``--decisions`` decisions of one app, spread over yesterday (UTC),
   straight into the store's outcomes log, in bulk (the log is what the
   reports read; writing them through the decider would measure the
   decider): 20 media sources (one in three installs organic), 10 campaigns
   each, a mix of kinds, one in twenty with a rejected touch;
2. starts the store and the postback dispatcher (real gRPC servers) and
   times the aggregator counting the whole log (until the day's report
   shows every decision);
3. times ``GetReport`` over that day through gRPC, three shapes, 10 times
   each: a total, by media source, and by hour, media source, campaign and
   kind (the largest answer).

Without ``--cassandra`` a node is started with scripts/cassandra.sh and
wiped afterwards; Redis is started with scripts/redis.sh.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lookback.api.reports.v1 import reports_service_pb2 as pb
from lookback.api.reports.v1 import reports_service_pb2_grpc as pb_grpc
from lookback.api.store.v1 import touchpoint_store_service_pb2 as store_pb
from lookback.api.types.v1 import app_pb2, decision_pb2
from lookback.core.convert import micros_to_ts
from lookback.core.server import GrpcServer
from lookback.domain.durations import DAY, SECOND
from lookback.postback.component import PostbackComponent
from lookback.postback.config import PostbackConfig
from lookback.testing.keys import ADMIN_KEY, admin_channel
from lookback.testing.processes import free_ports
from lookback.touchpoint_store.backend import decision_outcome
from lookback.touchpoint_store.component import StoreComponent
from lookback.touchpoint_store.config import StoreConfig

REPO = Path(__file__).resolve().parent.parent
APP = "com.bench.reports"
KINDS = [
    (decision_pb2.DECISION_KIND_INSTALL, 70),
    (decision_pb2.DECISION_KIND_REATTRIBUTION, 10),
    (decision_pb2.DECISION_KIND_REINSTALL, 5),
    (decision_pb2.DECISION_KIND_REENGAGEMENT, 15),
]


def decisions(n: int, day_start: int) -> list[store_pb.Outcome]:
    """``n`` decisions spread evenly over the day, reproducibly."""
    rng = random.Random(12)
    kinds = [k for k, weight in KINDS for _ in range(weight)]
    out = []
    for i in range(n):
        kind = rng.choice(kinds)
        source = rng.randrange(30)
        media = "organic" if source >= 20 and kind == decision_pb2.DECISION_KIND_INSTALL else ""
        media = media or f"network{source % 20:02d}"
        at = day_start + i * (DAY // n)
        d = decision_pb2.Decision(
            decision_id=f"d{i:08d}",
            app_id=APP,
            install_id=f"i{i:08d}",
            kind=kind,
            media_source=media,
            campaign="" if media == "organic" else f"camp{rng.randrange(10)}",
            event_time=micros_to_ts(at),
            decided_at=micros_to_ts(at),
        )
        if i % 20 == 0:
            d.rejected.add(
                click_id=f"x{i}",
                media_source=f"network{rng.randrange(20):02d}",
                reason=decision_pb2.REJECTION_REASON_CTIT_TOO_SHORT,
            )
        out.append(decision_outcome(d, [], at))
    return out


async def write_sqlite(path: Path, entries: Sequence[store_pb.Outcome]) -> None:
    from lookback.touchpoint_store.sqlite import SqliteBackend

    backend = SqliteBackend(path)
    await backend.open()
    try:
        await backend.create_app(app_pb2.App(app_id=APP))  # the log's readers walk the apps
        for start in range(0, len(entries), 10_000):
            chunk = entries[start : start + 10_000]

            def write(db: Any, chunk: Sequence[store_pb.Outcome] = chunk) -> None:
                for e in chunk:
                    backend._append(db, APP, f"d:{e.decision.decision_id}", e)

            await backend.db.write(write)
    finally:
        await backend.close()


async def write_cassandra(
    host: str, port: int, keyspace: str, entries: Sequence[store_pb.Outcome]
) -> None:
    from cassandra.query import BatchStatement, BatchType

    from lookback.touchpoint_store.cassandra import CassandraBackend, CassandraSettings

    backend = CassandraBackend(CassandraSettings(hosts=(host,), port=port, keyspace=keyspace))
    await backend.open()
    try:
        await backend.create_app(app_pb2.App(app_id=APP))  # the log's readers walk the apps
        # Unlogged batches of one partition (the app's day): the bulk path.
        batches = []
        for start in range(0, len(entries), 100):
            batch = BatchStatement(batch_type=BatchType.UNLOGGED)
            for e in entries[start : start + 100]:
                at = e.decision.decided_at.ToMicroseconds()
                (row,) = backend._outcome_rows(APP, f"d:{e.decision.decision_id}", at, e)
                batch.add(backend.q[row[0]], row[1])
            batches.append(batch)
        sem = asyncio.Semaphore(32)

        async def send(b: Any) -> None:
            async with sem:
                await backend._execute(b)

        await asyncio.gather(*(send(b) for b in batches))
    finally:
        await backend.close()


async def measure(
    name: str,
    store_config: StoreConfig,
    postback_config: PostbackConfig,
    n: int,
    day_start: int,
) -> dict[str, Any]:
    store = GrpcServer(StoreComponent(store_config), store_config)
    await store.start()
    config = PostbackConfig(
        **{**vars(postback_config), "store_address": store.address}  # type: ignore[arg-type]
    )
    component = PostbackComponent(config)
    started = time.perf_counter()
    postback = GrpcServer(component, config)
    await postback.start()
    result: dict[str, Any] = {"backend": name}
    try:
        async with admin_channel(postback.address) as channel:
            stub = pb_grpc.ReportsServiceStub(channel)

            def request(bucket: int, *dims: int) -> pb.GetReportRequest:
                return pb.GetReportRequest(
                    app_id=APP,
                    start_time=micros_to_ts(day_start),
                    end_time=micros_to_ts(day_start + DAY),
                    bucket=bucket,  # type: ignore[arg-type]
                    group_by=list(dims),  # type: ignore[arg-type]
                )

            total = request(pb.REPORT_BUCKET_UNSPECIFIED)
            while True:
                rows = (await stub.GetReport(total)).rows
                counted = sum(
                    r.installs + r.reattributions + r.reinstalls + r.reengagements for r in rows
                )
                if counted == n:
                    break
                if time.perf_counter() - started > 3600:
                    raise RuntimeError(f"{name}: only {counted} of {n} counted after an hour")
                await asyncio.sleep(0.5)  # polling the aggregator's progress
            result["aggregate_s"] = time.perf_counter() - started
            shapes = {
                "total": total,
                "by media source": request(
                    pb.REPORT_BUCKET_UNSPECIFIED, pb.REPORT_DIMENSION_MEDIA_SOURCE
                ),
                "by hour, media source, campaign, kind": request(
                    pb.REPORT_BUCKET_HOUR,
                    pb.REPORT_DIMENSION_MEDIA_SOURCE,
                    pb.REPORT_DIMENSION_CAMPAIGN,
                    pb.REPORT_DIMENSION_KIND,
                ),
            }
            result["queries"] = {}
            for shape, req in shapes.items():
                times = []
                for _ in range(10):
                    t0 = time.perf_counter()
                    answer = await stub.GetReport(req)
                    times.append(time.perf_counter() - t0)
                result["queries"][shape] = (
                    len(answer.rows),
                    statistics.median(times),
                    max(times),
                )
    finally:
        await postback.stop(0)
        await store.stop(0)
    return result


def markdown(results: list[dict[str, Any]], n: int, command: str) -> str:
    lines = [
        "# Reports benchmark",
        "",
        f"`{command}` on {platform.node()} ({platform.machine()}, Python"
        f" {platform.python_version()}), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        f"{n:,} decisions of one app over one UTC day, in the store's outcomes log;"
        " the postback dispatcher's aggregator counts them into the reports, then"
        " `GetReport` over that day is timed through gRPC (10 calls per shape).",
        "",
        "| backends | counting the log | facts per second |",
        "|---|---:|---:|",
    ]
    for r in results:
        lines.append(f"| {r['backend']} | {r['aggregate_s']:.1f} s | {n / r['aggregate_s']:,.0f} |")
    lines += ["", "| backends | report | rows | median | max |", "|---|---|---:|---:|---:|"]
    for r in results:
        for shape, (rows, median, worst) in r["queries"].items():
            lines.append(
                f"| {r['backend']} | {shape} | {rows:,} | {median * 1000:.1f} ms |"
                f" {worst * 1000:.1f} ms |"
            )
    return "\n".join(lines) + "\n"


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    today = int(time.time()) * SECOND // DAY * DAY
    day_start = today - DAY
    entries = decisions(args.decisions, day_start)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        base = {"admin_keys": ADMIN_KEY, "port": 0, "host": "127.0.0.1", "grace_period": 0.5}
        if "sqlite" in args.backends:
            store_path = Path(tmp) / "store.sqlite3"
            t0 = time.perf_counter()
            await write_sqlite(store_path, entries)
            print(f"sqlite: {len(entries):,} written in {time.perf_counter() - t0:.1f} s")
            results.append(
                await measure(
                    "SQLite store, SQLite counts",
                    StoreConfig(**base, sqlite_path=str(store_path)),  # type: ignore[arg-type]
                    PostbackConfig(**base, queue_path=str(Path(tmp) / "q.sqlite3")),  # type: ignore[arg-type]
                    args.decisions,
                    day_start,
                )
            )
            print(results[-1])
        if "cassandra" in args.backends:
            ours = None
            cassandra = args.cassandra
            if not cassandra:
                from bench.storage import start_cassandra

                ours = Path(tmp) / "cassandra"
                cassandra, _ = await asyncio.to_thread(start_cassandra, ours, "v2")
            (redis_port,) = free_ports(1)
            redis_dir = Path(tmp) / "redis"
            redis = str(REPO / "scripts" / "redis.sh")
            await asyncio.to_thread(
                subprocess.run,
                [redis, "start", "--dir", str(redis_dir), "--port", str(redis_port)],
                check=True,
            )
            try:
                host, _, port = cassandra.rpartition(":")
                keyspace = f"bench_reports_{uuid.uuid4().hex[:6]}"
                store_config = StoreConfig(
                    **base,  # type: ignore[arg-type]
                    cassandra_hosts=host,
                    cassandra_port=int(port),
                    cassandra_keyspace=keyspace,
                )
                # The schema first (the store's own migration), then the bulk write.
                probe = StoreComponent(store_config)
                await probe.start()
                await probe.stop()
                t0 = time.perf_counter()
                await write_cassandra(host, int(port), keyspace, entries)
                print(f"cassandra: {len(entries):,} written in {time.perf_counter() - t0:.1f} s")
                results.append(
                    await measure(
                        "Cassandra store, Redis counts",
                        store_config,
                        PostbackConfig(
                            **base,  # type: ignore[arg-type]
                            redis_url=f"redis://127.0.0.1:{redis_port}/0",
                        ),
                        args.decisions,
                        day_start,
                    )
                )
                print(results[-1])
            finally:
                stop = [redis, "stop", "--dir", str(redis_dir)]
                await asyncio.to_thread(subprocess.run, stop, check=False)
                if ours is not None:
                    wipe = [str(REPO / "scripts" / "cassandra.sh"), "wipe", "--dir", str(ours)]
                    await asyncio.to_thread(subprocess.run, wipe, check=False)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=1_000_000)
    parser.add_argument("--backends", default="sqlite,cassandra")
    parser.add_argument("--cassandra", default="", help="HOST:PORT of a running Cassandra")
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    results = asyncio.run(run(args))
    text = markdown(results, args.decisions, "python -m bench.reports " + " ".join(sys.argv[1:]))
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
