"""Postback benchmark: postbacks delivered per second to a local receiver,
with the queue on Redis and on the embedded SQLite store, in the same run.

    python -m bench.postbacks [--jobs 20000] [--workers 64] [--out docs/benchmarks/postbacks.md]

A dispatcher process (``lookback serve postback``) is started for each queue;
the jobs are enqueued in batches of 500 and the clock runs from the first
enqueue until the receiver (an aiohttp server in this process) has every
one. Redis is started with scripts/redis.sh on a free port.
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
from pathlib import Path

from lookback.api.postback.v1 import postback_dispatcher_service_pb2 as pb
from lookback.api.postback.v1 import postback_dispatcher_service_pb2_grpc as pb_grpc
from lookback.api.types.v1 import postback_pb2
from lookback.testing.http import LOCAL_CIDRS
from lookback.testing.keys import admin_channel
from lookback.testing.processes import free_ports, serve
from lookback.testing.receiver import PostbackSink

REPO = Path(__file__).resolve().parent.parent


async def measure(label: str, queue_args: list[str], jobs: int, workers: int) -> float:
    sink = PostbackSink()
    await sink.start()
    dispatcher = await serve(
        "postback", *queue_args, "--workers", str(workers), outbound_allow_cidrs=LOCAL_CIDRS
    )
    try:
        async with admin_channel(dispatcher.address) as channel:
            stub = pb_grpc.PostbackDispatcherServiceStub(channel)
            started = time.perf_counter()
            for start in range(0, jobs, 500):
                batch = [
                    postback_pb2.PostbackJob(
                        job_id=f"{label}-{n}", partner="p", url=f"{sink.url}/p?n={n}"
                    )
                    for n in range(start, min(jobs, start + 500))
                ]
                await stub.EnqueuePostbacks(pb.EnqueuePostbacksRequest(jobs=batch), timeout=60)
            await sink.wait_for("p", count=jobs, timeout=600)
            return jobs / (time.perf_counter() - started)
    finally:
        await dispatcher.stop()
        await sink.stop()


async def run(jobs: int, workers: int) -> str:
    data = Path(tempfile.mkdtemp(prefix="lookback-bench-pb-"))
    (port,) = free_ports(1)
    script = str(REPO / "scripts" / "redis.sh")
    await asyncio.to_thread(
        subprocess.run,
        [script, "start", "--dir", str(data / "redis"), "--port", str(port)],
        check=True,
    )
    try:
        sqlite = await measure("sqlite", ["--queue-path", str(data / "q.sqlite3")], jobs, workers)
        redis = await measure(
            "redis", ["--redis-url", f"redis://127.0.0.1:{port}/0"], jobs, workers
        )
    finally:
        await asyncio.to_thread(
            subprocess.run, [script, "stop", "--dir", str(data / "redis")], check=False
        )
    return "\n".join(
        [
            "| queue | postbacks delivered per second |",
            "|---|---|",
            f"| Redis Streams | {redis:,.0f} |",
            f"| embedded SQLite | {sqlite:,.0f} |",
            "",
            f"{jobs:,} jobs each, {workers} delivery workers, receiver and Redis on the same "
            f"machine. Machine: {platform.platform()}, {os.cpu_count()} CPUs, Python "
            f"{platform.python_version()}.",
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--out", help="also write the report (markdown) here")
    args = parser.parse_args()
    text = asyncio.run(run(args.jobs, args.workers))
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
