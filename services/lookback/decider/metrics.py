"""The decider's telemetry: decision latency, cache hit ratios, and the
decision on the span (kind, method, media source)."""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import TYPE_CHECKING

from opentelemetry import trace
from opentelemetry.metrics import CallbackOptions, Observation

from lookback.api.types.v1 import decision_pb2
from lookback.core import telemetry

if TYPE_CHECKING:
    from lookback.decider.service import Decider

_meter = telemetry.meter("lookback.decider")
_deciders: weakref.WeakSet[Decider] = weakref.WeakSet()

decision_duration = _meter.create_histogram(
    "lookback.decider.decision.duration",
    unit="s",
    description="Time to decide, from the request arriving to the answer (by call, kind, method).",
)


def _hit_ratios(options: CallbackOptions) -> Iterable[Observation]:
    for decider in list(_deciders):
        yield Observation(decider.settings_cache.hit_ratio, {"cache": "settings"})
        yield Observation(decider.install_cache.hit_ratio, {"cache": "install"})


_meter.create_observable_gauge(
    "lookback.decider.cache.hit_ratio",
    callbacks=[_hit_ratios],
    description="Hits over lookups since start, per in-process LRU cache.",
)


def watch(decider: Decider) -> None:
    """Report this decider's caches."""
    _deciders.add(decider)


def decided(call: str, decision: decision_pb2.Decision, seconds: float) -> None:
    """Record one decision: on the current span, and in the latency histogram
    (nothing to do while telemetry is off: no provider would take it)."""
    if not telemetry.enabled():
        return
    kind = decision_pb2.DecisionKind.Name(decision.kind).removeprefix("DECISION_KIND_").lower()
    method = (
        decision_pb2.AttributionMethod.Name(decision.method)
        .removeprefix("ATTRIBUTION_METHOD_")
        .lower()
        .replace("unspecified", "none")
    )
    trace.get_current_span().set_attributes(
        {
            "lookback.app_id": decision.app_id,
            "lookback.decision.kind": kind,
            "lookback.decision.method": method,
            "lookback.decision.media_source": decision.media_source,
            "lookback.decision.counted": decision.counted,
        }
    )
    decision_duration.record(seconds, {"call": call, "kind": kind, "method": method})
