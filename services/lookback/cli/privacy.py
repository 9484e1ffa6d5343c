"""``lookback erase``, ``lookback erasure`` and ``lookback access``: data-subject
requests, over the decider's PrivacyService (docs/privacy.md).

lookback erase APP_ID DEVICE... [--wait [--timeout 600]] [--json]
    erase the app's records of a device (or of the devices of --devices):
    prints the request's id and state; with --wait, its progress on standard
    error until it has completed, then what it erased
lookback erase --all-apps DEVICE... [--wait] [--json]
    the same from every app (the admin key)
lookback erasure APP_ID ERASURE_ID [--json]
lookback erasure --all-apps ERASURE_ID [--json]
    one erasure request: its state, progress and counts
lookback access APP_ID DEVICE...
    every stored record of the device(s), as JSON

DEVICE is the identifiers of one device, raw (``--gaid``, ``--idfa``,
``--idfv``, ``--oaid``, ``--android-id``, ``--imei``, ``--fire-id``) or hashed
(``--sha1-gaid HEX``, ``--md5-idfa HEX``, ...: ``--<sha1|md5>-<type>``), and/or
``--devices FILE``: a JSON list of devices as the HTTP API takes them
(``[{"gaid": "..."}, {"hashed": [{"type": "idfa", "algorithm": "sha1",
"value": "..."}]}]``). ``--target HOST:PORT`` is the decider (``lookback up``:
7402); ``--admin-key`` (or ``LOOKBACK_ADMIN_KEY``; an app's ``s2s`` key works
for its own app, not with ``--all-apps``) and the TLS flags as for the other
tools.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lookback.api.privacy.v1 import privacy_service_pb2 as pb
from lookback.api.privacy.v1 import privacy_service_pb2_grpc as pb_grpc
from lookback.api.types.v1 import device_pb2, erasure_pb2
from lookback.cli.options import add_admin_key, admin_key
from lookback.cli.tlsargs import add_tls_arguments, client_tls
from lookback.core import clients
from lookback.core.config import ConfigError
from lookback.core.errors import InvalidArgument, LookbackError
from lookback.gateway.http import (
    ERASURE_COUNTS,
    MAX_ACCESS_DEVICES,
    MAX_ERASURE_DEVICES,
    erasure_json,
    parse_devices,
    records_json,
)

ID_TYPES = ("gaid", "idfa", "idfv", "oaid", "android_id", "imei", "fire_id")
"""The raw identifiers a device may be named by (DeviceIdentifiers)."""
ALGORITHMS = ("sha1", "md5")
POLL_INTERVAL = 0.5
"""Seconds between two reads of a pending erasure (``--wait``)."""


def _add_device_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("the device (its identifiers, raw or hashed)")
    for name in ID_TYPES:
        group.add_argument("--" + name.replace("_", "-"), dest=name, default="", metavar="ID")
    for algorithm in ALGORITHMS:
        for name in ID_TYPES:
            group.add_argument(
                f"--{algorithm}-{name.replace('_', '-')}",
                dest=f"{algorithm}_{name}",
                default="",
                metavar="HEX",
                help=argparse.SUPPRESS if name != "gaid" else f"({algorithm} of any type likewise)",
            )
    group.add_argument(
        "--devices",
        default="",
        metavar="FILE",
        help='a JSON list of devices, as the HTTP API takes them ([{"gaid": "..."}, ...])',
    )


def device_of_flags(ns: argparse.Namespace) -> dict[str, Any] | None:
    """The device the identifier flags name, as the HTTP API's JSON; None if none."""
    device: dict[str, Any] = {name: getattr(ns, name) for name in ID_TYPES if getattr(ns, name)}
    hashed = [
        {"type": name, "algorithm": algorithm, "value": getattr(ns, f"{algorithm}_{name}")}
        for algorithm in ALGORITHMS
        for name in ID_TYPES
        if getattr(ns, f"{algorithm}_{name}")
    ]
    if hashed:
        device["hashed"] = hashed
    return device or None


