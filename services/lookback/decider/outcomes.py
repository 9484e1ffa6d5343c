"""Reading decisions back (``lookback.outcomes.v1.OutcomesService``): one
decision, an install's state, an app's list; served by the decider from the
store's records and its outcomes log."""

from __future__ import annotations

import asyncio
import base64
import binascii
import heapq
import json
import time
import zlib
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
from lookback.touchpoint_store.logreader import app_ids, behind


def all_cursor(cursors: dict[str, str]) -> str:
    """The cursor of a watch of every app: each app's log cursor (apps with
    none left out), compressed; opaque to clients."""
    raw = json.dumps({a: c for a, c in sorted(cursors.items()) if c}, separators=(",", ":"))
    return ALL_PREFIX + base64.urlsafe_b64encode(zlib.compress(raw.encode(), 9)).decode()


def parse_all_cursor(cursor: str, v: Violations) -> dict[str, str]:
    try:
        if not cursor.startswith(ALL_PREFIX):
            raise ValueError(cursor)
        inflate = zlib.decompressobj()
        raw = inflate.decompress(base64.urlsafe_b64decode(cursor[len(ALL_PREFIX) :]), 1 << 22)
        if inflate.unconsumed_tail:  # more than 4 MiB: not ours
            raise ValueError(cursor)
        cursors = json.loads(raw)
        if not isinstance(cursors, dict) or not all(
            isinstance(a, str) and isinstance(c, str) for a, c in cursors.items()
        ):
            raise ValueError(cursor)
        return cursors
    except (ValueError, zlib.error, binascii.Error, UnicodeDecodeError):
        v.add("cursor", "is not a cursor this service handed out")
        return {}


def _key(entry: store_pb.Outcome) -> str:
    """The entry's decision or event ("" for stored touches)."""
    if entry.HasField("decision"):
        return "d:" + entry.decision.decision_id
    if entry.HasField("event"):
        return "e:" + entry.event.event_id
    return ""


def _answer(app_id: str, entry: store_pb.Outcome, cursor: str) -> pb.WatchDecisionsResponse:
    answer = pb.WatchDecisionsResponse(cursor=cursor, app_id=app_id)
    if entry.HasField("decision"):
        answer.decision.CopyFrom(entry.decision)
    else:
        answer.event.CopyFrom(entry.event)
    return answer


RULES = auth.rules_for(
    pb.DESCRIPTOR.services_by_name["OutcomesService"],
    GetDecision=auth.app_rule(auth.S2S, lambda r: (r.app_id,)),
    GetInstall=auth.app_rule(auth.S2S, lambda r: (r.app_id,)),
    ListDecisions=auth.app_rule(auth.S2S, lambda r: (r.app_id,)),
    WatchDecisions=auth.app_rule(auth.S2S, lambda r: (r.app_id,)),
)
"""An app's own backend (``s2s``) reads its app's outcomes; the admin all
(a watch of every app, ``app_id`` empty, names no app a key could hold)."""

ALL_PREFIX = "all."
MAX_ALL_CURSOR = 64 * 1024
"""Longest cursor of a watch of every app (it names each app's position)."""

MAX_RANGE = 31 * DAY

