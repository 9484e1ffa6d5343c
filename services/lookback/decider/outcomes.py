"""Reading decisions back (``lookback.outcomes.v1.OutcomesService``): one
decision, an install's state, an app's list; served by the decider from the
store's records and its outcomes log."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from lookback.api.outcomes.v1 import outcomes_service_pb2 as pb
from lookback.api.outcomes.v1 import outcomes_service_pb2_grpc as pb_grpc
from lookback.api.store.v1 import touchpoint_store_service_pb2 as store_pb
from lookback.api.store.v1 import touchpoint_store_service_pb2_grpc as store_grpc
from lookback.core import auth, convert
from lookback.core import validation as check
from lookback.core.clock import now_micros
from lookback.core.errors import Violations
from lookback.domain.durations import DAY

RULES = auth.rules_for(
    pb.DESCRIPTOR.services_by_name["OutcomesService"],
    GetDecision=auth.app_rule(auth.S2S, lambda r: (r.app_id,)),
    GetInstall=auth.app_rule(auth.S2S, lambda r: (r.app_id,)),
    ListDecisions=auth.app_rule(auth.S2S, lambda r: (r.app_id,)),
    WatchDecisions=auth.app_rule(auth.S2S, lambda r: (r.app_id,)),
)
"""An app's own backend (``s2s``) reads its app's outcomes; the admin all."""

MAX_RANGE = 31 * DAY

WATCH_POLL = 0.2
"""Seconds between reads of the log while a watch has caught up (an entry
is on the stream well within the 1 s the contract allows)."""
WATCH_PAGE = 500
WATCH_SETTLE = 0.4
"""Seconds an entry waits before the watch sends it. On Cassandra the log is
ordered by decision time, so an entry can land a moment behind a later one;
held this long, it is sent in its place rather than missed (SQLite's log
needs no wait: it costs the watch this much latency, within the 1 s)."""
"""Longest time range one list may span."""


def _store_query(r: pb.ListDecisionsRequest) -> store_pb.ListDecisionsRequest:
    """The store's query for a list request, its range's defaults applied
    (end: now; start: a day before), validated as the store validates it,
    and the range bounded."""
    end = convert.ts_to_micros(r.end_time) if r.HasField("end_time") else now_micros()
    start = convert.ts_to_micros(r.start_time) if r.HasField("start_time") else end - DAY
    query = store_pb.ListDecisionsRequest(
        app_id=r.app_id,
        start_time=convert.micros_to_ts(start),
        end_time=convert.micros_to_ts(end),
        kinds=r.kinds,
        media_source=r.media_source,
        page_size=r.page_size,
        page_token=r.page_token,
    )
    v = Violations()
    check.check_list_decisions(v, query)
    if end - start > MAX_RANGE:
        v.add("start_time", f"the range may span at most {MAX_RANGE // DAY} days")
    v.raise_if_any()
    return query


@dataclass
class OutcomesServicer(pb_grpc.OutcomesServiceServicer):
    """Reads through the store (validated here as everywhere)."""

    store: store_grpc.TouchpointStoreServiceStub

    async def GetDecision(
        self, request: pb.GetDecisionRequest, context: object
    ) -> pb.GetDecisionResponse:
        v = Violations()
        check.check_id(v, request.app_id, "app_id")
        check.check_id(v, request.decision_id, "decision_id")
        v.raise_if_any()
        found = await self.store.GetDecision(
            store_pb.GetDecisionRequest(app_id=request.app_id, decision_id=request.decision_id)
        )
        return pb.GetDecisionResponse(decision=found.decision)

    async def GetInstall(
        self, request: pb.GetInstallRequest, context: object
    ) -> pb.GetInstallResponse:
        check.ensure(check.check_install_ref, request.app_id, request.install_id)
        record = (
            await self.store.GetInstallRecord(
                store_pb.GetInstallRecordRequest(
                    app_id=request.app_id, install_id=request.install_id
                )
            )
        ).record
        answer = pb.GetInstallResponse(decision=record.decision)
        if record.HasField("attributed_decision"):
            answer.attributed_decision.CopyFrom(record.attributed_decision)
        if record.HasField("latest_reengagement"):
            answer.latest_reengagement.CopyFrom(record.latest_reengagement)
        return answer

    async def ListDecisions(
        self, request: pb.ListDecisionsRequest, context: object
    ) -> pb.ListDecisionsResponse:
        query = _store_query(request)
        listed = await self.store.ListDecisions(query)
        return pb.ListDecisionsResponse(
            decisions=listed.decisions, next_page_token=listed.next_page_token
        )

    async def WatchDecisions(
        self, request: pb.WatchDecisionsRequest, context: object
    ) -> AsyncIterator[pb.WatchDecisionsResponse]:
        v = Violations()
        check.check_id(v, request.app_id, "app_id")
        if len(request.cursor) > 200:
            v.add("cursor", "is not a cursor this service handed out")
        v.raise_if_any()
        cursor = request.cursor
        if not cursor:  # from now: the log's end, without sending what is there
            cursor = await self._end_of_log(request.app_id)
        # The caller may now rely on "from now" (its decisions after this are
        # on the stream): initial metadata says the stream is in place.
        send = getattr(context, "send_initial_metadata", None)
        if send is not None:
            await send(())
        while True:
            read = await self.store.ReadOutcomes(
                store_pb.ReadOutcomesRequest(
                    app_id=request.app_id, after_cursor=cursor, limit=WATCH_PAGE
                )
            )
            horizon = time.time() - WATCH_SETTLE
            held = False
            for entry in read.outcomes:
                if entry.record_time.ToMicroseconds() / 1e6 > horizon:
                    held = True  # this one and the ones after it: next round
                    break
                cursor = entry.cursor
                answer = pb.WatchDecisionsResponse(cursor=entry.cursor)
                if entry.HasField("decision"):
                    answer.decision.CopyFrom(entry.decision)
                elif entry.HasField("event"):
                    answer.event.CopyFrom(entry.event)
                else:
                    continue  # stored touches: the reports', not the feed's
                yield answer
            if held or len(read.outcomes) < WATCH_PAGE:
                await asyncio.sleep(WATCH_POLL)

    async def _end_of_log(self, app_id: str) -> str:
        cursor = ""
        while True:
            read = await self.store.ReadOutcomes(
                store_pb.ReadOutcomesRequest(app_id=app_id, after_cursor=cursor, limit=1000)
            )
            cursor = read.next_cursor or cursor
            if len(read.outcomes) < 1000:
                return cursor
