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

from bench.outcomes import Variant, ab_parser, compare, cost_lines, emit, header
from lookback.core.convert import micros_to_dur
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


async def run(args: argparse.Namespace) -> str:
    decisions, echoes = await compare(VARIANTS, args.rounds, args.duration, args.concurrency)
    lines = [
        *header("What the fraud settings cost a decision", "bench.fraud", args),
        *cost_lines(decisions, echoes, VARIANTS, "the fraud settings", limit="5%"),
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    args = ab_parser(__doc__.splitlines()[0], rounds=3).parse_args()
    return emit(asyncio.run(run(args)), args.out)


if __name__ == "__main__":
    raise SystemExit(main())
