"""Reading every app's outcomes log from cursors, for the log's consumers in
the postback dispatcher (the relay, the reports): each pass walks every
app, reads forward from the app's cursor, and now and then sweeps back
behind it, where Cassandra's log (ordered by decision time) can gain an
entry after a reader passed (a store call that was slow, a retried create).
Consumers must be idempotent: a sweep hands them entries they had."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from google.protobuf import duration_pb2

from lookback.api.store.v1 import touchpoint_store_service_pb2 as store_pb
from lookback.api.store.v1 import touchpoint_store_service_pb2_grpc as store_grpc
from lookback.core.tasks import Periodic

APPS_PAGE = 1000
SWEEP_PAGE = 1000


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
        self.passes = 0

    async def cursor(self, app_id: str) -> str:
        raise NotImplementedError

    async def forward(self, app_id: str, cursor: str) -> int:
        raise NotImplementedError

    async def swept(self, app_id: str, entries: Sequence[store_pb.Outcome]) -> int:
        raise NotImplementedError

    async def run_once(self) -> int:
        """One pass over every app (with a sweep when one is due); what the
        consumer's calls answered, summed."""
        sweep = self.clock() - self._last_sweep >= self.sweep_interval
        done = 0
        after = ""
        while True:
            page = await self.store.ListApps(
                store_pb.ListAppsRequest(page_size=APPS_PAGE, after_app_id=after)
            )
            for app_id in page.app_ids:
                cursor = await self.cursor(app_id)
                if sweep and cursor:
                    read = await self.store.ReadOutcomes(
                        store_pb.ReadOutcomesRequest(
                            app_id=app_id,
                            after_cursor=cursor,
                            limit=SWEEP_PAGE,
                            rewind=duration_pb2.Duration(seconds=int(self.sweep_window)),
                        )
                    )
                    if read.outcomes:
                        done += await self.swept(app_id, read.outcomes)
                done += await self.forward(app_id, cursor)
            if len(page.app_ids) < APPS_PAGE:
                break
            after = page.app_ids[-1]
        if sweep:
            self._last_sweep = self.clock()
        self.passes += 1
        return done
