"""Reading every app's outcomes log from cursors, for the log's consumers in
the postback dispatcher (the relay, the reports): each pass walks every
app, reads forward from the app's cursor, and now and then sweeps back
behind it, where Cassandra's log (ordered by decision time) can gain an
entry after a reader passed (a store call that was slow, a retried create).
Consumers must be idempotent: a sweep hands them entries they had."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Sequence

from google.protobuf import duration_pb2

from lookback.api.store.v1 import touchpoint_store_service_pb2 as store_pb
from lookback.api.store.v1 import touchpoint_store_service_pb2_grpc as store_grpc
from lookback.core.tasks import Periodic

APPS_PAGE = 1000
SWEEP_PAGE = 1000
MAX_SWEEP_PAGES = 50
"""A sweep reads at most this many pages (50,000 entries in its window)."""


async def app_ids(store: store_grpc.TouchpointStoreServiceStub) -> AsyncIterator[str]:
    """Every app's id, a page of the store's ``ListApps`` at a time."""
    after = ""
    while True:
        request = store_pb.ListAppsRequest(page_size=APPS_PAGE, after_app_id=after)
        page = await store.ListApps(request)
        for app_id in page.app_ids:
            yield app_id
        if len(page.app_ids) < APPS_PAGE:
            return
        after = page.app_ids[-1]


async def behind(
    store: store_grpc.TouchpointStoreServiceStub,
    app_id: str,
    cursor: str,
    window: float,
    until: int,
) -> AsyncIterator[list[store_pb.Outcome]]:
    """The app's entries from ``window`` seconds before ``cursor`` up to it,
    or up to the first recorded after ``until`` (microseconds: the last entry
    the reader read forward; where the store does not rewind, that is the
    first entry), a page at a time, at most :data:`MAX_SWEEP_PAGES`."""
    read = await store.ReadOutcomes(
        store_pb.ReadOutcomesRequest(
            app_id=app_id,
            after_cursor=cursor,
            limit=SWEEP_PAGE,
            rewind=duration_pb2.Duration(seconds=int(window)),
        )
    )
    for _ in range(MAX_SWEEP_PAGES):
        end = next(
            (
                i
                for i, e in enumerate(read.outcomes)
                if e.cursor == cursor or e.record_time.ToMicroseconds() > until
            ),
            None,
        )
        page = list(read.outcomes if end is None else read.outcomes[:end])
        if page:
            yield page
        if end is not None or len(read.outcomes) < SWEEP_PAGE:
            return
        read = await store.ReadOutcomes(
            store_pb.ReadOutcomesRequest(
                app_id=app_id, after_cursor=read.outcomes[-1].cursor, limit=SWEEP_PAGE
            )
        )


class LogReader(Periodic):
    """A pass over every app's log each ``interval`` seconds, with a sweep
    ``sweep_window`` seconds behind each cursor every ``sweep_interval``.
    Subclasses define :meth:`forward` (read on from the app's cursor) and
    :meth:`swept` (entries handed back by a sweep)."""

    def __init__(
        self,
        store: store_grpc.TouchpointStoreServiceStub,
        interval: float,
        sweep_interval: float = 5.0,
        sweep_window: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.store = store
        self.interval = interval
        self.sweep_interval = sweep_interval
        self.sweep_window = sweep_window
        self.clock = clock
        self._last_sweep = 0.0
        self._read_until: dict[str, int] = {}
        self.passes = 0

    async def cursor(self, app_id: str) -> str:
        raise NotImplementedError

    async def forward(self, app_id: str, cursor: str) -> int:
        raise NotImplementedError

    async def swept(self, app_id: str, entries: Sequence[store_pb.Outcome]) -> int:
        raise NotImplementedError

    async def _sweep(self, app_id: str, cursor: str) -> int:
        """Every entry from ``sweep_window`` seconds before the cursor up to
        the cursor (the forward read goes on from there)."""
        until = self._read_until.get(app_id)
        if until is None:
            return 0  # nothing read forward yet by this process: nothing to sweep behind
        done = 0
        async for page in behind(self.store, app_id, cursor, self.sweep_window, until):
            done += await self.swept(app_id, page)
        return done

    def read_forward(self, app_id: str, entries: Sequence[store_pb.Outcome]) -> None:
        """Subclasses call this with each page their forward read handled:
        a sweep goes no further than the last of them."""
        if entries:
            self._read_until[app_id] = entries[-1].record_time.ToMicroseconds()

    async def run_once(self) -> int:
        """One pass over every app (with a sweep when one is due); what the
        consumer's calls answered, summed."""
        sweep = self.clock() - self._last_sweep >= self.sweep_interval
        done = 0
        async for app_id in app_ids(self.store):
            cursor = await self.cursor(app_id)
            if sweep and cursor:
                done += await self._sweep(app_id, cursor)
            done += await self.forward(app_id, cursor)
        if sweep:
            self._last_sweep = self.clock()
        self.passes += 1
        return done
