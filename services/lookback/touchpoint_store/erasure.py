"""What both backends share to erase and to answer access requests
(docs/privacy.md): the keys a stored record is indexed by, and the outcomes
log entry that an erasure leaves behind for the reports.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from lookback.api.store.v1 import touchpoint_store_service_pb2 as store_pb
from lookback.api.types.v1 import decision_pb2, erasure_pb2, touch_pb2
from lookback.core import convert
from lookback.domain import devices

OPEN_ITEM = "d:"
"""``install_items`` entry of an open's decision: ``d:<decision id>``."""
EVENT_ITEM = "e:"
"""``install_items`` entry of an event: ``e:<event id>``."""
OPEN_KINDS = (decision_pb2.DECISION_KIND_REENGAGEMENT, decision_pb2.DECISION_KIND_NONE)
"""The kinds of an open's decision (an install's decision is in its record)."""


def record_keys(record: store_pb.InstallRecord) -> set[str]:
    """The keys an install record is indexed by, and every key of its own
    identifiers (so that erasing a device by one identifier also finds the
    touches stored under its others, and under the other hash)."""
    device = convert.device(record.install.device)
    return set(record.match_keys) | devices.erasure_keys(device)


def touch_keys(touch: touch_pb2.Touch) -> set[str]:
    """Every key a stored touch is indexed by (the store derives them itself
    when it writes the touch: see the servicer's PutTouches)."""
    return set(devices.touch_match_keys(convert.device(touch.device), touch.ip))


def redacted_decision(d: decision_pb2.Decision) -> decision_pb2.Decision:
    """What the reports count of a decision, and nothing that leads back to
    the device: no install id, no click ids (the rejected touches keep their
    partner and reason)."""
    out = decision_pb2.Decision()
    out.CopyFrom(d)
    for name in ("install_id", "click_id", "contributors", "unanswered_srns"):
        out.ClearField(name)  # type: ignore[arg-type]
    for rejected in out.rejected:
        rejected.ClearField("click_id")
    return out


def redacted_outcome(outcome: store_pb.Outcome) -> store_pb.Outcome:
    """An outcomes log entry of an erased decision or event, as the erasure
    leaves it: the counts the reports need (its source id names it, so a
    report that counted it already does not count it twice), no install or
    click ids and no postback jobs (they carry identifiers; jobs not yet
    queued from it never will be)."""
    out = store_pb.Outcome()
    out.CopyFrom(outcome)
    out.ClearField("postbacks")
    out.ClearField("cursor")
    which = out.WhichOneof("outcome")
    if which == "decision":
        out.decision.CopyFrom(redacted_decision(out.decision))
    elif which == "event":
        out.event.ClearField("install_id")
    return out


@dataclass
class Erased:
    """What one erasure pass removed."""

    install_ids: set[str] = field(default_factory=set)
    click_ids: set[str] = field(default_factory=set)
    decision_ids: set[str] = field(default_factory=set)
    event_ids: set[str] = field(default_factory=set)
    job_ids: set[str] = field(default_factory=set)

    def jobs_of(self, outcomes: Iterable[store_pb.Outcome]) -> None:
        self.job_ids.update(j.job_id for o in outcomes for j in o.postbacks)

    def to_proto(self) -> store_pb.EraseDevicesResponse:
        return store_pb.EraseDevicesResponse(
            install_ids=sorted(self.install_ids),
            click_ids=sorted(self.click_ids),
            decision_ids=sorted(self.decision_ids),
            event_ids=sorted(self.event_ids),
            job_ids=sorted(self.job_ids),
            counts=erasure_pb2.ErasureCounts(
                touches=len(self.click_ids),
                installs=len(self.install_ids),
                decisions=len(self.decision_ids),
                events=len(self.event_ids),
            ),
        )


def records_of(
    touches: Iterable[touch_pb2.Touch], records: Iterable[store_pb.InstallRecord]
) -> store_pb.DeviceRecords:
    """An access answer's touches and installs, oldest first (the backend
    adds the opens' decisions and the events)."""
    return store_pb.DeviceRecords(
        touches=sorted(touches, key=lambda t: (convert.ts_to_micros(t.engaged_at), t.click_id)),
        installs=sorted(
            records,
            key=lambda r: (convert.ts_to_micros(r.install.installed_at), r.install.install_id),
        ),
    )
