"""The dispatcher's telemetry: delivery outcomes and delays by partner,
queue depth, and each lane's depth, deliveries in flight and circuit."""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterable, Mapping
from typing import Protocol

from opentelemetry.metrics import CallbackOptions, Observation

from lookback.core import telemetry
from lookback.postback.lanes import OPEN, Lane, split_lane


class _Watched(Protocol):
    @property
    def depth(self) -> int: ...

    @property
    def lanes(self) -> Mapping[str, Lane]: ...


meter = telemetry.meter("lookback.postback")
outcomes = meter.create_counter(
    "lookback.postback.outcomes",
    description="Delivery attempts by partner and outcome (delivered, retry, dead).",
)
delay = meter.create_histogram(
    "lookback.postback.delay",
    unit="s",
    description="From a job's creation (the decision) to its delivery, by partner.",
)
_dispatchers: weakref.WeakSet[_Watched] = weakref.WeakSet()


def _depths(options: CallbackOptions) -> Iterable[Observation]:
    for d in list(_dispatchers):
        yield Observation(d.depth)


def _attributes(name: str) -> dict[str, str]:
    partner, host = split_lane(name)
    return {"partner": partner, "server.address": host}


def _lane_values(value: str) -> object:
    def observe(options: CallbackOptions) -> Iterable[Observation]:
        now = time.time()
        for d in list(_dispatchers):
            for name, lane in list(d.lanes.items()):
                if value == "queued":
                    n = lane.queued
                elif value == "in_flight":
                    n = lane.in_flight
                else:
                    n = 1 if lane.state(now) == OPEN else 0
                yield Observation(n, _attributes(name))

    return observe


meter.create_observable_gauge(
    "lookback.postback.queue.depth",
    callbacks=[_depths],
    description="Postback jobs not yet delivered or dead.",
)
meter.create_observable_gauge(
    "lookback.postback.lane.queued",
    callbacks=[_lane_values("queued")],  # type: ignore[list-item]
    description="A lane's jobs not yet delivered or dead (due, in flight or waiting to retry).",
)
meter.create_observable_gauge(
    "lookback.postback.lane.in_flight",
    callbacks=[_lane_values("in_flight")],  # type: ignore[list-item]
    description="A lane's deliveries in flight on this dispatcher.",
)
meter.create_observable_gauge(
    "lookback.postback.lane.circuit_open",
    callbacks=[_lane_values("circuit")],  # type: ignore[list-item]
    description="1 while a lane's circuit is open (its jobs wait), else 0.",
)


def watch(dispatcher: _Watched) -> None:
    """Report this dispatcher's queue depth and lanes."""
    _dispatchers.add(dispatcher)
