"""The dispatcher's telemetry: delivery outcomes by partner, queue depth."""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import Protocol

from opentelemetry.metrics import CallbackOptions, Observation

from lookback.core import telemetry


class _HasDepth(Protocol):
    depth: int


meter = telemetry.meter("lookback.postback")
outcomes = meter.create_counter(
    "lookback.postback.outcomes",
    description="Delivery attempts by partner and outcome (delivered, retry, dead).",
)
_queues: weakref.WeakSet[_HasDepth] = weakref.WeakSet()


def _depths(options: CallbackOptions) -> Iterable[Observation]:
    for q in list(_queues):
        yield Observation(q.depth)


meter.create_observable_gauge(
    "lookback.postback.queue.depth",
    callbacks=[_depths],
    description="Postback jobs not yet delivered or dead.",
)


def watch(dispatcher: _HasDepth) -> None:
    """Report this dispatcher's queue depth."""
    _queues.add(dispatcher)
