"""``lookback report``: an app's counts as a table, over the ReportsService.

lookback report APP_ID [--since 24h | --from ISO [--to ISO]] [--bucket hour|day]
                       [--group-by media_source,campaign,kind] [--json]

``--target HOST:PORT`` is the postback dispatcher, which keeps the reports
(``lookback up``: 7405); ``--admin-key`` (or ``LOOKBACK_ADMIN_KEY``; an app's
``s2s`` key works for its own app) and the TLS flags as for the other tools.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from typing import Any

from lookback.api.reports.v1 import reports_service_pb2 as pb
from lookback.api.reports.v1 import reports_service_pb2_grpc as pb_grpc
from lookback.cli.options import add_admin_key, admin_key
from lookback.cli.tlsargs import add_tls_arguments, client_tls
from lookback.core import clients, convert, jsonapi
from lookback.core.clock import now_micros
from lookback.core.config import ConfigError
from lookback.core.errors import LookbackError
from lookback.domain.durations import parse_duration

COLUMNS = (
    "clicks",
    "impressions",
    "installs",
    "reattributions",
    "reinstalls",
    "reengagements",
    "events",
)


def table(answer: pb.GetReportResponse, group_by: Sequence[str], bucketed: bool) -> str:
    """The rows as an aligned text table: the bucket (when bucketed), the
    dimensions grouped by, every count, rejected touches and revenue."""
    head = [*(["bucket"] if bucketed else []), *group_by, *COLUMNS, "rejected", "revenue"]
    lines = [head]
    for row in answer.rows:
        cells: list[str] = []
        if bucketed:
            cells.append(row.bucket_start.ToJsonString().replace(":00:00Z", ":00Z"))
        cells += [getattr(row, d) or "-" for d in group_by]
        cells += [str(getattr(row, c)) for c in COLUMNS]
        cells.append(" ".join(f"{k}={v}" for k, v in sorted(row.rejected_touches.items())) or "-")
        cells.append(" ".join(f"{v} {k}" for k, v in sorted(row.revenue.items())) or "-")
        lines.append(cells)
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    numeric = {i for i, h in enumerate(head) if h in COLUMNS}
    out = []
    for line in lines:
        out.append(
            "  ".join(
                c.rjust(w) if i in numeric else c.ljust(w)
                for i, (c, w) in enumerate(zip(line, widths, strict=True))
            ).rstrip()
        )
    if not answer.rows:
        out.append("(nothing counted in this range)")
    return "\n".join(out)


async def _run(ns: argparse.Namespace) -> int:
    try:
        tls = client_tls(ns)
    except ConfigError as exc:
        print(f"lookback report: {exc}", file=sys.stderr)
        return 2
    group_by = [d for d in ns.group_by.split(",") if d]
    body: dict[str, Any] = {"app_id": ns.app_id, "group_by": group_by}
    if ns.bucket:
        body["bucket"] = ns.bucket
    channel = clients.channel(ns.target, tls)
    stub = clients.stub(pb_grpc.ReportsServiceStub, channel, 30.0, admin_key(ns, "lookback report"))
    try:
        request = jsonapi.parse(pb.GetReportRequest, body)
        if ns.start:
            request.start_time.FromJsonString(ns.start)
        else:
            request.start_time.CopyFrom(
                convert.micros_to_ts(now_micros() - parse_duration(ns.since))
            )
        if ns.end:
            request.end_time.FromJsonString(ns.end)
        answer = await stub.GetReport(request)
    except LookbackError as exc:
        print(f"lookback report: {exc.code.name}: {exc.message}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"lookback report: {exc}", file=sys.stderr)
        return 2
    finally:
        await channel.close()
    if ns.json:
        print(json.dumps(jsonapi.dump(answer, defaults=True), indent=2, sort_keys=True))
    else:
        print(
            f"{ns.app_id}: {answer.start_time.ToJsonString()} to {answer.end_time.ToJsonString()}"
        )
        print(table(answer, group_by, bool(ns.bucket)))
    return 0


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="lookback report", description=__doc__.splitlines()[0])
    parser.add_argument("app_id")
    parser.add_argument("--since", default="24h", help="how far back (default 24h)")
    parser.add_argument("--from", dest="start", default="", help="from this time (RFC 3339)")
    parser.add_argument("--to", dest="end", default="", help="up to this time (default: now)")
    parser.add_argument("--bucket", choices=("hour", "day"), default="", help="default: totals")
    parser.add_argument("--group-by", default="media_source", help="of media_source,campaign,kind")
    parser.add_argument("--json", action="store_true", help="the answer as JSON")
    parser.add_argument(
        "--target", default="127.0.0.1:7405", help="the postback dispatcher (lookback up: 7405)"
    )
    add_admin_key(parser)
    add_tls_arguments(parser)
    return asyncio.run(_run(parser.parse_args(argv)))
