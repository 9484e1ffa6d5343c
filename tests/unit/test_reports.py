"""The reports' pure parts: what each fact counts, and how cells roll up
into rows (lookback.domain.reports, lookback.reports.facts)."""

from __future__ import annotations

from lookback.api.store.v1 import touchpoint_store_service_pb2 as store_pb
from lookback.api.types.v1 import decision_pb2, touch_pb2
from lookback.core.convert import micros_to_ts
from lookback.domain import reports
from lookback.domain.durations import DAY, HOUR, MINUTE
from lookback.reports.facts import facts_of

T0 = 1_780_000_000 * 1_000_000 // DAY * DAY  # a UTC midnight


def test_revenue_is_exact_in_millionths() -> None:
    units = sum(reports.revenue_units(v) for v in ["4.99", "10.01", "0.000001", "-1"])
    assert units == 14_000_001
    assert reports.revenue_text(units) == "14.000001"
    assert reports.revenue_text(reports.revenue_units("12.97")) == "12.97"
    assert reports.revenue_text(reports.revenue_units("5")) == "5.00"
    assert reports.revenue_text(reports.revenue_units("-0.5")) == "-0.50"
    # Three dollars in cents, 300 times, is 9 dollars exactly (no float drift).
    assert reports.revenue_text(300 * reports.revenue_units("0.03")) == "9.00"


def test_a_decision_counts_its_kind_and_its_rejected_touches() -> None:
    counts = reports.decision_counts(
        "install", "networka", "ua", T0 + 90 * MINUTE, [("networkc", "ctit_too_short")]
    )
    assert [(c.cell, c.metric, c.amount) for c in counts] == [
        (reports.Cell(T0 + HOUR, "networka", "ua", "install"), "installs", 1),
        (reports.Cell(T0 + HOUR, "networkc", "", "install"), "rejected:ctit_too_short", 1),
    ]
    assert reports.decision_counts("duplicate", "networka", "ua", T0) == []
    # An open that changed nothing counts nothing but its rejections.
    none = reports.decision_counts("none", "organic", "", T0, [("x", "unknown_click_id")])
    assert [c.metric for c in none] == ["rejected:unknown_click_id"]


def test_negative_revenue_splits_and_sums_back_exactly() -> None:
    row = reports.Row(0)
    for c in reports.event_counts("a", "", T0, "-0.5", "USD") + reports.event_counts(
        "a", "", T0, "999999999999999.999999", "USD"
    ):
        row.add(c.metric, c.amount)
    assert reports.revenue_text(row.revenue["USD"]) == "999999999999999.499999"


def test_rows_roll_cells_up_by_bucket_and_group() -> None:
    cells = [
        (reports.Cell(T0, "a", "c1", "install"), "installs", 2),
        (reports.Cell(T0 + HOUR, "a", "c2", "install"), "installs", 1),
        (reports.Cell(T0 + HOUR, "b", "c1", ""), "clicks", 5),
        (reports.Cell(T0 + DAY, "a", "c1", "event"), "revenue:USD", 1),
        (reports.Cell(T0 + DAY, "a", "c1", "event"), "revenue_micros:USD", 500_000),
        (reports.Cell(T0 + DAY, "a", "c1", "event"), "events", 1),
        (reports.Cell(T0 + 2 * DAY, "a", "c1", "install"), "installs", 7),  # out of range
    ]
    by_day = reports.rows(cells, "day", ["media_source"], T0, T0 + 2 * DAY)
    assert [(r.bucket_start, r.media_source, r.counts, r.revenue) for r in by_day] == [
        (T0, "a", {"installs": 3}, {}),
        (T0, "b", {"clicks": 5}, {}),
        (T0 + DAY, "a", {"events": 1}, {"USD": 1_500_000}),
    ]
    total = reports.rows(cells, "", [], T0, T0 + 2 * DAY)
    assert len(total) == 1 and total[0].bucket_start == T0
    assert total[0].counts == {"installs": 3, "clicks": 5, "events": 1}
    hourly = reports.rows(cells, "hour", ["campaign", "kind"], T0, T0 + 2 * HOUR)
    assert [(r.bucket_start, r.campaign, r.kind) for r in hourly] == [
        (T0, "c1", "install"),
        (T0 + HOUR, "c1", ""),
        (T0 + HOUR, "c2", "install"),
    ]


def test_range_hours_round_outwards() -> None:
    assert reports.range_hours(T0 + 5 * MINUTE, T0 + HOUR + 1) == (T0, T0 + 2 * HOUR)
    assert reports.range_hours(T0, T0 + HOUR) == (T0, T0 + HOUR)


def test_log_entries_become_facts_named_for_what_they_count() -> None:
    decision = decision_pb2.Decision(
        decision_id="d1",
        kind=decision_pb2.DECISION_KIND_REATTRIBUTION,
        media_source="networkb",
        campaign="winback",
        event_time=micros_to_ts(T0 + 10 * MINUTE),
        rejected=[
            decision_pb2.RejectedTouch(
                click_id="x",
                media_source="networkc",
                reason=decision_pb2.REJECTION_REASON_CLICK_AFTER_INSTALL_BEGIN,
            )
        ],
    )
    (fact,) = facts_of(store_pb.Outcome(decision=decision))
    assert fact.source == "d:d1"
    assert [c.metric for c in fact.counts] == [
        "reattributions",
        "rejected:click_after_install_begin",
    ]
    event = decision_pb2.EventAttribution(
        event_id="e1",
        media_source="networka",
        revenue="4.99",
        currency="EUR",
        occurred_at=micros_to_ts(T0 + DAY),
    )
    (fact,) = facts_of(store_pb.Outcome(event=event))
    assert fact.source == "e:e1"
    assert {(c.cell.hour, c.metric, c.amount) for c in fact.counts} == {
        (T0 + DAY, "events", 1),
        (T0 + DAY, "revenue:EUR", 4),
        (T0 + DAY, "revenue_micros:EUR", 990_000),
    }
    touches = store_pb.StoredTouches(
        touches=[
            store_pb.StoredTouch(
                click_id=f"c{i}",
                type=touch_pb2.TOUCH_TYPE_IMPRESSION if i else touch_pb2.TOUCH_TYPE_CLICK,
                media_source="networka",
                engaged_at=micros_to_ts(T0),
            )
            for i in range(2)
        ]
    )
    facts = facts_of(store_pb.Outcome(touches=touches))
    assert [(f.source, f.counts[0].metric) for f in facts] == [
        ("t:c0", "clicks"),
        ("t:c1", "impressions"),
    ]
