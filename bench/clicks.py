"""Click benchmark: attribution-link clicks through the HTTP gateway, counted
where they matter, in the store.

    python -m bench.clicks [--duration 10] [--warmup 2] [--cassandra]
                           [--out docs/benchmarks/clicks.md]

The suite runs as ``lookback up`` runs it (one process per service) on free
loopback ports, with the embedded SQLite store, or with ``--cassandra`` on a
real Cassandra started by scripts/cassandra.sh (``--cassandra-address
HOST:PORT`` uses a running one instead). The Go load generator
(bench/loadgen/) sends ``GET /v1/click?app_id=...&click_id=<prefix>-{seq}&gaid={uuid}``
in a closed loop at concurrency 1, 16 and 64 (one keep-alive connection per
caller), each for ``--duration`` seconds after ``--warmup`` seconds not
measured; every click is new. Afterwards the store is asked, by click id
(``FindTouches``, 1000 ids a call, 100 on Cassandra), which of the measured clicks it holds:
"stored clicks/s" counts those, not the answers.

Measured in the same run, for comparison: a bare grpc.aio echo server (the
Python client of bench.decisions) and a bare aiohttp server answering a
fixed JSON body (the same Go load generator).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import grpc
from aiohttp import web

from bench.decisions import (
    CONCURRENCIES,
    TIMEOUT,
    Result,
    Suite,
    load,
    running_suite,
)
from bench.echo_server import ECHO_METHOD
from bench.loadgen import LoadResult, run_loadgen
from lookback.api.store.v1 import touchpoint_store_service_pb2 as store_pb
from lookback.api.store.v1 import touchpoint_store_service_pb2_grpc as store_grpc
from lookback.core.server import install_signal_handlers
from lookback.testing.keys import admin_channel, admin_headers
from lookback.testing.processes import free_base_port, python_module

REPO = Path(__file__).resolve().parent.parent
# Click ids per FindTouches call: Cassandra reads each one apart, all at once.
BATCH = {"embedded SQLite": 1000, "Cassandra": 100}
_RETRY = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
# The targets (docs/performance.md): stored clicks/s at concurrency 64 by
# backend, the p99 there, and the p50 at concurrency 1 (milliseconds).
TARGET_RATE = {"embedded SQLite": 3000, "Cassandra": 1500}
TARGET_P99_C64, TARGET_P50_C1 = 50.0, 2.0


@dataclass(frozen=True)
class ClickRun:
    concurrency: int
    load: LoadResult
    stored: int  # the measured requests' clicks found in the store
    ok_status: int = 200
    """The answer that means done (a link's is its redirect, 302)."""

    @property
    def ok(self) -> int:
        return self.load.statuses.get(self.ok_status, 0)

    def row(self) -> str:
        d, lat = self.load.duration_s, self.load.latency
        share = f"{self.stored / self.ok:.1%}" if self.ok else "-"
        return (
            f"| {self.concurrency} | {self.ok / d:,.0f} | {self.stored / d:,.0f} | {share} "
            f"| {self.load.scheduled - self.ok:,} | {lat.p50:.2f} | {lat.p90:.2f} "
            f"| {lat.p99:.2f} | {lat.p99_9:.2f} | {lat.max:.2f} | {self.load.scheduled:,} |"
        )

    def failures(self) -> str:
        parts = [
            f"{n:,} HTTP {s}" for s, n in sorted(self.load.statuses.items()) if s != self.ok_status
        ]
        parts += [f"{n:,} {kind}" for kind, n in sorted(self.load.error_kinds.items())]
        if self.load.timeouts:
            parts.append(f"{self.load.timeouts:,} timeouts ({TIMEOUT:.0f} s)")
        return ", ".join(parts) or "none"


async def count_stored(
    store: store_grpc.TouchpointStoreServiceStub, app_id: str, ids: list[str], batch: int
) -> int:
    """How many of these click ids the store holds. A call the store could
    not answer in time (a busy Cassandra) is asked again, a few times."""
    found = 0
    for start in range(0, len(ids), batch):
        request = store_pb.FindTouchesRequest(app_id=app_id, click_ids=ids[start : start + batch])
        for attempt in range(5):
            try:
                answer = await store.FindTouches(request, timeout=120)
                break
            except grpc.aio.AioRpcError as exc:
                retry = exc.code() in (
                    grpc.StatusCode.UNAVAILABLE,
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                )
                if not retry or attempt == 4:
                    raise
                await asyncio.sleep(1.0)
        found += len({t.click_id for t in answer.touches})
    return found


async def create_app(gateway_url: str, app_id: str) -> None:
    async with aiohttp.ClientSession(headers=admin_headers()) as http:
        body = {"app_id": app_id, "platform": "android"}
        async with http.post(f"{gateway_url}/v1/apps", json=body) as r:
            if r.status != 201:
                raise RuntimeError(f"POST /v1/apps answered {r.status}: {await r.text()}")
        # One click through, answered and stored, before anything is measured.
        params = {"app_id": app_id, "media_source": "networka", "click_id": "first"}
        async with http.get(f"{gateway_url}/v1/click", params=params) as r:
            if r.status != 200:
                raise RuntimeError(f"GET /v1/click answered {r.status}: {await r.text()}")


async def measure(
    suite: Suite, backend: str, duration: float, warmup: float
) -> tuple[list[ClickRun], list[Result], list[LoadResult]]:
    app_id = f"com.bench.clicks.{uuid.uuid4().hex[:8]}"
    await create_app(suite.gateway_url, app_id)
    url = (
        f"{suite.gateway_url}/v1/click?app_id={app_id}&media_source=networka"
        "&campaign=bench&click_id={prefix}-{seq}&gaid={uuid}"
    )
    echo_process = await python_module("bench.echo_server", capture_stderr=False)
    http_echo_process = await python_module(
        "bench.clicks", "--serve-http-echo", capture_stderr=False
    )
    runs: list[ClickRun] = []
    echoes: list[Result] = []
    http_echoes: list[LoadResult] = []
    payload = b"x" * 200
    async with (
        grpc.aio.insecure_channel(echo_process.address) as echo_ch,
        admin_channel(suite.addr["touchpoint_store"]) as store_ch,
    ):
        echo = echo_ch.unary_unary(ECHO_METHOD)
        store = store_grpc.TouchpointStoreServiceStub(store_ch)
        for c in CONCURRENCIES:
            echoes.append(
                await load("bare gRPC echo", lambda i: echo(payload, timeout=TIMEOUT), c, duration)
            )
            http_echoes.append(
                await run_loadgen(
                    f"http://{http_echo_process.address}/v1/click?click_id={{seq}}",
                    concurrency=c,
                    duration=duration,
                    warmup=warmup,
                    timeout=TIMEOUT,
                )
            )
            prefix = f"k{c}-{uuid.uuid4().hex[:6]}"
            figures = await run_loadgen(
                url,
                concurrency=c,
                duration=duration,
                warmup=warmup,
                prefix=prefix,
                timeout=TIMEOUT,
            )
            ids = [f"{prefix}-{i}" for i in figures.measured_seqs]
            stored = await count_stored(store, app_id, ids, BATCH[backend])
            runs.append(ClickRun(c, figures, stored))
    await http_echo_process.stop()
    await echo_process.stop()
    return runs, echoes, http_echoes


def verdict(value: float, target: float, at_least: bool) -> str:
    met = value >= target if at_least else value <= target
    return "**met**" if met else "**not met**"


def report(
    backend: str,
    runs: list[ClickRun],
    echoes: list[Result],
    http_echoes: list[LoadResult],
    duration: float,
    warmup: float,
    load_average: tuple[float, float, float],
) -> str:
    lines = [
        f"Clicks through `GET /v1/click` on the HTTP gateway, {backend} store.",
        "",
        "| concurrency | answered 200/s | stored clicks/s | stored / 200s | not 200 "
        "| p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | requests |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        *[r.row() for r in runs],
        "",
        "Requests not answered 200: "
        + "; ".join(f"concurrency {r.concurrency}: {r.failures()}" for r in runs)
        + ".",
        "",
        "Measured in the same run, for comparison:",
        "",
        "| what | concurrency | calls/s | p50 ms | p99 ms |",
        "|---|---|---|---|---|",
    ]
    for e, h in zip(echoes, http_echoes, strict=True):
        lines.append(
            f"| bare gRPC echo (Python grpc.aio client) | {e.concurrency} | {e.rate:,.0f} "
            f"| {e.pct(0.5):.2f} | {e.pct(0.99):.2f} |"
        )
        lines.append(
            f"| bare aiohttp server (Go load generator) | {h.concurrency} | {h.ok_rate:,.0f} "
            f"| {h.latency.p50:.2f} | {h.latency.p99:.2f} |"
        )
    by_c = {r.concurrency: r for r in runs}
    c64, c1 = by_c[64], by_c[1]
    rate64 = c64.stored / c64.load.duration_s
    target = TARGET_RATE[backend]
    lines += [
        "",
        "Against the targets:",
        "",
        f"- stored clicks/s at concurrency 64 at least {target:,}: {rate64:,.0f}, "
        + verdict(rate64, target, at_least=True),
        f"- p99 at concurrency 64 at most {TARGET_P99_C64:.0f} ms: {c64.load.latency.p99:.1f} ms, "
        + verdict(c64.load.latency.p99, TARGET_P99_C64, at_least=False),
        f"- p50 at concurrency 1 at most {TARGET_P50_C1:.0f} ms: {c1.load.latency.p50:.2f} ms, "
        + verdict(c1.load.latency.p50, TARGET_P50_C1, at_least=False),
        "",
        f"Machine: {platform.platform()}, {os.cpu_count()} CPUs, load average "
        f"{load_average[0]:.2f} at the start, Python {platform.python_version()}, "
        f"aiohttp {aiohttp.__version__}, grpcio {grpc.__version__}"
        + ("; Cassandra on the same machine" if backend == "Cassandra" else "")
        + f". {duration:g} s per measurement after {warmup:g} s of warm-up (not counted);"
        " every click new (click id `<prefix>-{seq}`, a random `gaid`); one keep-alive"
        " connection per caller; latency of every answer, whatever its status;"
        " stored = the measured requests' click ids found in the store afterwards.",
    ]
    return "\n".join(lines)


async def run(duration: float, warmup: float, cassandra: str, gateways: int = 1) -> str:
    options: dict[str, object] = {"gateway_processes": gateways}
    if cassandra:
        options |= {"cassandra": cassandra, "cassandra_keyspace": "lookback_bench_clicks"}
    backend = "Cassandra" if cassandra else "embedded SQLite"
    load_average = os.getloadavg()
    async with running_suite(35_000, options, timeout=120) as suite:
        runs, echoes, http_echoes = await measure(suite, backend, duration, warmup)
    text = report(backend, runs, echoes, http_echoes, duration, warmup, load_average)
    return text + f"\n\nGateway processes sharing the HTTP port: {gateways}."


@contextmanager
def own_cassandra() -> Iterator[str]:
    """A Cassandra started by scripts/cassandra.sh on free ports, wiped at the end."""
    script = str(REPO / "scripts" / "cassandra.sh")
    directory = tempfile.mkdtemp(prefix="lookback-bench-cassandra-")
    base = free_base_port(39_000)  # a block of free ports: two are enough
    ports = ["--port", str(base + 1), "--storage-port", str(base + 2)]
    started = subprocess.run(
        [script, "start", "--dir", directory, *ports],
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        if started.returncode != 0:
            raise RuntimeError(f"cassandra.sh start failed:\n{started.stdout}{started.stderr}")
        yield f"127.0.0.1:{base + 1}"
    finally:
        subprocess.run([script, "wipe", "--dir", directory], capture_output=True, check=False)


async def serve_http_echo() -> None:
    """A bare aiohttp server answering every GET with a small JSON body."""

    async def answer(request: web.Request) -> web.Response:
        return web.json_response({"click_id": request.query.get("click_id", "")})

    app = web.Application()
    app.router.add_get("/v1/click", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    stop = asyncio.Event()
    install_signal_handlers(stop.set)
    print(f"listening on 127.0.0.1:{port}", flush=True)
    await stop.wait()
    await runner.cleanup()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up before each")
    parser.add_argument(
        "--cassandra", action="store_true", help="the store on Cassandra (scripts/cassandra.sh)"
    )
    parser.add_argument("--cassandra-address", default="", help="HOST:PORT of a running Cassandra")
    parser.add_argument(
        "--gateway-processes", type=int, default=1, help="gateway processes sharing the port"
    )
    parser.add_argument("--out", help="also write the report (markdown) to this file")
    parser.add_argument("--serve-http-echo", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_http_echo:
        asyncio.run(serve_http_echo())
        return 0
    if args.cassandra and not args.cassandra_address:
        with own_cassandra() as address:
            text = asyncio.run(run(args.duration, args.warmup, address, args.gateway_processes))
    else:
        text = asyncio.run(
            run(args.duration, args.warmup, args.cassandra_address, args.gateway_processes)
        )
    if args.out:
        Path(args.out).write_text(f"{text}\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
