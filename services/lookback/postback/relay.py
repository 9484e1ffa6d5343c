"""The relay: every postback job recorded in the outcomes log reaches the
queue, whatever failed when its decision was made.

The decider hands a decision's jobs to the dispatcher at once, but the same
jobs are also written with the decision in the store's outcomes log (the
outbox, docs/outcomes.md). The relay tails every app's log from a cursor it
keeps in the queue's own backend, and queues each entry's jobs again. A job
id is sent once (the queue keeps delivered ids for its retention), so a job
the fast path already queued is not sent twice; one whose hand-over failed
(the dispatcher or Redis down, the decider killed right after answering) is
queued now. The cursor moves only after the jobs are queued: at least once.

On Cassandra the log is ordered by decision time, so an entry may land just
behind a cursor already read; the relay reads only entries older than
``settle`` seconds (longer than the decider's store deadline and retries),
and stops at the first younger one; and its sweeps
(:mod:`lookback.touchpoint_store.logreader`) queue the jobs of entries that
landed up to ``sweep_window`` seconds behind its cursor.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from lookback.api.store.v1 import touchpoint_store_service_pb2 as store_pb
from lookback.api.store.v1 import touchpoint_store_service_pb2_grpc as store_grpc
from lookback.postback.queue import PostbackQueue
from lookback.touchpoint_store.logreader import LogReader

log = logging.getLogger("lookback.postback.relay")

PAGE = 500
"""Log entries read per call."""


class Relay(LogReader):
    """Queues the jobs of every app's outcomes log, from a cursor per app."""

    def __init__(
        self,
        store: store_grpc.TouchpointStoreServiceStub,
        queue: PostbackQueue,
        on_queued: Callable[[], None] = lambda: None,
        interval: float = 1.0,
        settle: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(store, interval, clock=clock)
        self.queue = queue
        self.on_queued = on_queued
        self.settle = settle
        self.log = log
        self.name = "relay"
        self.new = 0
        """Jobs the queue did not have yet (hand-overs that had failed)."""

    async def cursor(self, app_id: str) -> str:
        return await self.queue.get_cursor(f"outcomes:{app_id}")

    async def _queue(self, app_id: str, entries: Sequence[store_pb.Outcome]) -> int:
        jobs = [job for outcome in entries for job in outcome.postbacks]
        if not jobs:
            return 0
        added = await self.queue.enqueue(jobs, self.clock())
        self.new += added
        if added:
            log.warning("relay: %d postback job(s) of %s queued from the log", added, app_id)
            self.on_queued()
        return added

    async def swept(self, app_id: str, entries: Sequence[store_pb.Outcome]) -> int:
        return await self._queue(app_id, entries)

    async def forward(self, app_id: str, cursor: str) -> int:
        new = 0
        while True:
            read = await self.store.ReadOutcomes(
                store_pb.ReadOutcomesRequest(app_id=app_id, after_cursor=cursor, limit=PAGE)
            )
            horizon = self.clock() - self.settle
            settled = []
            for outcome in read.outcomes:
                if outcome.record_time.ToMicroseconds() / 1e6 > horizon:
                    break
                settled.append(outcome)
            new += await self._queue(app_id, settled)
            if settled:
                cursor = settled[-1].cursor
                await self.queue.set_cursor(f"outcomes:{app_id}", cursor)
                self.read_forward(app_id, settled)
            if len(settled) < len(read.outcomes) or len(read.outcomes) < PAGE:
                return new
