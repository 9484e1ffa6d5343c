"""What each entry of the outcomes log counts in the reports: the log's
wire types translated to :mod:`lookback.domain.reports` counts."""

from __future__ import annotations

from dataclasses import dataclass

from lookback.api.store.v1 import touchpoint_store_service_pb2 as store_pb
from lookback.api.types.v1 import touch_pb2
from lookback.core.convert import KIND, REASON, ts_to_micros
from lookback.domain import model, reports


@dataclass(frozen=True, slots=True)
class Fact:
    """One thing counted once: ``source`` names it (``d:<decision id>``,
    ``e:<event id>``, ``t:<click id>``), so a repeat is recognised."""

    source: str
    counts: tuple[reports.Count, ...]


def kind_word(kind: int) -> str:
    return str(KIND.domain(kind, model.Kind.NONE))


def reason_word(reason: int) -> str:
    return str(REASON.domain(reason, model.Reason.UNKNOWN_CLICK_ID))


def facts_of(entry: store_pb.Outcome) -> list[Fact]:
    """The facts one log entry holds (a touches entry holds one per touch)."""
    which = entry.WhichOneof("outcome")
    if which == "decision":
        d = entry.decision
        at = ts_to_micros(d.event_time) if d.HasField("event_time") else ts_to_micros(d.decided_at)
        counts = reports.decision_counts(
            kind_word(d.kind),
            d.media_source,
            d.campaign,
            at,
            [(r.media_source, reason_word(r.reason)) for r in d.rejected],
        )
        return [Fact(f"d:{d.decision_id}", tuple(counts))]
    if which == "event":
        e = entry.event
        if e.duplicate:
            return []
        at = ts_to_micros(e.occurred_at if e.HasField("occurred_at") else entry.record_time)
        counts = reports.event_counts(e.media_source, e.campaign, at, e.revenue, e.currency)
        return [Fact(f"e:{e.event_id}", tuple(counts))]
    if which == "touches":
        return [
            Fact(
                f"t:{t.click_id}",
                tuple(
                    reports.touch_counts(
                        t.type == touch_pb2.TOUCH_TYPE_CLICK,
                        t.media_source,
                        t.campaign,
                        ts_to_micros(t.engaged_at),
                    )
                ),
            )
            for t in entry.touches.touches
        ]
    return []
