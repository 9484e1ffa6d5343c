"""The store's contract, kept by both backends (embedded SQLite, Cassandra).

Records are protobuf messages stored whole, indexed by the match keys the
caller derived. Every write is durable before the call returns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from lookback.api.store.v1 import touchpoint_store_service_pb2 as store_pb
from lookback.api.types.v1 import app_pb2, decision_pb2, install_pb2, touch_pb2
from lookback.domain.durations import DAY, HOUR, MONTH

# Retention from each record's own time (docs/attribution-rules.md, "Retention"):
# the longest window a record could ever count in, whatever the settings,
# plus a day's margin for reports that arrive late (an offline device sends
# its first launch when it comes back; a replayed timeline arrives at once).
LATE_REPORT_MARGIN = 1 * DAY
CLICK_RETENTION = 30 * DAY + LATE_REPORT_MARGIN
IMPRESSION_RETENTION = 24 * HOUR + LATE_REPORT_MARGIN
INSTALL_RETENTION = 24 * MONTH + LATE_REPORT_MARGIN
EVENT_RETENTION = 24 * MONTH + LATE_REPORT_MARGIN


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
        self, record: store_pb.InstallRecord
    ) -> tuple[bool, store_pb.InstallRecord]: ...

    async def get_install_record(
        self, app_id: str, install_id: str
    ) -> store_pb.InstallRecord | None: ...

    async def record_open_decision(
        self, open_: install_pb2.Open, decision: decision_pb2.Decision
    ) -> store_pb.InstallRecord | None: ...

    async def put_event(
        self, event: install_pb2.InAppEvent, attribution: decision_pb2.EventAttribution
    ) -> tuple[bool, decision_pb2.EventAttribution]: ...

    async def create_app(self, app: app_pb2.App) -> bool:
        """False when the app exists already."""
        ...

    async def get_app(self, app_id: str) -> app_pb2.App | None: ...

    async def replace_app(self, app: app_pb2.App, expected_version: int) -> bool:
        """False when the stored version is not ``expected_version``."""
        ...
