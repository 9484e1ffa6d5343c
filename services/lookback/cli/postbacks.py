"""``lookback postbacks``: dead letters for operators, over the dispatcher's RPCs.

lookback postbacks dead   [--target HOST:PORT] [--limit N]   list dead letters (JSON lines)
lookback postbacks show   JOB_ID [--target HOST:PORT]        one job's state (JSON)
lookback postbacks replay JOB_ID [--target HOST:PORT]        queue a dead letter again
lookback postbacks partners [--target HOST:PORT] [--json]     each partner lane: queued, in
                                                              flight, share, circuit, delays

Each presents ``--admin-key`` (or ``LOOKBACK_ADMIN_KEY``).
Over (mutual) TLS with --tls-ca/--tls-cert/--tls-key or LOOKBACK_TLS_*.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence

import grpc
from google.protobuf import json_format

from lookback.api.postback.v1 import postback_dispatcher_service_pb2 as pb
from lookback.api.postback.v1 import postback_dispatcher_service_pb2_grpc as pb_grpc
from lookback.cli.options import add_admin_key, admin_key
from lookback.cli.tlsargs import add_tls_arguments, client_tls
from lookback.core import clients
from lookback.core.config import ConfigError


def _print(message: object) -> None:
    text = json_format.MessageToDict(message, preserving_proto_field_name=True)  # type: ignore[arg-type]
    print(json.dumps(text, sort_keys=True))


def _seconds(d: object) -> str:
    value = d.ToNanoseconds() / 1e9  # type: ignore[attr-defined]
    return f"{value * 1000:.0f}ms" if value < 10 else f"{value:.1f}s"


def status(lane: pb.PartnerLane) -> str:
    """One word for an operator: what is wrong with the lane, if anything."""
    if lane.circuit == pb.CIRCUIT_STATE_OPEN:
        return "broken (circuit open)"
    if lane.circuit == pb.CIRCUIT_STATE_HALF_OPEN:
        return "probing"
    if lane.paced_in_flight:
        return "paced (429)"
    if lane.consecutive_failures:
        return "failing"
    if lane.HasField("attempt_latency") and lane.attempt_latency.ToNanoseconds() >= 1e9:
        return "slow"
    return "ok"


COLUMNS = (
    "PARTNER",
    "HOST",
    "STATUS",
    "QUEUED",
    "IN FLIGHT",
    "SHARE",
    "LATENCY",
    "DELAY P50",
    "DELAY P99",
    "DELIVERED",
    "RETRIED",
    "DEAD",
    "LAST ERROR",
)


def table(lanes: Sequence[pb.PartnerLane]) -> str:
    """The lanes as aligned columns, a lane a line."""
    rows = [COLUMNS] + [
        (
            lane.partner or "-",
            lane.host or "-",
            status(lane),
            str(lane.queued),
            str(lane.in_flight),
            str(lane.share),
            _seconds(lane.attempt_latency) if lane.HasField("attempt_latency") else "-",
            _seconds(lane.delay_p50) if lane.HasField("delay_p50") else "-",
            _seconds(lane.delay_p99) if lane.HasField("delay_p99") else "-",
            str(lane.delivered),
            str(lane.retried),
            str(lane.dead),
            lane.last_error or "-",
        )
        for lane in lanes
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows
    )


async def _run(ns: argparse.Namespace) -> int:
    key = admin_key(ns, "lookback postbacks")
    try:
        tls = client_tls(ns)
    except ConfigError as exc:
        print(f"lookback postbacks: {exc}", file=sys.stderr)
        return 2
    async with clients.channel(ns.target, tls, key=key) as channel:
        stub = pb_grpc.PostbackDispatcherServiceStub(channel)
        try:
            if ns.action == "dead":
                listed = await stub.ListDeadLetters(
                    pb.ListDeadLettersRequest(page_size=ns.limit), timeout=30
                )
                for dead in listed.dead_letters:
                    _print(dead)
            elif ns.action == "partners":
                lanes = (
                    await stub.ListPartnerLanes(pb.ListPartnerLanesRequest(), timeout=30)
                ).lanes
                if ns.json:
                    for lane in lanes:
                        _print(lane)
                else:
                    print(table(lanes))
            elif ns.action == "show":
                _print(
                    await stub.GetPostbackJob(
                        pb.GetPostbackJobRequest(job_id=ns.job_id), timeout=30
                    )
                )
            else:
                replayed = await stub.ReplayDeadLetter(
                    pb.ReplayDeadLetterRequest(job_id=ns.job_id), timeout=30
                )
                _print(replayed.status)
        except grpc.aio.AioRpcError as exc:
            print(
                f"lookback postbacks {ns.action}: {exc.code().name}: {exc.details()}",
                file=sys.stderr,
            )
            return 1
    return 0


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="lookback postbacks", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True)
    for action, help_text in [
        ("dead", "list dead letters, oldest first"),
        ("show", "show one job"),
        ("replay", "queue a dead letter again"),
        ("partners", "each partner lane: queued, in flight, share, circuit, delays"),
    ]:
        p = sub.add_parser(action, help=help_text)
        if action == "dead":
            p.add_argument("--limit", type=int, default=100, help="at most this many (1-1000)")
        elif action == "partners":
            p.add_argument("--json", action="store_true", help="JSON lines, a lane each")
        else:
            p.add_argument("job_id")
        p.add_argument(
            "--target", default="127.0.0.1:7405", help="the postback dispatcher (lookback up: 7405)"
        )
        add_admin_key(p)
        add_tls_arguments(p)
    return asyncio.run(_run(parser.parse_args(argv)))
