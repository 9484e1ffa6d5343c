"""``lookback.reports.v1.ReportsService``: reports read from the counts."""

from __future__ import annotations

from dataclasses import dataclass

from lookback.api.reports.v1 import reports_service_pb2 as pb
from lookback.api.reports.v1 import reports_service_pb2_grpc as pb_grpc
from lookback.core import auth, convert
from lookback.core import validation as check
from lookback.core.clock import now_micros
from lookback.core.errors import Violations
from lookback.domain import reports
from lookback.domain.durations import DAY
from lookback.reports.counts import ReportCounts

RULES = auth.rules_for(
    pb.DESCRIPTOR.services_by_name["ReportsService"],
    GetReport=auth.app_rule(auth.S2S, lambda r: (r.app_id,)),
)
"""An app's own backend (``s2s``) reads its app's reports; the admin all."""

MAX_RANGE = 366 * DAY
"""Longest range one report may span."""

BUCKETS = {
    pb.REPORT_BUCKET_UNSPECIFIED: "",
    pb.REPORT_BUCKET_HOUR: "hour",
    pb.REPORT_BUCKET_DAY: "day",
}
DIMENSIONS = {
    pb.REPORT_DIMENSION_MEDIA_SOURCE: "media_source",
    pb.REPORT_DIMENSION_CAMPAIGN: "campaign",
    pb.REPORT_DIMENSION_KIND: "kind",
}


def report_query(r: pb.GetReportRequest) -> tuple[int, int, str, list[str]]:
    """The request's range in whole hours, bucket and dimensions, validated."""
    v = Violations()
    check.check_id(v, r.app_id, "app_id")
    end = convert.ts_to_micros(r.end_time) if r.HasField("end_time") else now_micros()
    start = convert.ts_to_micros(r.start_time) if r.HasField("start_time") else end - DAY
    if start >= end:
        v.add("start_time", "must be before end_time")
    elif end - start > MAX_RANGE:
        v.add("start_time", f"the range may span at most {MAX_RANGE // DAY} days")
    if r.bucket not in BUCKETS:
        v.add("bucket", "must be REPORT_BUCKET_HOUR, REPORT_BUCKET_DAY or unset (a total)")
    dims: list[str] = []
    for i, d in enumerate(r.group_by):
        name = DIMENSIONS.get(d)
        if name is None:
            v.add(f"group_by[{i}]", "must be MEDIA_SOURCE, CAMPAIGN or KIND")
        elif name in dims:
            v.add(f"group_by[{i}]", f"{name} is named twice")
        else:
            dims.append(name)
    v.raise_if_any()
    first, last = reports.range_hours(start, end)
    return first, last, BUCKETS[r.bucket], dims


def row_message(row: reports.Row) -> pb.ReportRow:
    message = pb.ReportRow(
        bucket_start=convert.micros_to_ts(row.bucket_start),
        media_source=row.media_source,
        campaign=row.campaign,
        kind=row.kind,
        rejected_touches=row.rejected,
        revenue={k: reports.revenue_text(v) for k, v in row.revenue.items()},
    )
    for name in reports.COUNTS:
        setattr(message, name, row.counts.get(name, 0))
    return message


@dataclass
class ReportsServicer(pb_grpc.ReportsServiceServicer):
    counts: ReportCounts

    async def GetReport(
        self, request: pb.GetReportRequest, context: object
    ) -> pb.GetReportResponse:
        first, last, bucket, dims = report_query(request)
        cells = await self.counts.cells(request.app_id, first, last)
        return pb.GetReportResponse(
            rows=[row_message(r) for r in reports.rows(cells, bucket, dims, first, last)],
            start_time=convert.micros_to_ts(first),
            end_time=convert.micros_to_ts(last),
        )