def devices_of(ns: argparse.Namespace, limit: int) -> list[device_pb2.DeviceIdentifiers]:
    """The devices the command names (``--devices`` then the flags' one),
    validated as the HTTP API validates them; ValueError naming what is wrong."""
    listed: list[Any] = []
    if ns.devices:
        try:
            data = json.loads(Path(ns.devices).read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"--devices {ns.devices}: cannot read JSON: {exc}") from exc
        if isinstance(data, dict) and set(data) == {"devices"}:
            data = data["devices"]  # a whole HTTP body works too
        if not isinstance(data, list):
            raise ValueError(f"--devices {ns.devices}: must be a JSON list of devices")
        listed += data
    flags = device_of_flags(ns)
    if flags is not None:
        listed.append(flags)
    if not listed:
        raise ValueError("name a device (--gaid ID, --sha1-idfa HEX, ...) or --devices FILE")
    try:
        return parse_devices({"devices": listed}, limit)
    except InvalidArgument as exc:
        where = f" (in --devices {ns.devices}; the flags' device is the last)" if ns.devices else ""
        problems = "; ".join(f"{v.field}: {v.description}" for v in exc.violations[:10])
        more = f" (and {len(exc.violations) - 10} more)" if len(exc.violations) > 10 else ""
        raise ValueError(f"{problems}{more}{where}") from exc


def describe(erasure: erasure_pb2.Erasure) -> str:
    """An erasure request in a line or two: id, app, state, progress, counts
    (once completed)."""
    shown = erasure_json(erasure)
    whose = "every app" if erasure.all_apps else f"app {erasure.app_id}"
    line = (
        f"erasure {erasure.erasure_id} ({whose}): {shown['state']},"
        f" {erasure.devices_done}/{erasure.devices} devices"
    )
    if erasure.runs > 1:
        line += f" (run {erasure.runs})"
    if erasure.state == erasure_pb2.ERASURE_STATE_COMPLETED:
        counts = ", ".join(f"{shown['erased'][name]} {name}" for name in ERASURE_COUNTS)
        line += f"\n  erased: {counts}"
    return line


def _print(erasure: erasure_pb2.Erasure, as_json: bool) -> None:
    if as_json:
        print(json.dumps(erasure_json(erasure), indent=2, sort_keys=True))
    else:
        print(describe(erasure))


