"""Reports: what each recorded fact counts, and how counted cells roll up
into rows (docs/outcomes.md, "Reports"). Pure: no storage, no wire types.

A *cell* is one UTC hour of one group (media source, campaign, kind); a
cell holds named metrics. A fact (a stored touch, a decision, an attributed
event) adds to one or more cells; the reports' store adds each fact once.
Rows are cells summed over a bucket (hour, day or the whole range) and over
the dimensions not grouped by.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from lookback.domain.durations import DAY, HOUR

KIND_METRICS = {
    "install": "installs",
    "reattribution": "reattributions",
    "reinstall": "reinstalls",
    "reengagement": "reengagements",
}
"""The metric each decision kind counts in (``duplicate`` and ``none`` count
in none; their rejected touches still count)."""

COUNTS = ("clicks", "impressions", *KIND_METRICS.values(), "events")
"""The plain counts of a row, in the order reports print them."""

REJECTED = "rejected:"
"""Metric prefix of a rejected touch, by reason: ``rejected:ctit_too_short``."""
REVENUE = "revenue:"
"""Metric prefix of revenue, by currency, in whole units: ``revenue:USD``."""
REVENUE_MICROS = "revenue_micros:"
"""Metric prefix of the millionths of revenue beyond its whole units (kept
apart so that each stays well inside 64 bits: one event may carry up to
10^15 units)."""

DIMENSIONS = ("media_source", "campaign", "kind")
EVENT_KIND = "event"
"""The kind events are grouped under (touches have none: ``""``)."""

REVENUE_SCALE = 6
"""Revenue is counted in millionths (ingestion accepts at most 6 decimals), so
sums are exact integers."""
UNIT = 10**REVENUE_SCALE


def revenue_units(text: str) -> int:
    """A decimal revenue string (at most 6 decimals) in millionths."""
    return int(Decimal(text).scaleb(REVENUE_SCALE))


def revenue_text(units: int) -> str:
    """Millionths as an exact decimal string with at least 2 decimals
    (``12970000`` -> ``"12.97"``, ``1000`` -> ``"0.001"``)."""
    value = Decimal(units).scaleb(-REVENUE_SCALE)
    text = f"{value:.{REVENUE_SCALE}f}"
    whole, _, frac = text.partition(".")
    frac = frac.rstrip("0").ljust(2, "0")
    return f"{whole}.{frac}"


@dataclass(frozen=True, slots=True)
class Cell:
    """One hour of one group."""

    hour: int
    """Start of the UTC hour, microseconds."""
    media_source: str
    campaign: str
    kind: str


@dataclass(frozen=True, slots=True)
class Count:
    """An amount added to one metric of one cell."""

    cell: Cell
    metric: str
    amount: int = 1


def hour_of(at: int) -> int:
    return at - at % HOUR


def decision_counts(
    kind: str,
    media_source: str,
    campaign: str,
    at: int,
    rejected: Iterable[tuple[str, str]] = (),
) -> list[Count]:
    """What a decision counts: its kind's metric (for the winner's group),
    and each rejected touch (``(media_source, reason)``) for the touch's
    media source."""
    if kind == "duplicate":
        return []
    hour = hour_of(at)
    out = []
    metric = KIND_METRICS.get(kind)
    if metric is not None:
        out.append(Count(Cell(hour, media_source, campaign, kind), metric))
    for source, reason in rejected:
        out.append(Count(Cell(hour, source, "", kind), REJECTED + reason))
    return out


def touch_counts(is_click: bool, media_source: str, campaign: str, at: int) -> list[Count]:
    """What a stored touch counts: a click or an impression, by its time."""
    metric = "clicks" if is_click else "impressions"
    return [Count(Cell(hour_of(at), media_source, campaign, ""), metric)]


def event_counts(
    media_source: str, campaign: str, at: int, revenue: str, currency: str
) -> list[Count]:
    """What an attributed event counts: one event and its revenue."""
    cell = Cell(hour_of(at), media_source, campaign, EVENT_KIND)
    out = [Count(cell, "events")]
    if revenue and currency:
        whole, micros = divmod(revenue_units(revenue), UNIT)
        out.append(Count(cell, REVENUE + currency, whole))
        out.append(Count(cell, REVENUE_MICROS + currency, micros))
    return out


@dataclass
class Row:
    """A bucket of a group, and its metrics."""

    bucket_start: int
    media_source: str = ""
    campaign: str = ""
    kind: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    revenue: dict[str, int] = field(default_factory=dict)
    """Millionths per currency."""

    def add(self, metric: str, amount: int) -> None:
        if metric.startswith(REJECTED):
            key, into = metric[len(REJECTED) :], self.rejected
        elif metric.startswith(REVENUE):
            key, into, amount = metric[len(REVENUE) :], self.revenue, amount * UNIT
        elif metric.startswith(REVENUE_MICROS):
            key, into = metric[len(REVENUE_MICROS) :], self.revenue
        else:
            key, into = metric, self.counts
        into[key] = into.get(key, 0) + amount

    def empty(self) -> bool:
        return (
            not any(self.counts.values())
            and not any(self.rejected.values())
            and not any(self.revenue.values())
        )


def bucket_start(hour: int, bucket: str, start: int) -> int:
    if bucket == "hour":
        return hour
    if bucket == "day":
        return hour - hour % DAY
    return start


def range_hours(start: int, end: int) -> tuple[int, int]:
    """The range in whole hours: start rounded down, end rounded up."""
    first = hour_of(start)
    last = hour_of(end)
    if last < end:
        last += HOUR
    return first, last


def rows(
    cells: Iterable[tuple[Cell, str, int]],
    bucket: str,
    group_by: Sequence[str],
    start: int,
    end: int,
) -> list[Row]:
    """Cells of ``[start, end)`` (whole hours) summed into rows: per
    ``bucket`` (``"hour"``, ``"day"``, or ``""`` for one total from
    ``start``) and per value of the ``group_by`` dimensions; rows with
    nothing counted are left out. Ordered by bucket, then the dimensions."""
    unknown = set(group_by) - set(DIMENSIONS)
    if unknown:
        raise ValueError(f"unknown dimensions {sorted(unknown)}")
    out: dict[tuple[int, str, str, str], Row] = {}
    for cell, metric, amount in cells:
        if not start <= cell.hour < end or not amount:
            continue
        key = (
            bucket_start(cell.hour, bucket, start),
            cell.media_source if "media_source" in group_by else "",
            cell.campaign if "campaign" in group_by else "",
            cell.kind if "kind" in group_by else "",
        )
        row = out.get(key)
        if row is None:
            row = out[key] = Row(*key)
        row.add(metric, amount)
    return [out[k] for k in sorted(out) if not out[k].empty()]
