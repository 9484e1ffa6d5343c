"""Erasure benchmark: one request erasing ``--devices`` devices on Cassandra,
through the whole path (the decider's PrivacyService, the store, the
postback dispatcher), timed from the request to ``completed``.

    python -m bench.erasure [--cassandra HOST:PORT] [--devices 10000]
                            [--settle 10] [--out docs/benchmarks/erasure.md]

Without ``--cassandra`` a node is started with scripts/cassandra.sh (and
wiped afterwards). The suite runs as ``lookback up`` runs it (one process per
service). Each device first gets a click, an install decided by that click
(with its postback) and, for every fourth device, an in-app event: the
erasure has touches, installs, decisions, events, log entries and queued
postbacks to remove. ``--settle`` is the decider's ``erasure_settle`` (the
wait between the two passes; the production default is 10 s) and is part
of the time measured. Afterwards a sample of the devices is read back
(AccessDevices): nothing may be left.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench.storage import REPO, start_cassandra
from lookback.api.apps.v1 import app_settings_service_pb2 as apps_pb
from lookback.api.apps.v1 import app_settings_service_pb2_grpc as apps_grpc
from lookback.api.decider.v1 import decider_service_pb2 as decider_pb
from lookback.api.decider.v1 import decider_service_pb2_grpc as decider_grpc
from lookback.api.ingestion.v1 import ingestion_service_pb2 as ingestion_pb
from lookback.api.ingestion.v1 import ingestion_service_pb2_grpc as ingestion_grpc
from lookback.api.privacy.v1 import privacy_service_pb2 as privacy_pb
from lookback.api.privacy.v1 import privacy_service_pb2_grpc as privacy_grpc
from lookback.api.types.v1 import device_pb2, erasure_pb2, install_pb2
from lookback.testing import builders
from lookback.testing.keys import ADMIN_KEY, admin_channel
from lookback.testing.processes import serve_suite

IN_FLIGHT = 32
SAMPLE = 100


async def populate(grpc_addresses: dict[str, str], app_id: str, gaids: list[str]) -> None:
    async with (
        admin_channel(grpc_addresses["ingestion"]) as ch,
        admin_channel(grpc_addresses["decider"]) as dch,
    ):
        ingestion = ingestion_grpc.IngestionServiceStub(ch)
        decider = decider_grpc.DeciderServiceStub(dch)
        for start in range(0, len(gaids), 500):
            clicks = [
                builders.click(app_id, g, ago=600, click_id=f"c{start + n}")
                for n, g in enumerate(gaids[start : start + 500])
            ]
            await ingestion.RecordTouches(ingestion_pb.RecordTouchesRequest(touches=clicks))
        limit = asyncio.Semaphore(IN_FLIGHT)

        async def one(n: int, gaid: str) -> None:
            async with limit:
                install = builders.install(app_id, f"i{n}", gaid=gaid)
                await decider.DecideInstall(decider_pb.DecideInstallRequest(install=install))
                if n % 4 == 0:
                    event = install_pb2.InAppEvent(
                        app_id=app_id, install_id=f"i{n}", event_id=f"e{n}", name="purchase"
                    )
                    event.occurred_at.GetCurrentTime()
                    await decider.AttributeEvent(decider_pb.AttributeEventRequest(event=event))

        await asyncio.gather(*(one(n, g) for n, g in enumerate(gaids)))


async def erase(decider: str, app_id: str, gaids: list[str]) -> tuple[float, erasure_pb2.Erasure]:
    async with admin_channel(decider) as channel:
        privacy = privacy_grpc.PrivacyServiceStub(channel)
        devices = [device_pb2.DeviceIdentifiers(gaid=g) for g in gaids]
        began = time.monotonic()
        created = await privacy.CreateErasure(
            privacy_pb.CreateErasureRequest(app_id=app_id, devices=devices)
        )
        shown = -1
        while True:
            got = (
                await privacy.GetErasure(
                    privacy_pb.GetErasureRequest(
                        app_id=app_id, erasure_id=created.erasure.erasure_id
                    )
                )
            ).erasure
            if got.devices_done != shown:
                shown = got.devices_done
                print(
                    f"  {time.monotonic() - began:6.1f} s: {got.devices_done}/{got.devices}",
                    file=sys.stderr,
                )
            if got.state == erasure_pb2.ERASURE_STATE_COMPLETED:
                return time.monotonic() - began, got
            await asyncio.sleep(0.2)


async def left_over(decider: str, app_id: str, gaids: list[str]) -> int:
    """Records still found for a sample of the erased devices (must be 0)."""
    async with admin_channel(decider) as channel:
        privacy = privacy_grpc.PrivacyServiceStub(channel)
        found = 0
        for g in gaids[:SAMPLE]:
            seen = await privacy.AccessDevices(
                privacy_pb.AccessDevicesRequest(
                    app_id=app_id, devices=[device_pb2.DeviceIdentifiers(gaid=g)]
                )
            )
            r = seen.records
            found += len(r.touches) + len(r.installs) + len(r.decisions) + len(r.events)
        return found


async def run(cassandra: str, devices: int, settle: float, data: Path) -> str:
    env = {
        "LOOKBACK_ADMIN_KEYS": ADMIN_KEY,
        "LOOKBACK_ERASURE_SETTLE": str(settle),
        # Postbacks go to a loopback port nothing listens on: they fail and
        # stay queued, for the erasure to cancel.
        "LOOKBACK_OUTBOUND_ALLOW_CIDRS": "127.0.0.0/8",
        "LOOKBACK_LOG_LEVEL": "INFO",
    }
    suite = await serve_suite(
        data, env=env, cassandra=cassandra, cassandra_keyspace=f"erase_{uuid.uuid4().hex[:8]}"
    )
    try:
        app_id = builders.new_app_id("com.bench.erase")
        async with admin_channel(suite.grpc["decider"]) as channel:
            app = builders.app(app_id, postbacks={"networka": "http://127.0.0.1:9/pb?c={click_id}"})
            await apps_grpc.AppSettingsServiceStub(channel).CreateApp(
                apps_pb.CreateAppRequest(app=app)
            )
        gaids = [builders.new_gaid() for _ in range(devices)]
        began = time.monotonic()
        await populate(suite.grpc, app_id, gaids)
        populated = time.monotonic() - began
        took, erasure = await erase(suite.grpc["decider"], app_id, gaids)
        left = await left_over(suite.grpc["decider"], app_id, gaids)
    finally:
        await suite.stop()
    phases = [
        line.split("completed in ", 1)[1]
        for line in suite.outputs()["decider"].splitlines()
        if f"erasure {erasure.erasure_id} of" in line
    ]
    e = erasure.erased
    return "\n".join(
        [
            "# Erasure benchmark",
            "",
            f"`python -m bench.erasure --devices {devices} --settle {settle:g}`"
            f" on {platform.node()} ({platform.processor() or platform.machine()},"
            f" Python {platform.python_version()}), {time.strftime('%Y-%m-%d')}.",
            "",
            f"- Devices: {devices} in one request; set up in {populated:.0f} s"
            f" ({devices} clicks, {devices} installs decided, {(devices + 3) // 4} events).",
            f"- **Erased in {took:.1f} s** from the request to `completed`"
            f" (each chunk's second pass waits {settle:g} s after its first; the passes overlap).",
            f"- Removed: {e.touches} touches, {e.installs} installs, {e.decisions} decisions,"
            f" {e.events} events; {e.postbacks} queued postbacks cancelled.",
            f"- Records found afterwards for {min(SAMPLE, devices)} of the devices: {left}.",
            f"- The decider's account: {phases[-1] if phases else '(not logged)'}.",
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cassandra", default="", help="HOST:PORT of a running Cassandra")
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--settle", type=float, default=10.0)
    parser.add_argument("--out", help="also write the report (markdown) here")
    args = parser.parse_args()
    ours = None
    cassandra = args.cassandra
    with tempfile.TemporaryDirectory(prefix="lookback-bench-erasure-") as data:
        if not cassandra:
            ours = Path(tempfile.mkdtemp(prefix="lookback-bench-cassandra-"))
            cassandra, _ = start_cassandra(ours, "v2")
        try:
            text = asyncio.run(run(cassandra, args.devices, args.settle, Path(data)))
        finally:
            if ours is not None:
                subprocess.run(
                    [str(REPO / "scripts" / "cassandra.sh"), "wipe", "--dir", str(ours)],
                    check=False,
                )
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