async def wait_for(
    stub: Any,
    erasure: erasure_pb2.Erasure,
    timeout: float,
    interval: float = POLL_INTERVAL,
    progress: bool = True,
) -> erasure_pb2.Erasure:
    """Read the erasure again every ``interval`` seconds until it has
    completed (its progress on standard error when it changes); TimeoutError
    after ``timeout`` seconds, with the last state read."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    shown = None
    request = pb.GetErasureRequest(app_id=erasure.app_id, erasure_id=erasure.erasure_id)
    while erasure.state != erasure_pb2.ERASURE_STATE_COMPLETED:
        if progress and (erasure.devices_done, erasure.devices) != shown:
            shown = (erasure.devices_done, erasure.devices)
            print(f"\r{shown[0]}/{shown[1]} devices erased", end="", file=sys.stderr, flush=True)
        if loop.time() >= deadline:
            raise TimeoutError(erasure)
        await asyncio.sleep(min(interval, max(0.0, deadline - loop.time())))
        erasure = (await stub.GetErasure(request)).erasure
    if progress and shown is not None:  # the last progress, and the line ended
        last = (erasure.devices_done, erasure.devices)
        end = "" if last == shown else f"\r{last[0]}/{last[1]} devices erased"
        print(end, file=sys.stderr)
    return erasure


def _stub(ns: argparse.Namespace, tool: str) -> tuple[Any, Any] | None:
    try:
        tls = client_tls(ns)
    except ConfigError as exc:
        print(f"{tool}: {exc}", file=sys.stderr)
        return None
    key = admin_key(ns, tool)
    channel = clients.channel(ns.target, tls)
    return channel, clients.stub(pb_grpc.PrivacyServiceStub, channel, 30.0, key)


async def _erase(ns: argparse.Namespace) -> int:
    tool = "lookback erase"
    try:
        devices = devices_of(ns, MAX_ERASURE_DEVICES)
    except ValueError as exc:
        print(f"{tool}: {exc}", file=sys.stderr)
        return 2
    opened = _stub(ns, tool)
    if opened is None:
        return 2
    channel, stub = opened
    try:
        answer = await stub.CreateErasure(
            pb.CreateErasureRequest(app_id=ns.app_id, all_apps=ns.all_apps, devices=devices)
        )
        erasure = answer.erasure
        if not ns.wait or erasure.state == erasure_pb2.ERASURE_STATE_COMPLETED:
            _print(erasure, ns.json)
            return 0
        if not ns.json:
            print(describe(erasure), flush=True)
        try:
            erasure = await wait_for(stub, erasure, ns.timeout, progress=not ns.json)
        except TimeoutError as exc:
            last = exc.args[0]
            print(
                f"\n{tool}: still {erasure_json(last)['state']} after {ns.timeout:g}s"
                f" ({last.devices_done}/{last.devices} devices);"
                f" `lookback erasure {last.app_id or '--all-apps'} {last.erasure_id}` shows it",
                file=sys.stderr,
            )
            return 1
        _print(erasure, ns.json)
        return 0
    except LookbackError as exc:
        print(f"{tool}: {exc.code.name}: {exc.message}", file=sys.stderr)
        return 1
    finally:
        await channel.close()


async def _erasure(ns: argparse.Namespace) -> int:
    tool = "lookback erasure"
    opened = _stub(ns, tool)
    if opened is None:
        return 2
    channel, stub = opened
    try:
        answer = await stub.GetErasure(
            pb.GetErasureRequest(app_id=ns.app_id, erasure_id=ns.erasure_id)
        )
    except LookbackError as exc:
        print(f"{tool}: {exc.code.name}: {exc.message}", file=sys.stderr)
        return 1
    finally:
        await channel.close()
    _print(answer.erasure, ns.json)
    return 0


async def _access(ns: argparse.Namespace) -> int:
    tool = "lookback access"
    try:
        devices = devices_of(ns, MAX_ACCESS_DEVICES)
    except ValueError as exc:
        print(f"{tool}: {exc}", file=sys.stderr)
        return 2
    opened = _stub(ns, tool)
    if opened is None:
        return 2
    channel, stub = opened
    try:
        answer = await stub.AccessDevices(
            pb.AccessDevicesRequest(app_id=ns.app_id, devices=devices)
        )
    except LookbackError as exc:
        print(f"{tool}: {exc.code.name}: {exc.message}", file=sys.stderr)
        return 1
    finally:
        await channel.close()
    print(json.dumps(records_json(answer.records), indent=2, sort_keys=True))
    return 0


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--target", default="127.0.0.1:7402", help="the decider (lookback up: 7402)"
    )
    add_admin_key(parser)
    add_tls_arguments(parser)


def _run(main: Any, ns: argparse.Namespace, tool: str) -> int:
    try:
        return int(asyncio.run(main(ns)))
    except KeyboardInterrupt:
        print(f"\n{tool}: interrupted", file=sys.stderr)
        return 130


def erase_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="lookback erase", description="erase an app's (or every app's) records of devices"
    )
    parser.add_argument("app_id", nargs="?", default="", help="the app (not with --all-apps)")
    parser.add_argument(
        "--all-apps", action="store_true", help="every app's records (the admin key)"
    )
    _add_device_flags(parser)
    parser.add_argument(
        "--wait", action="store_true", help="until it has completed (progress on stderr)"
    )
    parser.add_argument(
        "--timeout", type=float, default=600.0, help="seconds --wait waits at most (600)"
    )
    parser.add_argument("--json", action="store_true", help="the request as JSON")
    _common(parser)
    ns = parser.parse_args(argv)
    if bool(ns.app_id) == ns.all_apps:
        parser.error("give APP_ID or --all-apps (not both)")
    return _run(_erase, ns, "lookback erase")


def erasure_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="lookback erasure", description="one erasure request: its state and counts"
    )
    parser.add_argument(
        "ids", nargs="+", metavar="APP_ID ERASURE_ID", help="(--all-apps: ERASURE_ID)"
    )
    parser.add_argument("--all-apps", action="store_true", help="an every-app request (admin)")
    parser.add_argument("--json", action="store_true", help="the request as JSON")
    _common(parser)
    ns = parser.parse_args(argv)
    if len(ns.ids) != (1 if ns.all_apps else 2):
        parser.error("give APP_ID ERASURE_ID, or --all-apps ERASURE_ID")
    ns.app_id, ns.erasure_id = ("", ns.ids[0]) if ns.all_apps else ns.ids
    return _run(_erasure, ns, "lookback erasure")


def access_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="lookback access", description="every stored record of devices, as JSON"
    )
    parser.add_argument("app_id")
    _add_device_flags(parser)
    _common(parser)
    return _run(_access, parser.parse_args(argv), "lookback access")
