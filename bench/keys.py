"""What checking keys costs: decisions per second with every key checked,
and with the checks off (``--require-keys false``), in the same run.

    python -m bench.keys [--duration 10] [--rounds 2] [--out docs/benchmarks/keys.md]

Two suites run as ``lookback up`` runs them (one process per service,
embedded SQLite store), one with keys required (the default) and one
without; they are measured in turns (on, off, on, off, ...) so that drift
of the machine falls on both. Each turn measures, at concurrency 16:

- ``DecideInstall`` on the decider (the admin key checked per call; the
  store call behind it checked too),
- the SDK's ``POST /v1/installs`` on the gateway with the app's ``sdk`` key
  (the gateway checks the app key, the decider and the store the gateway's
  admin key), by the Go load generator.

A bare gRPC echo is measured in each turn too, as the machine's yardstick.
The report gives the median of the turns and the cost (1 - off/on).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc

from bench.decisions import (
    HTTP_INSTALL,
    TIMEOUT,
    HttpResult,
    Result,
    Suite,
    hashed_gaid,
    load,
    running_suite,
    seed_gaid,
)
from bench.echo_server import ECHO_METHOD
from bench.loadgen import run_loadgen
from lookback.api.apps.v1 import app_settings_service_pb2 as apps_pb
from lookback.api.apps.v1 import app_settings_service_pb2_grpc as apps_grpc
from lookback.api.decider.v1 import decider_service_pb2 as decider_pb
from lookback.api.decider.v1 import decider_service_pb2_grpc as decider_grpc
from lookback.api.ingestion.v1 import ingestion_service_pb2 as ingestion_pb
from lookback.api.ingestion.v1 import ingestion_service_pb2_grpc as ingestion_grpc
from lookback.api.types.v1 import app_pb2, install_pb2, touch_pb2
from lookback.core.clients import key_metadata
from lookback.testing.keys import ADMIN_KEY, bearer
from lookback.testing.processes import python_module

CONCURRENCY = 16


@dataclass
class Target:
    """One running suite, its app and the way to call it."""

    label: str
    suite: Suite
    app_id: str
    sdk_key: str
    decider: decider_grpc.DeciderServiceStub
    ingestion: ingestion_grpc.IngestionServiceStub


@asynccontextmanager
async def target(label: str, first_port: int, require_keys: bool) -> AsyncIterator[Target]:
    env = {"LOOKBACK_REQUIRE_KEYS": "true" if require_keys else "false"}
    async with running_suite(first_port, env=env) as suite:
        async with (
            grpc.aio.insecure_channel(suite.addr["decider"]) as decider_ch,
            grpc.aio.insecure_channel(suite.addr["ingestion"]) as ingestion_ch,
        ):
            # Metadata per call, as a service's own stubs send it (no interceptor).
            md = key_metadata(ADMIN_KEY)
            apps = apps_grpc.AppSettingsServiceStub(decider_ch)
            app_id = f"com.bench.keys.{uuid.uuid4().hex[:8]}"
            created = await apps.CreateApp(
                apps_pb.CreateAppRequest(
                    app=app_pb2.App(app_id=app_id, platform=app_pb2.PLATFORM_ANDROID)
                ),
                metadata=md,
            )
            yield Target(
                label,
                suite,
                app_id,
                created.keys.sdk,
                decider_grpc.DeciderServiceStub(decider_ch),
                ingestion_grpc.IngestionServiceStub(ingestion_ch),
            )


async def seed(t: Target, n: int, prefix: str, http_devices: bool = False) -> None:
    md = key_metadata(ADMIN_KEY)
    clicked_at = int(time.time()) - 3600
    for start in range(0, n, 1000):
        batch = []
        for i in range(start, min(n, start + 1000)):
            touch = touch_pb2.Touch(
                app_id=t.app_id,
                type=touch_pb2.TOUCH_TYPE_CLICK,
                media_source="networka",
                click_id=f"{prefix}-{i}",
            )
            touch.device.gaid = seed_gaid(prefix, i) if http_devices else hashed_gaid(prefix, i)
            touch.engaged_at.FromSeconds(clicked_at)
            batch.append(touch)
        await t.ingestion.RecordTouches(
            ingestion_pb.RecordTouchesRequest(touches=batch), timeout=60, metadata=md
        )


async def turn(t: Target, duration: float, round_no: int) -> list[Result]:
    md = key_metadata(ADMIN_KEY)
    prefix = f"k{round_no}{uuid.uuid4().hex[:4]}"
    await seed(t, int(3000 * duration * 2), prefix)

    def install(i: int) -> install_pb2.Install:
        inst = install_pb2.Install(app_id=t.app_id, install_id=f"{prefix}-{i}")
        inst.device.gaid = hashed_gaid(prefix, i)
        return inst

    decided = await load(
        f"DecideInstall [{t.label}]",
        lambda i: t.decider.DecideInstall(
            decider_pb.DecideInstallRequest(install=install(i)), timeout=TIMEOUT, metadata=md
        ),
        CONCURRENCY,
        duration,
    )
    http_prefix = uuid.uuid4().hex[:8]
    await seed(t, int(2000 * (duration + 1)), http_prefix, http_devices=True)
    figures = await run_loadgen(
        f"{t.suite.gateway_url}/v1/installs",
        method="POST",
        body=HTTP_INSTALL.format(app_id=t.app_id),
        headers={"Content-Type": "application/json", **bearer(t.sdk_key)},
        concurrency=CONCURRENCY,
        duration=duration,
        warmup=1.0,
        prefix=http_prefix,
        timeout=TIMEOUT,
    )
    return [decided, HttpResult.of(f"POST /v1/installs [{t.label}]", figures)]


async def run(duration: float, rounds: int) -> str:
    echo_process = await python_module("bench.echo_server", capture_stderr=False)
    by_name: dict[str, list[Result]] = {}
    async with AsyncExitStack() as stack:
        on = await stack.enter_async_context(target("keys checked", 32_000, True))
        off = await stack.enter_async_context(target("keys off", 33_000, False))
        async with grpc.aio.insecure_channel(echo_process.address) as echo_ch:
            echo = echo_ch.unary_unary(ECHO_METHOD)
            payload = b"x" * 200
            for r, t in itertools.product(range(rounds), (on, off)):
                results = [
                    await load(
                        "bare echo",
                        lambda i: echo(payload, timeout=TIMEOUT),
                        CONCURRENCY,
                        duration,
                    ),
                    *await turn(t, duration, r),
                ]
                for result in results:
                    by_name.setdefault(result.name, []).append(result)
    await echo_process.stop()
    return report(by_name, duration, rounds)


def _median(results: list[Result]) -> float:
    return statistics.median(r.rate for r in results)


def report(by_name: dict[str, list[Result]], duration: float, rounds: int) -> str:
    lines = [
        f"Key checks on and off, {rounds} turns each of {duration:.0f} s at concurrency"
        f" {CONCURRENCY}, in turns (median of the turns; errors summed).",
        "",
        "| measurement | calls/s (median) | each turn | p50 ms | p99 ms | errors |",
        "|---|---:|---|---:|---:|---|",
    ]
    for name, results in by_name.items():
        errors: dict[str, int] = {}
        for r in results:
            for code, n in r.errors.items():
                errors[code] = errors.get(code, 0) + n
        each = ", ".join(f"{r.rate:,.0f}" for r in results)
        last = results[-1]
        lines.append(
            f"| {name} | {_median(results):,.0f} | {each} | {last.pct(0.5):.2f} "
            f"| {last.pct(0.99):.2f} | {errors or '-'} |"
        )
    lines.append("")
    for what in ("DecideInstall", "POST /v1/installs"):
        on = _median(by_name[f"{what} [keys checked]"])
        off = _median(by_name[f"{what} [keys off]"])
        lines.append(
            f"- {what}: {on:,.0f}/s with keys, {off:,.0f}/s without:"
            f" the checks cost {(1 - on / off) * 100:+.1f}%"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--rounds", type=int, default=2, help="turns per suite")
    parser.add_argument("--out", help="also write the report (markdown) to this file")
    args = parser.parse_args()
    text = asyncio.run(run(args.duration, args.rounds))
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
