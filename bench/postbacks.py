"""Postback benchmark: postbacks delivered per second to a local receiver,
with the queue on Redis and on the embedded SQLite store, in the same run;
and a slow partner beside a healthy one (issue 16).

    python -m bench.postbacks [--jobs 20000] [--workers 64] [--baseline REF]
        [--turns 3] [--out docs/benchmarks/postbacks.md]

A dispatcher process (``lookback serve postback``) is started for each queue;
the jobs are enqueued in batches of 500 and the clock runs from the first
enqueue until the receiver (an aiohttp server in this process) has every
one. Redis is started with scripts/redis.sh on a free port. With
``--baseline REF`` (a git revision) the dispatcher of that revision (a
``git worktree`` of it on ``PYTHONPATH``) is measured too, in turns with
this one (baseline, this, baseline, this, ...), so that the machine's drift
falls on both alike.

The slow-partner scenario: a dispatcher with the default 32 workers, two
partners, 100 jobs a second for each over 5 s, as decisions would queue
them; the healthy partner's endpoint answers at once, the slow one's after
3 s. It reports the healthy partner's delay from a job's creation to its
arrival (p50, p99, max), and how many of the slow one's had arrived by the
time the healthy one had all of its.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from aiohttp import web

from lookback.api.postback.v1 import postback_dispatcher_service_pb2 as pb
from lookback.api.postback.v1 import postback_dispatcher_service_pb2_grpc as pb_grpc
from lookback.api.types.v1 import postback_pb2
from lookback.testing.http import LOCAL_CIDRS, start_http
from lookback.testing.keys import admin_channel
from lookback.testing.processes import free_ports, serve
from lookback.testing.receiver import PostbackSink

REPO = Path(__file__).resolve().parent.parent


async def measure(
    label: str,
    queue_args: list[str],
    jobs: int,
    workers: int,
    env: Mapping[str, str] | None = None,
) -> float:
    sink = PostbackSink()
    await sink.start()
    dispatcher = await serve(
        "postback",
        *queue_args,
        "--workers",
        str(workers),
        outbound_allow_cidrs=LOCAL_CIDRS,
        env=env,
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


SLOW_SECONDS = 3.0
"""How long the slow partner's endpoint takes to answer."""


