"""The store's contract, kept by both backends (embedded SQLite, Cassandra).

Records are protobuf messages stored whole, indexed by the match keys the
caller derived. Every write is durable before the call returns.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from lookback.api.store.v1 import touchpoint_store_service_pb2 as store_pb
from lookback.api.types.v1 import (
    app_pb2,
    decision_pb2,
    erasure_pb2,
    install_pb2,
    link_pb2,
    postback_pb2,
    touch_pb2,
)
from lookback.core.convert import micros_to_ts, ts_to_micros
from lookback.core.errors import Violations
from lookback.domain.durations import DAY, HOUR, MONTH
from lookback.touchpoint_store.erasure import Erased

# Retention from each record's own time (docs/attribution-rules.md, "Retention"):
# the longest window a record could ever count in, whatever the settings,
# plus a day's margin for reports that arrive late (an offline device sends
# its first launch when it comes back; a replayed timeline arrives at once).
LATE_REPORT_MARGIN = 1 * DAY
CLICK_RETENTION = 30 * DAY + LATE_REPORT_MARGIN
IMPRESSION_RETENTION = 24 * HOUR + LATE_REPORT_MARGIN
INSTALL_RETENTION = 24 * MONTH + LATE_REPORT_MARGIN
EVENT_RETENTION = 24 * MONTH + LATE_REPORT_MARGIN
# The outcomes log (the outbox) keeps every entry this long from its record
# time (a reader that falls further behind misses entries); the decision
# index lives as long as the install records.
OUTCOME_RETENTION = 7 * DAY
DECISION_RETENTION = INSTALL_RETENTION
DEFAULT_LIMIT = 100
"""Entries or decisions per read when the caller asks for 0."""


def touch_retention(touch: touch_pb2.Touch) -> int:
    if touch.type == touch_pb2.TOUCH_TYPE_IMPRESSION:
        return IMPRESSION_RETENTION
    return CLICK_RETENTION


@dataclass(frozen=True)
class InstallQuery:
    """What one install decision reads."""

    app_id: str
    install_id: str
    touch_keys: Sequence[str]
    """Keys of candidate touches (device keys, and the IP key if any)."""
    click_ids: Sequence[str]
    """Touches to fetch by id whatever their time (the referrer's)."""
    after: int
    before: int
    """Only touches engaged in [after, before] (microseconds) by key."""
    device_keys: Sequence[str]
    """Keys of the device's prior installs."""


@dataclass(frozen=True)
class InstallFacts:
    """What a decision needs, gathered in one call.

    ``existing`` is the install id's stored record when the backend read it
    (then ``touches`` and ``prior`` are empty). A backend may leave it None
    for an install that exists (Cassandra does, one read less): the decision
    is then made again and :meth:`StoreBackend.create_install_record` answers
    not-created with the stored record, which is what the caller answers.
    ``prior`` never holds the install itself.
    """

    existing: store_pb.InstallRecord | None
    touches: list[touch_pb2.Touch]
    prior: list[store_pb.InstallRecord]


@dataclass(frozen=True)
class DecisionFilter:
    """Which decisions ListDecisions answers: decided in [start, end)
    (microseconds), of these kinds (empty: every kind but NONE, an open that
    changed nothing), of this media source (empty: any)."""

    start: int = 0
    end: int = 2**62
    kinds: frozenset[int] = field(default_factory=frozenset)
    media_source: str = ""

    def kind_ok(self, kind: int) -> bool:
        if self.kinds:
            return kind in self.kinds
        return kind != decision_pb2.DECISION_KIND_NONE

    def matches(self, decision: decision_pb2.Decision, at: int) -> bool:
        return (
            self.start <= at < self.end
            and self.kind_ok(decision.kind)
            and (not self.media_source or decision.media_source == self.media_source)
        )


def decision_time(decision: decision_pb2.Decision, fallback: int) -> int:
    """When a decision was made (microseconds): its ``decided_at``, else its
    ``event_time``, else ``fallback``. Deterministic for a stored decision,
    so a rewrite of its outcome lands where the first write did."""
    if decision.HasField("decided_at"):
        return ts_to_micros(decision.decided_at)
    if decision.HasField("event_time"):
        return ts_to_micros(decision.event_time)
    return fallback


def decision_outcome(
    decision: decision_pb2.Decision,
    postbacks: Sequence[postback_pb2.PostbackJob],
    record_time: int,
) -> store_pb.Outcome:
    """An outcomes log entry (its cursor is set by the backend that reads it)."""
    return store_pb.Outcome(
        decision=decision, postbacks=postbacks, record_time=micros_to_ts(record_time)
    )


def decision_outcome_bytes(
    decision: bytes, postbacks: Sequence[postback_pb2.PostbackJob], record_time: int
) -> bytes:
    """:func:`decision_outcome` serialized, from the decision already
    serialized (a message's encoding followed by a field's is the message
    with that field: the decision is not copied or encoded again)."""
    rest = store_pb.Outcome(postbacks=postbacks, record_time=micros_to_ts(record_time))
    return rest.SerializeToString() + _DECISION_TAG + _varint(len(decision)) + decision


_DECISION_TAG = bytes([(2 << 3) | 2])
"""``Outcome.decision`` (field 2), length-delimited."""


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def event_outcome(
    event: install_pb2.InAppEvent,
    attribution: decision_pb2.EventAttribution,
    postbacks: Sequence[postback_pb2.PostbackJob],
    record_time: int,
) -> store_pb.Outcome:
    """The log entry of an event's attribution, with what the feed and the
    reports need of the event itself (its install, name, revenue, time)."""
    logged = decision_pb2.EventAttribution()
    logged.CopyFrom(attribution)
    logged.install_id = event.install_id
    logged.name = event.name
    logged.revenue = event.revenue
    logged.currency = event.currency
    logged.occurred_at.CopyFrom(event.occurred_at)
    return store_pb.Outcome(
        event=logged, postbacks=postbacks, record_time=micros_to_ts(record_time)
    )


def touches_outcome(touches: Sequence[touch_pb2.Touch], record_time: int) -> store_pb.Outcome:
    """The log entry of touches stored by one write: what the reports count
    (type, partner, campaign, time), no device or network identifiers."""
    return store_pb.Outcome(
        touches=store_pb.StoredTouches(
            touches=[
                store_pb.StoredTouch(
                    click_id=t.click_id,
                    type=t.type,
                    media_source=t.media_source,
                    campaign=t.campaign,
                    engaged_at=t.engaged_at,
                )
                for t in touches
            ]
        ),
        record_time=micros_to_ts(record_time),
    )


def page_token(at: int, decision_id: str) -> str:
    """The opaque token of the page after the decision (``at``, ``decision_id``)."""
    raw = f"{at}:{decision_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def parse_page_token(token: str) -> tuple[int, str] | None:
    """(decided_at, decision_id) of the last decision of the previous page;
    None for the first page. InvalidArgument for a token not handed out."""
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        at, _, decision_id = raw.partition(":")
        if decision_id and at.isdigit():
            return int(at), decision_id
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    v = Violations()
    v.add("page_token", "is not a token this service handed out")
    v.raise_if_any()
    raise AssertionError  # unreachable


def bad_cursor() -> None:
    v = Violations()
    v.add("after_cursor", "is not a cursor this service handed out")
    v.raise_if_any()


class StoreBackend(Protocol):
    """What the store service needs from a database."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def healthy(self) -> bool:
        """True when the database answers."""
        ...

    async def put_touches(self, touches: Sequence[store_pb.IndexedTouch]) -> int: ...

    async def find_touches(
        self, app_id: str, keys: Sequence[str], click_ids: Sequence[str], after: int, before: int
    ) -> list[touch_pb2.Touch]: ...

    async def gather_install_facts(self, q: InstallQuery) -> InstallFacts:
        """The install id's record if it was decided before; else the
        candidate touches and the device's prior installs, newest first
        (a backend may leave ``existing`` to its create-if-absent)."""
        ...

    async def create_install_record(
        self, record: store_pb.InstallRecord, postbacks: Sequence[postback_pb2.PostbackJob] = ()
    ) -> tuple[bool, store_pb.InstallRecord]:
        """Create unless the install id exists. A created record appends its
        decision, with ``postbacks``, to the outcomes log in the same write;
        a not-created one appends nothing, except that a create that finds
        its own decision stored (a retry whose first answer was lost)
        re-appends it idempotently (the log keeps one entry)."""
        ...

    async def get_install_record(
        self, app_id: str, install_id: str
    ) -> store_pb.InstallRecord | None: ...

    async def record_open_decision(
        self,
        open_: install_pb2.Open,
        decision: decision_pb2.Decision,
        postbacks: Sequence[postback_pb2.PostbackJob] = (),
        explanation: bytes | None = None,
    ) -> store_pb.InstallRecord | None:
        """Record an open's decision (every kind is appended to the outcomes
        log; a re-engagement also becomes the install's latest) and its
        explanation (with the decision's index row); None, and nothing
        recorded, when the install is unknown."""
        ...

    async def get_open_explanation(self, app_id: str, decision_id: str) -> bytes | None:
        """The explanation recorded with an open's decision (an install's is
        in its record)."""
        ...

    async def put_event(
        self,
        event: install_pb2.InAppEvent,
        attribution: decision_pb2.EventAttribution,
        postbacks: Sequence[postback_pb2.PostbackJob] = (),
    ) -> tuple[bool, decision_pb2.EventAttribution]:
        """Store unless the event id exists; a stored event appends its
        attribution to the outcomes log."""
        ...

    async def read_outcomes(
        self, app_id: str, after_cursor: str, limit: int, rewind: int = 0
    ) -> tuple[list[store_pb.Outcome], str]:
        """Up to ``limit`` entries of the app's outcomes log after
        ``after_cursor`` (empty: the oldest kept), in log order, and the
        cursor to read on from (``after_cursor`` when there are none).
        ``rewind`` (microseconds): start that much earlier where entries can
        land behind a cursor (Cassandra); ignored where they cannot."""
        ...

    async def get_decision(self, app_id: str, decision_id: str) -> decision_pb2.Decision | None: ...

    async def list_decisions(
        self, app_id: str, which: DecisionFilter, page_size: int, page_token: str
    ) -> tuple[list[decision_pb2.Decision], str]:
        """Decisions newest first (decided_at, then decision id, descending),
        and the next page's token (empty on the last page)."""
        ...

    async def create_app(self, app: app_pb2.App) -> bool:
        """False when the app exists already."""
        ...

    async def get_app(self, app_id: str) -> app_pb2.App | None: ...

    async def list_apps(self, after_app_id: str, limit: int) -> list[str]:
        """App ids after ``after_app_id`` (the last of the previous page), in
        the backend's own stable order; at most ``limit``."""
        ...

    async def replace_app(self, app: app_pb2.App, expected_version: int) -> bool:
        """False when the stored version is not ``expected_version``."""
        ...

    async def erase_devices(
        self, app_id: str, keys: Sequence[str], install_ids: Sequence[str], click_ids: Sequence[str]
    ) -> Erased:
        """Delete the app's records of the devices ``keys`` name (install
        records found by them add their own identifiers' keys), and those of
        ``install_ids`` and ``click_ids``: touches, install records, their
        open decisions and events, with every index row; their outcomes log
        entries are replaced by :func:`~.erasure.redacted_outcome`."""
        ...

    async def device_records(self, app_id: str, keys: Sequence[str]) -> store_pb.DeviceRecords:
        """Every stored record of the devices ``keys`` name (found as
        :meth:`erase_devices` finds them)."""
        ...

    async def put_erasure(self, erasure: erasure_pb2.StoredErasure) -> None: ...

    async def get_erasure(self, erasure_id: str) -> erasure_pb2.StoredErasure | None: ...

    async def pending_erasures(self, limit: int) -> list[erasure_pb2.Erasure]:
        """Erasure requests not completed (without their keys)."""
        ...

    async def put_link(self, link: link_pb2.Link, create: bool) -> bool:
        """Store a link; with ``create``, False (and nothing written) when
        its code exists already."""
        ...

    async def get_link(self, code: str) -> link_pb2.Link | None: ...

    async def list_links(self, app_id: str, after_code: str, limit: int) -> list[link_pb2.Link]:
        """The app's links with codes after ``after_code``, by code."""
        ...
