"""The aggregator: counts every app's outcomes log into the reports, each
fact once (see :mod:`lookback.reports.counts`).

It tails each app's log from a cursor kept with the counts, a page at a
time; each page's facts and the cursor after it are added in one atomic
step. On Cassandra the log is ordered by decision time, so an entry can land
just behind a cursor already passed: every ``sweep_interval`` the aggregator
also re-reads the last ``sweep_window`` seconds behind its cursor (the
store's ``rewind``) and counts what it had not (the rest is recognised and
skipped). SQLite's log is in commit order and has nothing to re-read.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from google.protobuf import duration_pb2

from lookback.api.store.v1 import touchpoint_store_service_pb2 as store_pb
from lookback.api.store.v1 import touchpoint_store_service_pb2_grpc as store_grpc
from lookback.core.tasks import Periodic
from lookback.reports.counts import SEEN_DAYS, ReportCounts
from lookback.reports.facts import facts_of

log = logging.getLogger("lookback.reports.aggregator")

PAGE = 500
APPS_PAGE = 1000


class Aggregator(Periodic):
    """Counts every app's log, from a cursor per app."""

    def __init__(
        self,
        store: store_grpc.TouchpointStoreServiceStub,
        counts: ReportCounts,
        interval: float = 0.2,
        sweep_interval: float = 5.0,
        sweep_window: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.counts = counts
        self.interval = interval
        self.sweep_interval = sweep_interval
        self.sweep_window = sweep_window
        super().__init__()
        self.clock = clock
        self.log = log
        self.name = "reports"
        self.counted = 0
        """Facts counted by this process (repeats not included)."""
        self.late = 0
        """Of those, facts found by a sweep behind the cursor."""
        self._last_sweep = 0.0
        self._last_forget = 0.0
        self.passes = 0

    async def run_once(self) -> int:
        """One pass over every app (with a sweep when one is due); the number
        of facts counted."""
        sweep = self.clock() - self._last_sweep >= self.sweep_interval
        new = 0
        after = ""
        while True:
            page = await self.store.ListApps(
                store_pb.ListAppsRequest(page_size=APPS_PAGE, after_app_id=after)
            )
            for app_id in page.app_ids:
                new += await self._app(app_id, sweep)
            if len(page.app_ids) < APPS_PAGE:
                break
            after = page.app_ids[-1]
        if sweep:
            self._last_sweep = self.clock()
        if self.clock() - self._last_forget > 3600:
            await self.counts.forget(self.clock() - SEEN_DAYS * 86400)
            self._last_forget = self.clock()
        self.passes += 1
        return new

    async def _app(self, app_id: str, sweep: bool) -> int:
        name = f"reports:{app_id}"
        cursor = await self.counts.get_cursor(name)
        new = 0
        if sweep and cursor:
            found = await self._sweep(app_id, cursor)
            self.late += found
            self.counted += found
            new += found
        while True:
            read = await self.store.ReadOutcomes(
                store_pb.ReadOutcomesRequest(app_id=app_id, after_cursor=cursor, limit=PAGE)
            )
            if not read.outcomes:
                return new
            facts = [f for entry in read.outcomes for f in facts_of(entry)]
            cursor = read.outcomes[-1].cursor
            added = await self.counts.add(app_id, facts, (name, cursor), self.clock())
            self.counted += added
            new += added
            if len(read.outcomes) < PAGE:
                return new

    async def _sweep(self, app_id: str, cursor: str) -> int:
        """Entries up to ``sweep_window`` behind the cursor (and a page past
        it, counted again by the forward read at no cost)."""
        read = await self.store.ReadOutcomes(
            store_pb.ReadOutcomesRequest(
                app_id=app_id,
                after_cursor=cursor,
                limit=1000,
                rewind=duration_pb2.Duration(seconds=int(self.sweep_window)),
            )
        )
        facts = [f for entry in read.outcomes for f in facts_of(entry)]
        if not facts:
            return 0
        found = await self.counts.add(app_id, facts, None, self.clock())
        if found:
            log.warning("reports: %d late fact(s) of %s counted by the sweep", found, app_id)
        return found
