"""What explanations cost, and how fast a what-if is.

    python -m bench.explain [--duration 10] [--rounds 2] [--concurrency 16]
                            [--installs 10000] [--out docs/benchmarks/explain.md]

1. DecideInstall throughput with the decider recording each decision's
   explanation, and with ``--explanations false``, in the same run,
   alternating, beside a bare grpc.aio echo server (``bench.outcomes.compare``);
   every install is new, with a click to find.
2. ``Simulate`` over ``--installs`` installs on the embedded store: the
   installs are decided first (half with a click 3 days old, half with one
   an hour old), then simulated under ``click_lookback=1d`` (half of them
   change) and under no change, each timed from the call to its last page.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from google.protobuf import field_mask_pb2

from bench.decisions import TIMEOUT, new_install, running_suite, seed_clicks
from bench.outcomes import Variant, ab_parser, compare, cost_lines, emit, header
from lookback.api.apps.v1 import app_settings_service_pb2_grpc as apps_grpc
from lookback.api.decider.v1 import decider_service_pb2 as decider_pb
from lookback.api.decider.v1 import decider_service_pb2_grpc as decider_grpc
from lookback.api.explain.v1 import explain_service_pb2 as explain_pb
from lookback.api.explain.v1 import explain_service_pb2_grpc as explain_grpc
from lookback.api.ingestion.v1 import ingestion_service_pb2_grpc as ingestion_grpc
from lookback.api.types.v1 import app_pb2
from lookback.core.convert import micros_to_dur, micros_to_ts
from lookback.domain.durations import DAY
from lookback.testing import builders
from lookback.testing.keys import admin_channel

VARIANTS = (
    Variant("DecideInstall, explanations on", {}),
    Variant("DecideInstall, explanations off", {"decider": ["--explanations", "false"]}),
)


async def simulate_timing(installs: int, concurrency: int) -> list[str]:
    """Rows of the Simulate table: each change, seconds, installs/s, pages, changed."""
    async with running_suite(33_500) as suite:
        async with (
            admin_channel(suite.addr["decider"]) as decider_ch,
            admin_channel(suite.addr["ingestion"]) as ingestion_ch,
        ):
            app_id = await builders.create_app(
                apps_grpc.AppSettingsServiceStub(decider_ch), builders.new_app_id("com.bench")
            )
            decider = decider_grpc.DeciderServiceStub(decider_ch)
            ingestion = ingestion_grpc.IngestionServiceStub(ingestion_ch)
            half = installs // 2
            now = int(time.time())
            await seed_clicks(ingestion, app_id, half, "old", now - 3 * 86400)
            await seed_clicks(ingestion, app_id, installs - half, "new", now - 3600)
            started = time.time()
            gate = asyncio.Semaphore(concurrency)

            async def decide(prefix: str, i: int) -> None:
                async with gate:
                    await decider.DecideInstall(
                        decider_pb.DecideInstallRequest(install=new_install(app_id, prefix, i)),
                        timeout=TIMEOUT,
                    )

            for prefix, n in (("old", half), ("new", installs - half)):
                await asyncio.gather(*(decide(prefix, i) for i in range(n)))
            stub = explain_grpc.ExplainServiceStub(decider_ch)
            rows = []
            shorter = app_pb2.AppSettings(click_lookback=micros_to_dur(DAY))
            for label, change, paths in (
                ("click_lookback=1d", shorter, ["click_lookback"]),
                ("no change", app_pb2.AppSettings(), []),
            ):
                request = explain_pb.SimulateRequest(
                    app_id=app_id,
                    settings=change,
                    update_mask=field_mask_pb2.FieldMask(paths=paths),
                    start_time=micros_to_ts(int((started - 60) * 1_000_000)),
                    page_size=500,
                )
                begin = time.perf_counter()
                pages = [p async for p in stub.Simulate(request)]
                took = time.perf_counter() - begin
                last = pages[-1]
                assert last.done and last.examined == installs, last
                rows.append(
                    f"| {label} | {last.examined:,} | {took:.2f} | {last.examined / took:,.0f}"
                    f" | {len(pages)} | {last.changed:,} | {last.not_replayable} |"
                )
                print(rows[-1], flush=True)
            return rows


async def run(args: argparse.Namespace) -> str:
    decisions, echoes = await compare(VARIANTS, args.rounds, args.duration, args.concurrency)
    simulated = await simulate_timing(args.installs, args.concurrency)
    lines = [
        *header(
            "What explanations cost, and how fast a what-if is",
            "bench.explain",
            args,
            f" --installs {args.installs}",
        ),
        "## Recording explanations",
        "",
        *cost_lines(decisions, echoes, VARIANTS, "recording the explanation"),
        "",
        "## Simulate on the embedded store",
        "",
        "| change | installs | seconds | installs/s | pages | changed | not replayable |",
        "|---|---|---|---|---|---|---|",
        *simulated,
        "",
        "The limit: 10,000 installs in under 10 s.",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = ab_parser(__doc__.splitlines()[0], rounds=2)
    parser.add_argument("--installs", type=int, default=10_000)
    args = parser.parse_args()
    return emit(asyncio.run(run(args)), args.out)


if __name__ == "__main__":
    raise SystemExit(main())
