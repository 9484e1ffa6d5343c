"""What every service does with a touch, install, open or event it accepts:
validate it whole (every bad field named) and fill the defaults the suite
relies on (ids, times). The same functions run wherever a message enters,
in process: the gateway, ingestion and the decider each validate what they
are sent, and a validation costs far less than a hop.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any

from lookback.api.types.v1 import install_pb2, touch_pb2
from lookback.core.clock import now_micros
from lookback.core.convert import micros_to_ts
from lookback.core.errors import Violations
from lookback.core.validation import (
    MAX_BATCH,
    check_event,
    check_install,
    check_open,
    check_touch,
)
from lookback.domain.model import Micros


def new_id() -> str:
    return uuid.uuid4().hex


def _fill_touch(touch: touch_pb2.Touch, now: Micros) -> None:
    if not touch.click_id:
        touch.click_id = new_id()
    if not touch.HasField("engaged_at"):
        touch.engaged_at.CopyFrom(micros_to_ts(now))
    touch.received_at.CopyFrom(micros_to_ts(now))


def prepare_touch(touch: touch_pb2.Touch, prefix: str = "touch.") -> None:
    """Validate ``touch`` and fill its click id, engagement and receipt times."""
    now = now_micros()
    v = Violations(prefix=prefix)
    check_touch(v, touch, now)
    v.raise_if_any()
    _fill_touch(touch, now)


def prepare_touches(touches: Sequence[touch_pb2.Touch]) -> None:
    """Validate a batch whole (nothing of it is stored unless all of it is
    good), then fill each touch's defaults."""
    v = Violations()
    if len(touches) > MAX_BATCH:
        v.add("touches", f"at most {MAX_BATCH} per call")
        v.raise_if_any()
    now = now_micros()
    for i, touch in enumerate(touches):
        item = Violations(prefix=f"touches[{i}].")
        check_touch(item, touch, now)
        v.items += item.items
    v.raise_if_any()
    for touch in touches:
        _fill_touch(touch, now)


def _prepare(
    message: Any, check: Callable[[Violations, Any, Micros], None], prefix: str, time_field: str
) -> None:
    """Validate ``message`` whole; it happened now unless ``time_field`` says when."""
    now = now_micros()
    v = Violations(prefix=prefix)
    check(v, message, now)
    v.raise_if_any()
    if not message.HasField(time_field):
        getattr(message, time_field).CopyFrom(micros_to_ts(now))


def prepare_install(install: install_pb2.Install) -> None:
    """Validate an install report; it happened now unless it says when."""
    _prepare(install, check_install, "install.", "installed_at")


def prepare_open(open_: install_pb2.Open) -> None:
    """Validate an open report; it happened now unless it says when."""
    _prepare(open_, check_open, "open.", "opened_at")


def prepare_event(event: install_pb2.InAppEvent) -> None:
    """Validate an in-app event; fill its id and time when missing."""
    _prepare(event, check_event, "event.", "occurred_at")
    if not event.event_id:
        event.event_id = new_id()
