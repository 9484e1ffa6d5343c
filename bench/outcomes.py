"""What recording outcomes costs a decision: DecideInstall throughput with
the store's outcomes log (and decision index) on, and off, in the same run,
beside a bare grpc.aio echo server.

    python -m bench.outcomes [--duration 10] [--rounds 2] [--concurrency 16]
                             [--out docs/benchmarks/outcomes.md]

The suite runs as ``lookback up`` runs it (one process per service, the
embedded SQLite store) on free loopback ports, once per setting and round,
alternating (on, off, on, off, ...) so that a drift of the machine falls on
both; every install is new, with a click to find (as in bench/decisions.py).
"Off" is the store's ``--outcomes-log false``: no log entry, no decision
index, no touch entries, and so no feed, reports or relay; the decider still
renders the postback jobs and hands them over (the fast path).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from bench.decisions import (
    TIMEOUT,
    Result,
    load,
    new_install,
    running_suite,
    seed_clicks,
)
from bench.echo_server import ECHO_METHOD
from lookback.api.apps.v1 import app_settings_service_pb2_grpc as apps_grpc
from lookback.api.decider.v1 import decider_service_pb2 as decider_pb
from lookback.api.decider.v1 import decider_service_pb2_grpc as decider_grpc
from lookback.api.ingestion.v1 import ingestion_service_pb2_grpc as ingestion_grpc
from lookback.testing import builders
from lookback.testing.keys import admin_channel
from lookback.testing.processes import python_module


async def decide(
    name: str,
    flags: dict[str, list[str]],
    duration: float,
    concurrency: int,
    prefix: str,
    settings: dict[str, Any] | None = None,
) -> Result:
    """DecideInstall throughput of a suite started with ``flags`` (per
    service), for an app with ``settings`` (``AppSettings`` fields), every
    install new with a click to find."""
    async with running_suite(33_000, flags=flags) as suite:
        async with (
            admin_channel(suite.addr["decider"]) as decider_ch,
            admin_channel(suite.addr["ingestion"]) as ingestion_ch,
        ):
            app_id = await builders.create_app(
                apps_grpc.AppSettingsServiceStub(decider_ch),
                builders.new_app_id("com.bench"),
                **(settings or {}),
            )
            decider = decider_grpc.DeciderServiceStub(decider_ch)
            ingestion = ingestion_grpc.IngestionServiceStub(ingestion_ch)
            await seed_clicks(
                ingestion, app_id, int(3000 * duration * 2), prefix, int(time.time()) - 3600
            )
            await decider.DecideInstall(
                decider_pb.DecideInstallRequest(install=new_install(app_id, "warm", 0))
            )
            return await load(
                name,
                lambda i: decider.DecideInstall(
                    decider_pb.DecideInstallRequest(install=new_install(app_id, prefix, i)),
                    timeout=TIMEOUT,
                ),
                concurrency,
                duration,
            )


@dataclass(frozen=True)
class Variant:
    """One setting of an A/B comparison: its name and the suite's flags."""

    name: str
    flags: dict[str, list[str]]
    settings: dict[str, Any] | None = None
    """The app's ``AppSettings`` fields (none: the defaults)."""


async def compare(
    variants: tuple[Variant, Variant], rounds: int, duration: float, concurrency: int
) -> tuple[list[Result], list[Result]]:
    """Each variant once per round, alternating (a, b, a, b, ...) so that a
    drift of the machine falls on both, each after a bare echo run."""
    echo_process = await python_module("bench.echo_server", capture_stderr=False)
    decisions: list[Result] = []
    echoes: list[Result] = []
    payload = b"x" * 200
    try:
        async with grpc.aio.insecure_channel(echo_process.address) as channel:
            echo = channel.unary_unary(ECHO_METHOD)
            for n, (_, v) in enumerate(itertools.product(range(rounds), variants)):
                echoes.append(
                    await load(
                        "bare echo", lambda i: echo(payload, timeout=TIMEOUT), concurrency, duration
                    )
                )
                decisions.append(
                    await decide(v.name, v.flags, duration, concurrency, f"v{n}", v.settings)
                )
                print(decisions[-1].row(), flush=True)
    finally:
        await echo_process.stop()
    return decisions, echoes


def cost_lines(
    decisions: list[Result],
    echoes: list[Result],
    variants: tuple[Variant, Variant],
    what: str,
    limit: str = "10%",
) -> list[str]:
    """The results table and the cost of ``variants[0]`` against ``variants[1]``."""
    with_it = [r.rate for r in decisions if r.name == variants[0].name]
    without = [r.rate for r in decisions if r.name == variants[1].name]
    echo = statistics.median(r.rate for r in echoes)
    cost = 1 - statistics.median(with_it) / statistics.median(without)
    return [
        "| what | concurrency | calls/s | p50 ms | p99 ms | calls |",
        "|---|---|---|---|---|---|",
        *[r.row() for r in decisions],
        "",
        f"Median decisions/s: {variants[0].name} {statistics.median(with_it):,.0f},"
        f" {variants[1].name} {statistics.median(without):,.0f}: {what} costs"
        f" **{cost:.1%}** of the throughput (the limit is {limit}). Bare echo, same run:"
        f" {echo:,.0f} calls/s (median of {len(echoes)}); the first are"
        f" {statistics.median(with_it) / echo:.0%} of it.",
        "",
        f"Machine: {platform.platform()}, {os.cpu_count()} CPUs, Python"
        f" {platform.python_version()}, grpcio {grpc.__version__}.",
    ]


def variants(readers: bool) -> tuple[Variant, Variant]:
    off: dict[str, list[str]] = {"touchpoint_store": ["--outcomes-log", "false"]}
    on: dict[str, list[str]] = {}
    if not readers:  # the dispatcher without the log's consumers (relay, reports)
        on["postback"] = off["postback"] = ["--store-address", ""]
    return (
        Variant("DecideInstall, outcomes log on", on),
        Variant("DecideInstall, outcomes log off", off),
    )


async def run(args: argparse.Namespace) -> tuple[list[Result], list[Result]]:
    return await compare(
        variants(not args.no_readers), args.rounds, args.duration, args.concurrency
    )


def ab_parser(description: str, rounds: int) -> argparse.ArgumentParser:
    """The options every A/B benchmark takes (``--out`` included)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--out", default="")
    return parser


def header(title: str, module: str, args: argparse.Namespace, extra: str = "") -> list[str]:
    """A report's title and the command (with the time) that produced it."""
    return [
        f"# {title}",
        "",
        f"`python -m {module} --duration {args.duration:g} --rounds {args.rounds}"
        f" --concurrency {args.concurrency}{extra}`,"
        f" {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC.",
        "",
    ]


def emit(text: str, out: str) -> int:
    """Print a report, and write it to ``out`` when given."""
    print(text)
    if out:
        Path(out).write_text(text)
    return 0


NO_READERS = " --no-readers"


def report(decisions: list[Result], echoes: list[Result], args: argparse.Namespace) -> str:
    extra = NO_READERS if args.no_readers else ""
    lines = [
        *header("What recording outcomes costs a decision", "bench.outcomes", args, extra),
        *cost_lines(decisions, echoes, variants(not args.no_readers), "the outcomes log"),
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = ab_parser(__doc__.splitlines()[0], rounds=2)
    parser.add_argument(
        "--no-readers",
        action="store_true",
        help="run the dispatcher without the log's consumers (the relay, the reports)",
    )
    args = parser.parse_args()
    decisions, echoes = asyncio.run(run(args))
    return emit(report(decisions, echoes, args), args.out)


if __name__ == "__main__":
    raise SystemExit(main())