async def slow_partner(queue_args: list[str], rate: int = 100, seconds: float = 5.0) -> str:
    """The slow-partner scenario (see the module's docstring): a table row."""
    arrived: dict[str, float] = {}
    total = int(seconds * 10) * (rate // 10)
    all_healthy = asyncio.Event()

    async def healthy(request: web.Request) -> web.Response:
        arrived[request.query["job"]] = time.time()
        if sum(1 for j in arrived if j.startswith("healthy-")) == total:
            all_healthy.set()
        return web.Response(text="ok")

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(SLOW_SECONDS)
        arrived[request.query["job"]] = time.time()
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/healthy", healthy)
    app.router.add_get("/slow", slow)
    runner, base = await start_http(app)
    dispatcher = await serve("postback", *queue_args, outbound_allow_cidrs=LOCAL_CIDRS)
    created: dict[str, float] = {}
    try:
        async with admin_channel(dispatcher.address) as channel:
            stub = pb_grpc.PostbackDispatcherServiceStub(channel)
            ticks = int(seconds * 10)
            for tick in range(ticks):
                batch = []
                for partner in ("slow", "healthy"):
                    for k in range(rate // 10):
                        job_id = f"{partner}-{tick}-{k}"
                        job = postback_pb2.PostbackJob(
                            job_id=job_id, partner=partner, url=f"{base}/{partner}?job={job_id}"
                        )
                        job.create_time.GetCurrentTime()
                        created[job_id] = job.create_time.ToNanoseconds() / 1e9
                        batch.append(job)
                await stub.EnqueuePostbacks(pb.EnqueuePostbacksRequest(jobs=batch), timeout=60)
                await asyncio.sleep(0.1)
            healthy_ids = [j for j in created if j.startswith("healthy-")]
            await asyncio.wait_for(all_healthy.wait(), 300)
    finally:
        await dispatcher.stop()
        await runner.cleanup()
    delays = sorted(arrived[j] - created[j] for j in healthy_ids if j in arrived)
    slow_done = sum(1 for j in arrived if j.startswith("slow-"))
    p99 = delays[min(len(delays) - 1, int(0.99 * len(delays)))]
    return (
        f"{statistics.median(delays) * 1000:,.0f} ms | {p99 * 1000:,.0f} ms |"
        f" {delays[-1] * 1000:,.0f} ms | {len(delays):,} of {len(healthy_ids):,} |"
        f" {slow_done:,} of {len(healthy_ids):,}"
    )


def worktree(ref: str, into: Path) -> dict[str, str]:
    """A checkout of ``ref`` in ``into``, and the environment that runs it."""
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", str(into), ref],
        check=True,
        capture_output=True,
    )
    return {"PYTHONPATH": f"{into / 'libs'}{os.pathsep}{into / 'services'}"}


async def run(jobs: int, workers: int, baseline: str = "", turns: int = 3) -> str:
    data = Path(tempfile.mkdtemp(prefix="lookback-bench-pb-"))
    (port,) = free_ports(1)
    script = str(REPO / "scripts" / "redis.sh")
    await asyncio.to_thread(
        subprocess.run,
        [script, "start", "--dir", str(data / "redis"), "--port", str(port)],
        check=True,
    )
    variants: list[tuple[str, dict[str, str] | None]] = [("this", None)]
    if baseline:
        variants.insert(
            0, (baseline, await asyncio.to_thread(worktree, baseline, data / "baseline"))
        )
    redis_url = f"redis://127.0.0.1:{port}/0"
    rates: dict[tuple[str, str], list[float]] = {}
    slow: dict[str, str] = {}
    try:
        for turn in range(turns if baseline else 1):
            for name, env in variants:
                for queue, args in (
                    ("sqlite", ["--queue-path", str(data / f"q-{turn}-{len(rates)}.sqlite3")]),
                    ("redis", ["--redis-url", redis_url]),
                ):
                    label = f"{queue}-{turn}-{name}"
                    rate = await measure(label, args, jobs, workers, env)
                    rates.setdefault((queue, name), []).append(rate)
        slow["embedded SQLite"] = await slow_partner(["--queue-path", str(data / "slow.sqlite3")])
        slow["Redis Streams"] = await slow_partner(["--redis-url", redis_url])
    finally:
        await asyncio.to_thread(
            subprocess.run, [script, "stop", "--dir", str(data / "redis")], check=False
        )
        if baseline:
            await asyncio.to_thread(
                subprocess.run,
                ["git", "-C", str(REPO), "worktree", "remove", "--force", str(data / "baseline")],
                check=False,
            )
    lines = []
    if baseline:
        lines += [
            f"| queue | this (median of {turns}) | {baseline} (median of {turns}) | difference |"
            " turns (this) | turns (baseline) |",
            "|---|---|---|---|---|---|",
        ]
    else:
        lines += ["| queue | postbacks delivered per second |", "|---|---|"]
    for queue, title in (("redis", "Redis Streams"), ("sqlite", "embedded SQLite")):
        this = statistics.median(rates[(queue, "this")])
        if baseline:
            base = statistics.median(rates[(queue, baseline)])
            lines.append(
                f"| {title} | {this:,.0f} | {base:,.0f} | {100 * (this - base) / base:+.1f}% |"
                f" {', '.join(f'{r:,.0f}' for r in rates[(queue, 'this')])} |"
                f" {', '.join(f'{r:,.0f}' for r in rates[(queue, baseline)])} |"
            )
        else:
            lines.append(f"| {title} | {this:,.0f} |")
    lines += [
        "",
        f"{jobs:,} jobs each, {workers} delivery workers, one partner, receiver and Redis"
        f" on the same machine. Machine: {platform.platform()}, {os.cpu_count()} CPUs,"
        f" Python {platform.python_version()}.",
        "",
        f"A slow partner (its endpoint answers after {SLOW_SECONDS:.0f} s) beside a healthy"
        " one, 100 postbacks a second each for 5 s, 32 workers (the default):",
        "",
        "| queue | healthy p50 | healthy p99 | healthy max | healthy delivered |"
        " slow delivered by then |",
        "|---|---|---|---|---|---|",
        *(f"| {title} | {row} |" for title, row in slow.items()),
        "",
        "Delays run from a job's creation (the decision) to its arrival at the endpoint.",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=64)
    parser.add_argument("--baseline", default="", help="a git revision to measure in turns")
    parser.add_argument("--turns", type=int, default=3, help="turns of each, with --baseline")
    parser.add_argument("--out", help="also write the report (markdown) here")
    args = parser.parse_args()
    text = asyncio.run(run(args.jobs, args.workers, args.baseline, args.turns))
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
