"""``lookback decisions``: read decisions back, over the decider's OutcomesService.

lookback decisions get APP_ID --install INSTALL_ID     an install's current decision
lookback decisions get APP_ID --decision DECISION_ID   one decision
lookback decisions list APP_ID [--since 1h] [--kind install,...] [--media-source S] [--limit N]
lookback decisions tail APP_ID [--cursor C] [--count N]   new decisions as they are made
lookback decisions tail --all [--cursor C] [--count N]    every app's (the admin key)

Each takes ``--target HOST:PORT`` (the decider; ``lookback up``: 7402),
``--admin-key`` (or ``LOOKBACK_ADMIN_KEY``; an app's ``s2s`` key works for its
own app) and the TLS flags. Output: JSON (one decision per line for list).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from typing import Any

import grpc

from lookback.api.outcomes.v1 import outcomes_service_pb2 as pb
from lookback.api.outcomes.v1 import outcomes_service_pb2_grpc as pb_grpc
from lookback.cli.options import add_admin_key, admin_key
from lookback.cli.tlsargs import add_tls_arguments, client_tls
from lookback.core import clients, convert, jsonapi
from lookback.core.clock import now_micros
from lookback.core.config import ConfigError
from lookback.core.errors import LookbackError
from lookback.domain.durations import parse_duration


async def _run(ns: argparse.Namespace) -> int:
    try:
        tls = client_tls(ns)
    except ConfigError as exc:
        print(f"lookback decisions: {exc}", file=sys.stderr)
        return 2
    channel = clients.channel(ns.target, tls)
    stub = clients.stub(
        pb_grpc.OutcomesServiceStub, channel, 30.0, admin_key(ns, "lookback decisions")
    )
    try:
        if ns.action == "tail":
            return await _tail(channel, ns)
        if ns.action == "get":
            out: Any
            if ns.decision:
                got = await stub.GetDecision(
                    pb.GetDecisionRequest(app_id=ns.app_id, decision_id=ns.decision)
                )
                out = jsonapi.dump(got.decision, defaults=True)
            else:
                found = await stub.GetInstall(
                    pb.GetInstallRequest(app_id=ns.app_id, install_id=ns.install)
                )
                out = jsonapi.dump(found)
            print(json.dumps(out, indent=2, sort_keys=True))
            return 0
        request = jsonapi.parse(
            pb.ListDecisionsRequest,
            {
                "app_id": ns.app_id,
                "kinds": [k for k in ns.kind.split(",") if k],
                "media_source": ns.media_source,
            },
        )
        request.start_time.CopyFrom(convert.micros_to_ts(now_micros() - parse_duration(ns.since)))
        printed = 0
        while printed < ns.limit:
            request.page_size = min(1000, ns.limit - printed)
            page = await stub.ListDecisions(request)
            for decision in page.decisions:
                print(json.dumps(jsonapi.dump(decision, defaults=True), sort_keys=True))
                printed += 1
            if not page.next_page_token:
                break
            request.page_token = page.next_page_token
    except LookbackError as exc:
        print(f"lookback decisions {ns.action}: {exc.code.name}: {exc.message}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"lookback decisions {ns.action}: {exc}", file=sys.stderr)
        return 2
    finally:
        await channel.close()
    return 0


async def _tail(channel: Any, ns: argparse.Namespace) -> int:
    """One JSON line per new decision or event attribution, with its
    ``cursor`` (give it to ``--cursor`` to go on after it); until Ctrl-C, or
    ``--count`` of them."""
    raw = pb_grpc.OutcomesServiceStub(channel)
    call = raw.WatchDecisions(
        pb.WatchDecisionsRequest(app_id="" if ns.all else ns.app_id, cursor=ns.cursor),
        metadata=clients.key_metadata(admin_key(ns, "lookback decisions")),
    )
    seen = 0
    try:
        await call.initial_metadata()  # the stream is in place: "from now" holds
        print(f"watching {'every app' if ns.all else ns.app_id}", file=sys.stderr, flush=True)
        async for entry in call:
            kind = "decision" if entry.HasField("decision") else "event"
            line = {
                "cursor": entry.cursor,
                "app_id": entry.app_id,
                kind: jsonapi.dump(getattr(entry, kind), defaults=True),
            }
            print(json.dumps(line, sort_keys=True), flush=True)
            seen += 1
            if ns.count and seen >= ns.count:
                break
    except grpc.aio.AioRpcError as exc:
        print(f"lookback decisions tail: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    finally:
        call.cancel()
    return 0


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="lookback decisions", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="action", required=True)
    get = sub.add_parser("get", help="an install's current decision, or one decision")
    which = get.add_mutually_exclusive_group(required=True)
    which.add_argument("--install", default="", help="the install's id")
    which.add_argument("--decision", default="", help="the decision's id")
    listing = sub.add_parser("list", help="an app's decisions, newest first")
    listing.add_argument("--since", default="24h", help="how far back (at most 31d)")
    listing.add_argument("--kind", default="", help="only these kinds, comma separated")
    listing.add_argument("--media-source", default="", help="only this media source")
    listing.add_argument("--limit", type=int, default=100, help="at most this many")
    tail = sub.add_parser("tail", help="new decisions as they are made (Ctrl-C stops)")
    tail.add_argument("--cursor", default="", help="go on after this cursor; default: from now")
    tail.add_argument("--count", type=int, default=0, help="stop after this many (0: never)")
    tail.add_argument("--all", action="store_true", help="every app (the admin key)")
    for name, p in sub.choices.items():
        p.add_argument("app_id", nargs="?" if name == "tail" else None, default="")
        p.add_argument("--target", default="127.0.0.1:7402", help="the decider (lookback up: 7402)")
        add_admin_key(p)
        add_tls_arguments(p)
    ns = parser.parse_args(argv)
    if ns.action == "tail" and not (ns.app_id or ns.all):
        parser.error("tail needs an APP_ID or --all")
    return asyncio.run(_run(ns))
