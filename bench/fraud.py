"""What the fraud settings cost a decision: DecideInstall throughput for an
app with ``max_ctit`` and a blocklist of 10,000 CIDRs, and for an app
without them, in the same run, alternating, beside a bare grpc.aio echo.

    python -m bench.fraud [--duration 10] [--rounds 3] [--concurrency 16]
                          [--out docs/benchmarks/fraud.md]

Every install is new with a click to find (``bench.outcomes.compare``). The
rules that need no setting (the bot list on the touch's user agent, the
address classes on the install's IP) run in both: this measures what the
settings add (each candidate looked up in the blocklist and checked against
``max_ctit``), not the whole of issue 14's rules.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import timeit

from bench.outcomes import Variant, ab_parser, compare, cost_lines, emit, header
from lookback.api.types.v1 import device_pb2
from lookback.core.convert import hash_raw_ids, micros_to_dur
from lookback.domain import addresses, devices, useragent
from lookback.domain.durations import DAY

BLOCKED = [f"198.18.{n // 128}.{(n % 128) * 2}/32" for n in range(5_000)] + [
    f"2001:db8:{2 * n:x}::/48" for n in range(5_000)
]
"""10,000 entries that never merge into fewer ranges (5,000 single IPv4
hosts, 5,000 IPv6 /48s), none of them the benchmark's touches' addresses."""

VARIANTS = (
    Variant(
        "DecideInstall, max_ctit and 10,000 blocked CIDRs",
        {},
        {"max_ctit": micros_to_dur(7 * DAY), "blocked_ips": BLOCKED},
    ),
    Variant("DecideInstall, no fraud settings", {}),
)


UA = "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124"
CANDIDATES = 3
"""Touches judged per decision (the benchmark's decisions judge one)."""


def always_on_us() -> float:
    """Microseconds per decision of the checks that need no setting: the bot
    list on each candidate's user agent, the address classes on the install's
    IP, and the store's hashing of the install's identifiers (SHA-1 and MD5)."""

    def one() -> None:
        for _ in range(CANDIDATES):
            useragent.is_bot(UA)
        addresses.shared_or_special("203.0.113.7")
        device = device_pb2.DeviceIdentifiers(gaid="38400000-8cf0-11bd-b23e-10b96e40000d")
        hash_raw_ids(device, devices.HASH_ALGORITHMS)

    n = 20_000
    runs = timeit.repeat(one, number=n, repeat=5)
    return min(runs) / n * 1e6


async def run(args: argparse.Namespace) -> str:
    decisions, echoes = await compare(VARIANTS, args.rounds, args.duration, args.concurrency)
    lines = [
        *header("What the fraud settings cost a decision", "bench.fraud", args),
        *cost_lines(decisions, echoes, VARIANTS, "the fraud settings", limit="5%"),
    ]
    per_decision = always_on_us()
    rates = [r.rate for r in decisions if r.name == VARIANTS[1].name]
    cpu_us = (os.cpu_count() or 1) / statistics.median(rates) * 1e6
    lines += [
        "",
        f"Checks that run in every decision whatever the settings (the bot list on"
        f" {CANDIDATES} candidates' user agents, the address classes on the install's IP,"
        f" the store hashing the install's identifiers): **{per_decision:.1f} µs** per decision,"
        f" against {cpu_us:,.0f} µs of CPU per decision in this run"
        f" ({os.cpu_count()} cores / {statistics.median(rates):,.0f} decisions/s):"
        f" **{per_decision / cpu_us:.2%}**.",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    args = ab_parser(__doc__.splitlines()[0], rounds=3).parse_args()
    return emit(asyncio.run(run(args)), args.out)


if __name__ == "__main__":
    raise SystemExit(main())
