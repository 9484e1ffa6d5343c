"""The aggregator: counts every app's outcomes log into the reports, each
fact once (see :mod:`lookback.reports.counts`).

It tails each app's log from a cursor kept with the counts, a page at a
time; each page's facts and the cursor after it are added in one atomic
step. Its sweeps (:mod:`lookback.touchpoint_store.logreader`) re-read the
last ``sweep_window`` seconds behind each cursor and count what it had not:
on Cassandra an entry can land behind a cursor already passed. SQLite's log
is in commit order and has nothing to re-read.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from lookback.api.store.v1 import touchpoint_store_service_pb2 as store_pb
from lookback.api.store.v1 import touchpoint_store_service_pb2_grpc as store_grpc
from lookback.reports.counts import SEEN_DAYS, ReportCounts
from lookback.reports.facts import facts_of
from lookback.touchpoint_store.logreader import LogReader

log = logging.getLogger("lookback.reports.aggregator")

PAGE = 500


class Aggregator(LogReader):
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
        super().__init__(store, interval, sweep_interval, sweep_window, clock)
        self.counts = counts
        self.log = log
        self.name = "reports"
        self.counted = 0
        """Facts counted by this process (repeats not included)."""
        self.late = 0
        """Of those, facts found by a sweep behind the cursor."""
        self._last_forget = 0.0

    async def run_once(self) -> int:
        counted = await super().run_once()
        if self.clock() - self._last_forget > 3600:
            await self.counts.forget(self.clock() - SEEN_DAYS * 86400)
            self._last_forget = self.clock()
        return counted

    async def cursor(self, app_id: str) -> str:
        return await self.counts.get_cursor(f"reports:{app_id}")

    async def forward(self, app_id: str, cursor: str) -> int:
        new = 0
        while True:
            read = await self.store.ReadOutcomes(
                store_pb.ReadOutcomesRequest(app_id=app_id, after_cursor=cursor, limit=PAGE)
            )
            if not read.outcomes:
                return new
            facts = [f for entry in read.outcomes for f in facts_of(entry)]
            cursor = read.outcomes[-1].cursor
            added = await self.counts.add(
                app_id, facts, (f"reports:{app_id}", cursor), self.clock()
            )
            self.read_forward(app_id, read.outcomes)
            self.counted += added
            new += added
            if len(read.outcomes) < PAGE:
                return new

    async def swept(self, app_id: str, entries: Sequence[store_pb.Outcome]) -> int:
        facts = [f for entry in entries for f in facts_of(entry)]
        found = await self.counts.add(app_id, facts, None, self.clock()) if facts else 0
        if found:
            log.warning("reports: %d late fact(s) of %s counted by a sweep", found, app_id)
            self.late += found
            self.counted += found
        return found