WATCH_POLL = 0.2
"""Seconds between reads of the log while a watch has caught up (an entry
is on the stream well within the 1 s the contract allows)."""
WATCH_PAGE = 500
WATCH_SWEEP_INTERVAL = 1.0
"""Seconds between a stream's sweeps behind its cursor."""
WATCH_SWEEP = 30.0
"""How far behind its cursor a stream sweeps: an entry that lands that late
(a repaired or slow write on Cassandra) is still sent, once, when found."""
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
        if request.app_id:
            check.check_id(v, request.app_id, "app_id")
        if len(request.cursor) > (MAX_ALL_CURSOR if not request.app_id else 200):
            v.add("cursor", "is not a cursor this service handed out")
        cursors: dict[str, str] = {}
        if not request.app_id and request.cursor:
            cursors = parse_all_cursor(request.cursor, v)
        v.raise_if_any()
        if request.app_id:
            cursor = request.cursor
            if not cursor:  # from now: the log's end, without sending what is there
                cursor = await self._end_of_log(request.app_id)
            cursors = {request.app_id: cursor}
        elif not request.cursor:
            cursors = {a: await self._end_of_log(a) async for a in app_ids(self.store)}
        # The caller may now rely on "from now" (its decisions after this are
        # on the stream): initial metadata says the stream is in place.
        send = getattr(context, "send_initial_metadata", None)
        if send is not None:
            await send(())
        start = dict(cursors)  # what this stream began after: a sweep sends nothing before it
        sent: dict[str, float] = {}  # entries sent lately (a sweep sends the others)
        read_until: dict[str, int] = {}
        last_sweep = time.monotonic()
        while True:
            if time.monotonic() - last_sweep >= WATCH_SWEEP_INTERVAL:
                last_sweep = time.monotonic()
                for cutoff in [k for k, t in sent.items() if t < last_sweep - 4 * WATCH_SWEEP]:
                    del sent[cutoff]
                for app_id, until in list(read_until.items()):
                    async for entry in self._late(
                        app_id, cursors[app_id], start.get(app_id, ""), until, sent
                    ):
                        sent[_key(entry)] = time.monotonic()
                        yield _answer(
                            app_id,
                            entry,
                            cursors[app_id] if request.app_id else all_cursor(cursors),
                        )
            apps = [request.app_id] if request.app_id else [a async for a in app_ids(self.store)]
            ready: list[list[tuple[str, store_pb.Outcome]]] = []
            full = False
            horizon = int((time.time() - WATCH_SETTLE) * 1e6)
            for app_id in apps:
                read = await self.store.ReadOutcomes(
                    store_pb.ReadOutcomesRequest(
                        app_id=app_id, after_cursor=cursors.get(app_id, ""), limit=WATCH_PAGE
                    )
                )
                settled = []
                for entry in read.outcomes:
                    if entry.record_time.ToMicroseconds() > horizon:
                        break  # this one and the ones after it: next round
                    settled.append((app_id, entry))
                else:
                    full = full or len(read.outcomes) == WATCH_PAGE
                ready.append(settled)
            # Each app's entries in its log's order; apps interleaved by record time.
            merged = heapq.merge(*ready, key=lambda r: r[1].record_time.ToMicroseconds())
            for app_id, entry in merged:
                cursors[app_id] = entry.cursor
                read_until[app_id] = entry.record_time.ToMicroseconds()
                key = _key(entry)
                if not key or key in sent:
                    continue  # stored touches (the reports', not the feed's), or sent by a sweep
                sent[key] = time.monotonic()
                yield _answer(
                    app_id, entry, entry.cursor if request.app_id else all_cursor(cursors)
                )
            if not full:
                await asyncio.sleep(WATCH_POLL)

    async def _late(
        self, app_id: str, cursor: str, start: str, until: int, sent: dict[str, float]
    ) -> AsyncIterator[store_pb.Outcome]:
        """Entries that landed behind the stream's cursor (Cassandra orders
        the log by decision time) and were not sent: up to
        :data:`WATCH_SWEEP` seconds behind it, and after where the stream
        began (what came before is the previous stream's)."""
        pages = behind(self.store, app_id, cursor, WATCH_SWEEP, until)
        entries = [e async for page in pages for e in page]
        first = next((i + 1 for i, e in enumerate(entries) if e.cursor == start), 0)
        for entry in entries[first:]:
            key = _key(entry)
            if key and key not in sent:
                yield entry

    async def _end_of_log(self, app_id: str) -> str:
        cursor = ""
        while True:
            read = await self.store.ReadOutcomes(
                store_pb.ReadOutcomesRequest(app_id=app_id, after_cursor=cursor, limit=1000)
            )
            cursor = read.next_cursor or cursor
            if len(read.outcomes) < 1000:
                return cursor
