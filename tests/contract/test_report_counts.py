"""The reports' counts on both of the dispatcher's backends (SQLite and
Redis): a fact counts once however often and however concurrently it is
added, the cursor moves with the counts in one step, and the cells read
back exactly (revenue beyond a double's precision too)."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from lookback.domain import reports
from lookback.domain.durations import DAY, HOUR
from lookback.postback.component import make_counts
from lookback.postback.queue import PostbackQueue
from lookback.reports.counts import ReportCounts
from lookback.reports.facts import Fact

T0 = int(time.time()) // 86400 * DAY


@pytest.fixture
def counts(queue: PostbackQueue) -> ReportCounts:
    """The counts kept by a postback queue, on each backend."""
    return make_counts(queue)


def install(n: int, source: str = "networka", hour: int = 0) -> Fact:
    return Fact(
        f"d:{n}",
        tuple(reports.decision_counts("install", source, "ua", T0 + hour * HOUR + n)),
    )


async def test_a_fact_counts_once_however_often_and_concurrently_it_is_added(
    counts: ReportCounts,
) -> None:
    app = f"app-{uuid.uuid4().hex[:6]}"
    facts = [install(n, "networka" if n % 3 else "networkb", n % 5) for n in range(300)]
    # Every fact four times, in overlapping pages, from four writers at once.
    pages = [facts[i : i + 70] for i in range(0, 300, 50)]
    added = await asyncio.gather(*(counts.add(app, page, None, time.time()) for page in pages * 4))
    assert sum(added) == 300
    cells = await counts.cells(app, T0, T0 + DAY)
    by_source: dict[str, int] = {}
    for cell, metric, value in cells:
        assert metric == "installs"
        by_source[cell.media_source] = by_source.get(cell.media_source, 0) + value
    assert by_source == {"networka": 200, "networkb": 100}
    # Another app's counts are its own.
    assert await counts.cells(f"other-{app}", T0, T0 + DAY) == []


async def test_the_cursor_moves_with_the_counts(counts: ReportCounts) -> None:
    app = f"app-{uuid.uuid4().hex[:6]}"
    assert await counts.get_cursor(f"reports:{app}") == ""
    assert await counts.add(app, [install(1)], (f"reports:{app}", "c-1"), time.time()) == 1
    assert await counts.get_cursor(f"reports:{app}") == "c-1"
    # A page read again (a reader restarted from an older cursor) counts nothing.
    assert await counts.add(app, [install(1)], (f"reports:{app}", "c-1"), time.time()) == 0
    two = [install(1), install(2)]
    assert await counts.add(app, two, (f"reports:{app}", "c-2"), time.time()) == 1
    assert await counts.get_cursor(f"reports:{app}") == "c-2"


async def test_cells_read_back_exactly_by_hour(counts: ReportCounts) -> None:
    app = f"app-{uuid.uuid4().hex[:6]}"
    big = "999999999999999.999999"  # the largest revenue ingestion accepts
    facts = [
        Fact(f"e:{n}", tuple(reports.event_counts("networka", "", T0 + 2 * HOUR, big, "USD")))
        for n in range(3)
    ]
    facts.append(Fact("t:c1", tuple(reports.touch_counts(True, "networka", "ua", T0 + HOUR))))
    await counts.add(app, facts, None, time.time())
    cells = await counts.cells(app, T0, T0 + DAY)
    (clicks,) = reports.rows(cells, "hour", ["kind"], T0, T0 + 2 * HOUR)
    assert (clicks.bucket_start, clicks.counts) == (T0 + HOUR, {"clicks": 1})
    (events,) = reports.rows(cells, "", ["kind"], T0 + 2 * HOUR, T0 + DAY)
    assert events.kind == "event" and events.counts == {"events": 3}
    assert reports.revenue_text(events.revenue["USD"]) == "2999999999999999.999997"
    # The range is half-open, in whole hours.
    assert {c.hour for c, _, _ in await counts.cells(app, T0 + 2 * HOUR, T0 + 3 * HOUR)} == {
        T0 + 2 * HOUR
    }
    assert await counts.cells(app, T0, T0 + HOUR) == []
